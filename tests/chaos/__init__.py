"""A seeded adversarial run: valid orders and new versions mixed with hostile messages, on a
3-partition topic with 2 workers, while a worker is killed and PostgreSQL and the broker are
restarted; then every message is accounted for. `python -m tests.chaos --help`."""

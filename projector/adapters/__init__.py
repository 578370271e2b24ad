"""The projector's adapters: everything that talks to Faust, Kafka or PostgreSQL.

faust         the Faust worker: the only module that imports faust
kafka         records of the orders topic looked up by offset, a whole topic scanned
topics        what the broker says of a topic (its id: which incarnation it is)
dead_letters  the dead-letter topic: sending letters once, reading them back
postgres      the read model: positions, versions, rows, history, notifications
rows          an order's rows in the normalized tables
"""

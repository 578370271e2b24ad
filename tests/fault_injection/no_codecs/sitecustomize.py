"""On PYTHONPATH of a worker under test: a machine without the codec library (cramjam), where
aiokafka can read gzip batches only. Python imports this module at start-up."""

import sys

sys.modules["cramjam"] = None  # type: ignore[assignment]  # `import cramjam` now fails

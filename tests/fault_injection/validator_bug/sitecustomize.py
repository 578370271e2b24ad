"""On PYTHONPATH of a worker under test: a validator regression, a KeyError nobody anticipated on
any order whose customer_id is "trigger-the-bug". Python imports this module at start-up."""

from projector.core import validate

_check = validate.Validator.check


def _buggy(self, raw, key):  # type: ignore[no-untyped-def]
    if raw and b'"trigger-the-bug"' in raw:
        raise KeyError("payment")
    return _check(self, raw, key)


validate.Validator.check = _buggy  # type: ignore[method-assign]

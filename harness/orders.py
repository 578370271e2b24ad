"""The reference order (examples/order.json), the one every hand-made order starts from."""

from __future__ import annotations

import json

from harness import ROOT

REFERENCE_ORDER_PATH = ROOT / "examples" / "order.json"


def reference_order_bytes() -> bytes:
    return REFERENCE_ORDER_PATH.read_bytes()


def reference_order() -> dict:
    return json.loads(reference_order_bytes())

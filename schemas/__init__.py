"""The order event's JSON Schema (draft 2020-12), loaded from `order.schema.json` beside this file.

The schema is self-contained (no external `$ref`), so the API's OpenAPI document can embed it as is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("order.schema.json")

ORDER_SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))

ORDER_UID_PATTERN: str = ORDER_SCHEMA["properties"]["order_uid"]["pattern"]

# JSON Schema patterns are ECMA-262, where `$` is the end of the string; in Python `$` also
# matches before a trailing newline, so "abc\n" would slip through. `\Z` is the ECMA meaning.
ORDER_UID_RE: re.Pattern[str] = re.compile(ORDER_UID_PATTERN.removesuffix("$") + r"\Z")

__all__ = ["ORDER_SCHEMA", "ORDER_UID_PATTERN", "ORDER_UID_RE", "SCHEMA_PATH"]

"""Whether a record is a redrive this deployment made, and of what.

Headers are the producer's to set: any record can carry any header. A redrive claims two things
that change how its order is projected — which dead-lettered record it is (applied once however
often redriven) and which version it has (the original's, so that it never replaces a newer one).
So `python -m projector.redrive` signs both with HMAC-SHA256 under the deployment's redrive secret
(ORDERVIEW_REDRIVE_SECRET), over the record's key and value as well, and the projector takes the
claim only when the signature verifies. A record carrying any header of ours that does not verify
is dead-lettered as `forged_redrive`: authority is never taken on a producer's word.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from projector.core import versions
from projector.core.records import Record
from projector.core.versions import Version

REDRIVE_OF = "orderview.redrive.of"  # <orders topic>:<partition>:<offset> of the dead-lettered record
REDRIVE_VERSION = "orderview.redrive.version"  # <time>:<partition>:<offset>, the original's version
REDRIVE_SIGNATURE = "orderview.redrive.signature"  # hex HMAC-SHA256 of the above, the key and the value
# Redrives made before signatures carried this instead of REDRIVE_VERSION: unverifiable now.
UNSIGNED_EVENT = "orderview.redrive.event"
OURS = (REDRIVE_OF, REDRIVE_VERSION, REDRIVE_SIGNATURE, UNSIGNED_EVENT)


@dataclass(frozen=True, slots=True)
class Claim:
    """A verified redrive: of which dead-lettered record, with which version."""

    of: str
    version: Version


@dataclass(frozen=True, slots=True)
class Forged:
    """Headers of ours that do not verify; `why` says what is wrong."""

    why: str


def signature(secret: bytes, of: str, version: Version, key: bytes | None, value: bytes | None) -> str:
    message = b"\n".join(
        [
            of.encode(),
            versions.text(version).encode(),
            _digest(key),
            _digest(value),
        ]
    )
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def headers(secret: bytes, of: str, version: Version, key: bytes | None, value: bytes | None) -> list:
    """The headers a redrive of `of` carries."""
    return [
        (REDRIVE_OF, of.encode()),
        (REDRIVE_VERSION, versions.text(version).encode()),
        (REDRIVE_SIGNATURE, signature(secret, of, version, key, value).encode()),
    ]


def claim(record: Record, secret: bytes) -> Claim | Forged | None:
    """The redrive a record is, None when it carries no header of ours."""
    if not record.headers:  # most records: no need to look for each of ours
        return None
    found = {name: value for name in OURS if (value := record.header(name)) is not None}
    if not found:
        return None
    if UNSIGNED_EVENT in found:
        return Forged(f"header {UNSIGNED_EVENT} is an unsigned redrive claim; redrive the letter again")
    missing = [name for name in (REDRIVE_OF, REDRIVE_VERSION, REDRIVE_SIGNATURE) if name not in found]
    if missing:
        return Forged(f"redrive header {missing[0]} is missing")
    try:
        of = found[REDRIVE_OF].decode()
        topic, partition, offset = of.rsplit(":", 2)
        if not topic or int(partition) < 0 or int(offset) < 0:
            raise ValueError(of)
        version = versions.parse(found[REDRIVE_VERSION].decode())
    except ValueError:  # UnicodeDecodeError is one
        return Forged("redrive headers are not <topic>:<partition>:<offset> and <time>:<partition>:<offset>")
    expected = signature(secret, of, version, record.key, record.value)
    if not hmac.compare_digest(found[REDRIVE_SIGNATURE], expected.encode()):
        return Forged(
            "the redrive signature does not verify with this deployment's redrive secret: the record "
            "was not made by python -m projector.redrive here, or was changed since"
        )
    return Claim(of, version)


def _digest(part: bytes | None) -> bytes:
    return b"-" if part is None else hashlib.sha256(part).hexdigest().encode()

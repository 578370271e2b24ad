"""Authority only where it was given: a redrive's claims are taken when this deployment signed
them (projector/core/redrives.py), and a record that claims them otherwise is dead-lettered."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from harness.orders import reference_order_bytes
from projector.core import redrives
from projector.core.records import Record
from projector.core.redrives import REDRIVE_OF, REDRIVE_SIGNATURE, REDRIVE_VERSION, Claim, Forged
from projector.core.verdicts import Judge, Order, Rejected
from projector.core.versions import Version

SECRET = b"the deployment's secret"
UID = b"b563feb7b2b84b6test"
ORIGINAL = Version(1_800_000_000_000, 0, 7)


def redrive(value: bytes = reference_order_bytes(), secret: bytes = SECRET, **changes: bytes) -> Record:
    headers = dict(redrives.headers(secret, "orders:0:7", ORIGINAL, UID, value))
    headers.update(changes)
    return Record(2, 500, UID, value, 1_900_000_000_000, headers=tuple(headers.items()))


def test_a_signed_redrive_is_taken_with_the_version_of_its_original():
    assert redrives.claim(redrive(), SECRET) == Claim("orders:0:7", ORIGINAL)
    verdict = Judge(1024 * 1024, SECRET)(redrive())
    assert isinstance(verdict, Order) and verdict.claim == Claim("orders:0:7", ORIGINAL)


def test_a_record_without_our_headers_claims_nothing():
    assert redrives.claim(Record(0, 0, UID, b"{}", 1, headers=(("trace", b"x"),)), SECRET) is None


def test_a_producer_that_sets_the_headers_without_the_secret_cannot_freeze_an_order():
    forged = redrive(secret=b"guessed")
    claim = redrives.claim(forged, SECRET)
    assert isinstance(claim, Forged) and "does not verify" in claim.why
    verdict = Judge(1024 * 1024, SECRET)(forged)
    assert isinstance(verdict, Rejected) and verdict.reason == "forged_redrive"


def test_a_signed_claim_moved_to_another_value_does_not_verify():
    moved = redrive(value=reference_order_bytes().replace(b"Kiryat", b"Tel Aviv"))
    signed = dict(redrive().headers)
    moved = Record(2, 500, UID, moved.value, headers=tuple(signed.items()))
    assert isinstance(redrives.claim(moved, SECRET), Forged)


@given(
    st.sampled_from([REDRIVE_OF, REDRIVE_VERSION, REDRIVE_SIGNATURE, redrives.UNSIGNED_EVENT]),
    st.binary(max_size=60),
)
def test_any_tampered_or_partial_claim_is_forged_never_taken(name, value):
    tampered = redrive(**{name: value})
    claim = redrives.claim(tampered, SECRET)
    assert isinstance(claim, Forged) or claim == Claim("orders:0:7", ORIGINAL)
    if name == redrives.UNSIGNED_EVENT:
        assert isinstance(claim, Forged), "the unsigned header of older redrives grants nothing"


def test_the_header_that_froze_orders_before_grants_nothing_now():
    frozen = Record(
        0,
        3,
        UID,
        reference_order_bytes(),
        1,
        headers=((redrives.UNSIGNED_EVENT, b"0:9000000000000000000:99999999999999"),),
    )
    verdict = Judge(1024 * 1024, SECRET)(frozen)
    assert isinstance(verdict, Rejected) and verdict.reason == "forged_redrive"

"""The memory of unknown order_uids: bounded, brief, and trusted only while LISTEN is up."""

from api.missing import MissingOrders


def listening(max_entries: int = 3, ttl_s: float = 60.0) -> MissingOrders:
    missing = MissingOrders(max_entries, ttl_s)
    missing.trust(True)
    return missing


def test_it_keeps_the_most_recent_ids_up_to_its_bound() -> None:
    missing = listening(max_entries=3)
    missing.add(["a", "b", "c", "d"], missing.epoch)
    assert [uid for uid in "abcd" if missing.known(uid)] == ["b", "c", "d"]


def test_an_expired_id_is_asked_again() -> None:
    missing = listening(ttl_s=-1.0)
    missing.add(["a"], missing.epoch)
    assert not missing.known("a") and len(missing) == 0


def test_a_notify_forgets_an_id() -> None:
    missing = listening()
    missing.add(["a", "b"], missing.epoch)
    missing.forget(["a"])
    assert (missing.known("a"), missing.known("b")) == (False, True)


def test_nothing_is_kept_without_listen_nor_from_a_lookup_older_than_the_last_change() -> None:
    missing = MissingOrders(10, 60.0)
    missing.add(["a"], missing.epoch)
    assert not missing.known("a")
    missing.trust(True)
    started = missing.epoch
    missing.trust(False)
    missing.trust(True)
    missing.add(["b"], started)
    assert not missing.known("b")
    missing.add(["c"], missing.epoch)
    missing.trust(False)
    assert not missing.known("c")

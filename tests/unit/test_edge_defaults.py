"""Safe by default at the edge: an API bound to loopback answers the loopback names only, one
bound elsewhere without an allow-list says so, and so does one that lets the null origin read."""

from __future__ import annotations

from dataclasses import replace

from api.edge import HostGuard, exposure_warning, null_origin_warning
from orderview.settings import Settings


def names(settings: Settings) -> set[str] | None:
    guard = HostGuard.from_settings(settings)
    return None if guard is None else set(guard.names)


def test_a_loopback_bind_answers_the_loopback_names_only_by_default() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        allowed = names(replace(Settings(), api_host=host))
        assert allowed is not None and {"localhost", "127.0.0.1", "::1"} <= allowed, host
        assert host.lower() in allowed
        assert "rebind.example" not in allowed
    assert exposure_warning(Settings()) is None


def test_a_list_replaces_the_default_and_a_star_answers_any() -> None:
    assert names(replace(Settings(), api_allowed_hosts="orders.example.com")) == {"orders.example.com"}
    assert names(replace(Settings(), api_allowed_hosts="*")) is None


def test_a_public_bind_without_a_list_answers_any_and_says_so_in_one_sentence() -> None:
    exposed = replace(Settings(), api_host="0.0.0.0")
    assert names(exposed) is None
    warning = exposure_warning(exposed)
    assert warning is not None and warning.count(". ") == 0 and "ORDERVIEW_API_ALLOWED_HOSTS" in warning
    assert exposure_warning(replace(exposed, api_allowed_hosts="orders.example.com")) is None


def test_allowing_the_null_origin_says_in_one_sentence_that_any_sandboxed_page_can_read_orders() -> None:
    for origins in ("null", "https://shop.example.com, null"):
        warning = null_origin_warning(replace(Settings(), api_cors_origins=origins))
        assert warning is not None and warning.count(". ") == 0
        assert "ORDERVIEW_API_CORS_ORIGINS" in warning and "sandboxed iframe" in warning
    for origins in ("", "https://shop.example.com", "*", "https://null.example.com"):
        assert null_origin_warning(replace(Settings(), api_cors_origins=origins)) is None

"""Which webhook URLs the streamer will post to (literal addresses: no DNS needed)."""

from __future__ import annotations

import pytest

from streamer.webhooks import refused_target


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "https://10.0.0.8:8443/hook",
        "http://172.16.5.4/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9000/hook",
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
    ],
)
def test_addresses_inside_a_network_are_refused(url: str) -> None:
    reason = refused_target(url)
    assert reason is not None
    assert "not a public address" in reason


@pytest.mark.parametrize("url", ["https://8.8.8.8/hook", "http://[2001:4860:4860::8888]/x"])
def test_public_addresses_are_allowed(url: str) -> None:
    assert refused_target(url) is None


def test_a_name_that_does_not_resolve_is_refused() -> None:
    reason = refused_target("https://no-such-host.invalid/hook")
    assert reason is not None
    assert "does not resolve" in reason

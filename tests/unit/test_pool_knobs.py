"""A pool's knobs through `caslb check`: retries, response timeout, re-encryption
names, PROXY protocol, transparent source, check jitter; bad values by key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lb.cli import app
from lb.retry import RetryPolicy, RetryTo

POOL = """\
[servers]
cas1 = {{ address = "127.0.0.11:443", fqdn = "cas1.lab.local" }}
cas2 = {{ address = "127.0.0.12:443", fqdn = "cas2.lab.local" }}

[frontends]
https = {{ mode = "http", bind = "127.0.0.1:8443", default_pool = "ews" }}

[pools.ews]
protocol = "ews"
servers = ["cas1", "cas2"]
{extra}
"""


def _check(tmp_path: Path, extra: str) -> tuple[int, str, str]:
    file = tmp_path / "caslb.toml"
    file.write_text(POOL.format(extra=extra))
    result = CliRunner().invoke(app, ["check", str(file)])
    return result.exit_code, result.stdout, result.stderr


def test_every_knob_shows_in_the_plan(tmp_path: Path) -> None:
    code, out, err = _check(tmp_path, """\
retries = 2
retry_to = "same"
response_timeout = "90s"
proxy_protocol = 2
transparent = true
tls = { sni = "mail.lab.local", verify_name = "mail.lab.local" }
check = { jitter = 0.05 }
""")
    assert code == 0, err
    assert "2 retries on same server" in out
    assert "response ≤ 1m30s" in out or "response ≤ 90s" in out
    assert "re-encrypt (SNI mail.lab.local, verify mail.lab.local)" in out
    assert "PROXY v2" in out
    assert "from the client's address" in out
    assert "jitter ±5%" in out


def test_the_defaults_show_too(tmp_path: Path) -> None:
    code, out, err = _check(tmp_path, "tls = true")
    assert code == 0, err
    assert "3 retries on another server" in out
    assert "re-encrypt (SNI fqdn, verify the SNI name)" in out
    code, out, err = _check(tmp_path, 'retry_to = "off"\ntls = { sni = false, verify = false }')
    assert "no retry" in out and "re-encrypt (SNI none, no verify)" in out


def test_first_response_timeout_behind_http_is_a_warning(tmp_path: Path) -> None:
    code, out, err = _check(tmp_path, 'first_response_timeout = "3s"')
    assert code == 0, err
    assert "pools.ews.first_response_timeout: ignored behind an http frontend" in out + err


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ('retry_to = "elsewhere"', "pools.ews.retry_to"),
        ('response_timeout = "0s"', "pools.ews.response_timeout"),
        ("tls = { sni = 3 }", "pools.ews.tls.sni"),
        ('tls = { verify = false, verify_name = "x" }', "pools.ews.tls.verify_name"),
        ("transparent = 1", "pools.ews.transparent"),
        ("check = { jitter = 1 }", "pools.ews.check.jitter"),
        ("check = { jitter = -0.1 }", "pools.ews.check.jitter"),
    ],
)
def test_a_bad_knob_names_its_key_path_and_exits_2(tmp_path: Path, extra: str, path: str) -> None:
    code, out, err = _check(tmp_path, extra)
    assert code == 2
    assert path in out + err


@pytest.mark.parametrize(
    ("policy", "tried", "excluded", "attempts"),
    [
        (RetryPolicy(2, RetryTo.ANOTHER), ["a"], {"a"}, 3),
        (RetryPolicy(2, RetryTo.ANOTHER), ["a", "b"], {"a", "b"}, 3),
        (RetryPolicy(2, RetryTo.SAME), ["a"], {"b", "c"}, 3),
        (RetryPolicy(2, RetryTo.OFF), [], set(), 1),
        (RetryPolicy(0, RetryTo.ANOTHER), [], set(), 1),
    ],
)
def test_retry_policy_says_where_the_next_attempt_goes(
    policy: RetryPolicy, tried: list[str], excluded: set[str], attempts: int
) -> None:
    assert policy.exclude(tried, ["a", "b", "c"]) == excluded
    assert policy.attempts == attempts

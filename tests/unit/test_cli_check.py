"""`caslb check` through typer's CliRunner: the plan, worst cases, warnings, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from typer.testing import CliRunner

from lb.cli import app

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "config").glob("*.toml"))

FARM = """\
[exchange]
namespace = "mail.lab.local"
mode = "{mode}"
bind = "127.0.0.1"
servers = [
  {{ name = "cas1", address = "127.0.0.11", fqdn = "cas1.lab.local" }},
  {{ name = "cas2", address = "127.0.0.12", fqdn = "cas2.lab.local" }},
]
protocols = ["owa", "ews", "imap"]
inter = "1s"
fastinter = "250ms"
fall = 2
timeout = "1s"
{extra}
"""
TLS = 'tls = { cert = "mail.pem", key = "mail.pem" }'


def _run(tmp_path: Path, text: str, *args: str) -> tuple[int, str, str]:
    file = tmp_path / "caslb.toml"
    file.write_text(text)
    result = CliRunner().invoke(app, ["check", str(file), *args])
    return result.exit_code, result.stdout, result.stderr


def test_plan_lists_frontends_pools_servers_and_checks(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, FARM.format(mode="l4-sni", extra=""), "--jitter", "0")
    assert code == 0, err
    assert "valid; 2 frontends, 3 pools, 2 servers" in out
    assert "  https  sni  127.0.0.1:443  idle 30m" in out
    assert "    ews.mail.lab.local → pool ews" in out
    assert "    other names → pool owa" in out
    assert "  imaps  tcp  127.0.0.1:993  idle 30m  → pool imap" in out
    assert "GET /EWS/healthcheck.htm (TLS, verify, body names the server), timeout 1s" in out
    assert "    servers  cas1  127.0.0.11:443  (cas1.lab.local)  weight 1" in out
    assert "             cas2  127.0.0.12:993  (cas2.lab.local)  weight 1" in out


def test_worst_case_times_follow_the_check_settings(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, FARM.format(mode="l7", extra=TLS), "--jitter", "0",
                        "--skip-files")
    assert code == 0
    # crash: inter + (fall-1) × fastinter = 1 + 0.25; black hole adds the 1 s timeout per check;
    # up: downinter + (rise-1) × fastinter + rise × timeout = 1 + 0.25 + 2
    assert "    down     ≤ 1.25s after a crash (refused/reset), ≤ 3.25s after a black hole" in out
    assert "    up       ≤ 3.25s after recovery, then slow start over 30s" in out
    code, out, _ = _run(tmp_path, FARM.format(mode="l7", extra=TLS), "--skip-files")
    assert "≤ 1.375s after a crash" in out and "(worst cases with 10% scheduling jitter)" in out


def test_l4_single_namespace_prints_its_blind_spot(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, FARM.format(mode="l4", extra=""))
    assert code == 0
    assert "frontends.https: blind spot (docs/exchange.md §3, scenario A)" in out
    assert "checks only" not in out and "probes only /owa/healthcheck.htm" in out
    for mode, extra in (("l4-sni", ""), ("l7", TLS)):
        _, out, _ = _run(tmp_path, FARM.format(mode=mode, extra=extra), "--skip-files")
        assert "blind spot" not in out


def test_leastconn_without_slow_start_is_a_warning(tmp_path: Path) -> None:
    write_pair(tmp_path, "mail.pem")
    code, out, err = _run(tmp_path, FARM.format(mode="l7", extra=TLS + '\nslowstart = "0s"'))
    assert code == 0, err
    assert "pools.owa: leastconn without slowstart" in out


def write_pair(folder: Path, name: str, ca: trustme.CA | None = None) -> trustme.CA:
    """A certificate chain and its key in one PEM file, as casfarm writes them."""
    ca = ca or trustme.CA()
    issued = ca.issue_cert("mail.lab.local")
    (folder / name).write_bytes(b"".join(b.bytes() for b in issued.cert_chain_pems)
                                + issued.private_key_pem.bytes())
    return ca


def _file_errors(tmp_path: Path, extra: str) -> tuple[int, list[str]]:
    code, out, err = _run(tmp_path, FARM.format(mode="l7", extra=extra))
    assert "Traceback" not in out + err
    return code, [line for line in err.splitlines() if line.startswith("error:")]


def test_a_missing_certificate_or_key_fails_naming_the_key_path(tmp_path: Path) -> None:
    code, errors = _file_errors(tmp_path, TLS)
    assert code == 2
    assert errors == [f"error: frontends.https.tls.cert: file '{tmp_path / 'mail.pem'}' "
                      "does not exist"]
    write_pair(tmp_path, "mail.pem")
    code, errors = _file_errors(tmp_path, 'tls = { cert = "mail.pem", key = "gone.key" }')
    assert (code, errors) == (2, [f"error: frontends.https.tls.key: file "
                                  f"'{tmp_path / 'gone.key'}' does not exist"])
    assert _file_errors(tmp_path, TLS) == (0, [])


def test_an_unreadable_certificate_fails(tmp_path: Path) -> None:
    (tmp_path / "mail.pem").mkdir()  # unreadable as a file even for root
    code, errors = _file_errors(tmp_path, TLS)
    assert code == 2 and errors[0].startswith("error: frontends.https.tls.cert: ")
    assert "is not a file" in errors[0]


def test_a_certificate_or_key_that_does_not_parse_fails(tmp_path: Path) -> None:
    (tmp_path / "mail.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    code, errors = _file_errors(tmp_path, TLS)
    assert code == 2 and errors == [
        f"error: frontends.https.tls.cert: '{tmp_path / 'mail.pem'}' does not hold a PEM "
        "certificate"]
    ca = write_pair(tmp_path, "mail.pem")
    ca.cert_pem.write_to_path(str(tmp_path / "cert-only.pem"))
    code, errors = _file_errors(tmp_path, 'tls = { cert = "mail.pem", key = "cert-only.pem" }')
    assert code == 2 and errors == [
        f"error: frontends.https.tls.key: '{tmp_path / 'cert-only.pem'}' does not hold a PEM "
        "private key"]


def test_a_key_that_does_not_match_its_certificate_fails(tmp_path: Path) -> None:
    ca = write_pair(tmp_path, "mail.pem")
    other = ca.issue_cert("other.lab.local")
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    code, errors = _file_errors(tmp_path, 'tls = { cert = "mail.pem", key = "other.key" }')
    assert code == 2 and errors == [
        f"error: frontends.https.tls.key: '{tmp_path / 'other.key'}' is not the key of "
        f"'{tmp_path / 'mail.pem'}'"]


def test_a_bad_ca_file_fails_naming_its_key_path(tmp_path: Path) -> None:
    write_pair(tmp_path, "mail.pem")
    code, errors = _file_errors(tmp_path, TLS + '\nca_file = "ca.pem"')
    assert code == 2
    assert f"error: pools.owa.check.ca_file: file '{tmp_path / 'ca.pem'}' does not exist" in errors
    assert f"error: pools.owa.tls.ca_file: file '{tmp_path / 'ca.pem'}' does not exist" in errors
    (tmp_path / "ca.pem").write_text("garbage\n")
    code, errors = _file_errors(tmp_path, TLS + '\nca_file = "ca.pem"')
    assert code == 2 and all("does not hold a PEM certificate" in e for e in errors)


def test_skip_files_checks_the_config_alone(tmp_path: Path) -> None:
    code, _, err = _run(tmp_path, FARM.format(mode="l7", extra=TLS), "--skip-files")
    assert code == 0, err


def test_bad_config_prints_every_error_and_exits_2(tmp_path: Path) -> None:
    text = FARM.format(mode="l4", extra='rise = "x"\n[admin]\nbind = "0.0.0.0:9090"\n')
    text = text.replace('fqdn = "cas2.lab.local"', 'fdqn = "cas2.lab.local"')
    code, out, err = _run(tmp_path, text)
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "error: exchange.servers[1].fqdn: is required",
        "error: exchange.servers[1].fdqn: unknown key",
        'error: exchange.rise: must be an integer from 1 to 100, got "x"',
        "error: admin.bind: binding 0.0.0.0 off loopback requires admin.token",
        f"{tmp_path / 'caslb.toml'}: 4 errors",
    ]


def test_unreadable_and_malformed_files_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["check", str(tmp_path / "absent.toml")])
    assert result.exit_code == 2 and "cannot read the config" in result.stderr
    code, _, err = _run(tmp_path, "[exchange\n")
    assert code == 2 and "not valid TOML" in err


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configs_are_valid(path: Path) -> None:
    # shipped configs name certificates that exist only once deployed (or the demo runs)
    result = CliRunner().invoke(app, ["check", str(path), "--skip-files"])
    assert result.exit_code == 0, result.stderr
    assert "valid;" in result.stdout


def test_shipped_configs_are_the_four_designs_and_the_lab_of_each() -> None:
    assert [p.name for p in SHIPPED] == [
        "l4-single-namespace.toml", "l4-sni.toml", "l7-single-namespace.toml",
        "lab-compare.toml", "lab-l4-sni.toml", "lab-l4.toml", "lab.toml",
    ]
    assert "BLIND SPOT" in (REPO / "config" / "l4-single-namespace.toml").read_text()


def test_check_is_listed_with_an_example() -> None:
    runner = CliRunner()
    assert "check" in runner.invoke(app, ["--help"]).stdout
    assert "caslb check config/" in runner.invoke(app, ["check", "--help"]).stdout


def test_l4_pools_show_their_first_response_timeout(tmp_path: Path) -> None:
    code, l4, _ = _run(tmp_path, FARM.format(mode="l4-sni", extra=""))
    assert code == 0 and "first response ≤ 1s else replay" in l4
    code, l7, _ = _run(tmp_path, FARM.format(mode="l7", extra=TLS), "--skip-files")
    ews_line = next(line for line in l7.splitlines() if line.strip().startswith("ews "))
    assert code == 0 and "first response" not in ews_line

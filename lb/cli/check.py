"""`caslb check CONFIG`: validate a config and print the plan it stands for.

The plan lists frontends → pools → servers and each pool's check, and for each
pool the worst-case time to mark a dead server DOWN (crashed: the check fails
at once on a refused connection; black-holed: it fails only at its timeout) and
a recovered one UP, from the same formulas as the state machine
(probes.state.worst_case_down / worst_case_up), stretched by the probe
scheduler's jitter. Warnings point at designs that validate but will hurt:
the single-namespace L4 blind spot, least-conn without slow start. A bad
config prints every error with its key path on stderr and exits 2; so does a
certificate, key or CA file that is missing, unreadable, does not parse, or a
key that does not match its certificate (lb/certfiles.py), because `caslb
run` would fail on it (systemd's `ExecStartPre=caslb check` relies on this).
`--skip-files` checks the config alone, before the files are deployed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lb.balancer import Balance
from lb.certfiles import FileProblem, ca_problem, certificate_problem
from lb.cli._app import app
from lb.cli._config import load_or_exit
from lb.config import CheckConfig, Config, FrontendConfig, Mode, PoolConfig, format_duration
from lb.config.model import UpstreamTlsConfig
from probes.catalog import PROTOCOLS, CheckKind
from probes.state import worst_case_down, worst_case_up

# The probe runner's default: each interval may stretch by up to this fraction.
DEFAULT_JITTER = 0.1


def _seconds(value: float) -> str:
    return format_duration(round(value, 3))


def _frontend_lines(fe: FrontendConfig) -> list[str]:
    head = f"  {fe.name}  {fe.mode.value}  {fe.host}:{fe.port}  idle {_seconds(fe.idle_timeout)}"
    if fe.mode is Mode.TCP:
        return [f"{head}  → pool {fe.pool}"]
    if fe.mode is Mode.HTTP:
        head += f"  {'TLS, ' + str(len(fe.tls)) + ' certificate(s)' if fe.tls else 'plain HTTP'}"
    lines = [head]
    lines += [f"    {name} → pool {pool}" for name, pool in fe.sni_map.items()]
    lines += [f"    {vdir} → pool {pool}" for vdir, pool in fe.routes.items()]
    other = "other names" if fe.mode is Mode.SNI else "other paths"
    lines.append(f"    {other} → {'pool ' + fe.default_pool if fe.default_pool else 'refused'}")
    return lines


def _describe_check(check: CheckConfig) -> list[str]:
    spec, t = check.spec, check.timing
    what = {
        CheckKind.HEALTHCHECK: f"GET {spec.path}",
        CheckKind.TCP: "connect",
    }.get(spec.kind, f"{spec.kind.value} dialogue")
    how = "TLS" if spec.tls else ("STARTTLS" if spec.starttls else "clear")
    extras = [how]
    if spec.tls or spec.starttls:
        extras.append("verify" if spec.verify else "no verify")
    if spec.expect_fqdn:
        extras.append("body names the server")
    if check.port is not None:
        extras.append(f"port {check.port}")
    fast, timeout = _seconds(t.fast), _seconds(t.timeout)
    jitter = "" if t.jitter is None else f", jitter ±{t.jitter:.0%}"
    return [
        f"    check    {spec.kind.value}: {what} ({', '.join(extras)}), timeout {timeout}",
        f"             inter {_seconds(t.inter)}, fastinter {fast}, downinter {_seconds(t.down)}, "
        f"rise {t.rise}, fall {t.fall}{jitter}",
    ]


def _detection_lines(pool: PoolConfig, jitter: float) -> list[str]:
    if pool.check is None:
        passive = "only live-traffic errors mark a server down" if pool.observe else (
            "nothing marks a server down")
        return [f"    down     no active check: {passive}"]
    t = pool.check.timing
    jitter = jitter if t.jitter is None else t.jitter
    crash = worst_case_down(t, fail_duration=0.0, jitter=jitter)
    hole = worst_case_down(t, jitter=jitter)
    up = worst_case_up(t, jitter=jitter)
    ramp = f", then slow start over {_seconds(pool.slowstart)}" if pool.slowstart else ""
    lines = [
        f"    down     ≤ {_seconds(crash)} after a crash (refused/reset), "
        f"≤ {_seconds(hole)} after a black hole",
        f"    up       ≤ {_seconds(up)} after recovery{ramp}",
    ]
    if pool.observe is not None:
        lines.append(f"    passive  {pool.observe.error_limit} consecutive connection errors → "
                     f"{pool.observe.on_error.value}")
    return lines


def _reencrypt(t: UpstreamTlsConfig) -> str:
    sni = "fqdn" if t.sni is True else (t.sni or "none")
    verify = f"verify {t.verify_name or 'the SNI name'}" if t.verify else "no verify"
    return f"re-encrypt (SNI {sni}, {verify})"


def _pool_lines(pool: PoolConfig, jitter: float, *, layer4: bool) -> list[str]:
    traits = [f"protocol {pool.protocol}" if pool.protocol else "no protocol",
              pool.balance.value]
    if pool.slowstart:
        traits.append(f"slow start {_seconds(pool.slowstart)}")
    traits.append(f"panic below {pool.panic_threshold:.0%} up" if pool.panic_threshold
                  else "fail closed")
    if pool.reset_on_down:
        traits.append("reset on down")
    traits.append(f"drain grace {_seconds(pool.drain_grace)}")
    if layer4 and pool.first_response_timeout is not None:
        # A silent server is abandoned and the client's first flight replayed elsewhere.
        traits.append(f"first response ≤ {_seconds(pool.first_response_timeout)} else replay")
    if pool.upstream_tls is not None:
        traits.append(_reencrypt(pool.upstream_tls))
    if pool.proxy_protocol:
        traits.append(f"PROXY v{pool.proxy_protocol}")
    if pool.transparent:
        traits.append("from the client's address")
    traits.append("no retry" if pool.retry.attempts == 1 else
                  f"{pool.retries} retries on {pool.retry_to.value} server")
    if not layer4:
        traits.append(f"response ≤ {_seconds(pool.response_timeout)}")
    lines = [f"  {pool.name}  {', '.join(traits)}"]
    if pool.check is not None:
        lines += _describe_check(pool.check)
    for i, s in enumerate(pool.servers):
        label = "servers" if i == 0 else ""
        lines.append(f"    {label:<8} {s.name}  {s.host}:{s.port}  ({s.fqdn})  weight {s.weight}")
    return lines + _detection_lines(pool, jitter)


def render_plan(config: Config, *, jitter: float = DEFAULT_JITTER) -> str:
    """The plan of a valid config, as printed by `caslb check`."""
    lines = ["frontends"]
    for fe in config.frontends:
        lines += _frontend_lines(fe)
    lines += ["", f"pools (worst cases with {jitter:.0%} scheduling jitter)"]
    layer4 = {name for fe in config.frontends if fe.mode is not Mode.HTTP
              for name in fe.pool_names}
    for pool in config.pools.values():
        lines += _pool_lines(pool, jitter, layer4=pool.name in layer4)
    admin = f"{config.admin.host}:{config.admin.port}"
    lines += ["", f"admin {admin}{' (token set)' if config.admin.token else ''}, "
              f"shutdown grace {_seconds(config.grace)}"]
    return "\n".join(lines)


def _blind_spot(fe: FrontendConfig, pool: PoolConfig) -> str | None:
    check = pool.check
    if fe.mode is not Mode.TCP or check is None or check.spec.kind is not CheckKind.HEALTHCHECK:
        return None
    return (f"frontends.{fe.name}: blind spot (docs/exchange.md §3, scenario A): every HTTPS "
            f"protocol goes to pool {pool.name}, whose check probes only {check.spec.path}. "
            "If EWS, MAPI, RPC or ActiveSync fails on a server while that page answers, the "
            "server stays in and about 1/N of those requests fail; if that page alone fails, "
            "the server is pulled for every protocol. Per-protocol health needs mode l4-sni "
            "or l7.")


def file_errors(config: Config) -> list[tuple[str, str]]:
    """(key path, problem) for each certificate, key and CA file `run` could not load."""
    errors: list[tuple[str, str]] = []

    def add(path: str, found: FileProblem | None) -> None:
        if found is not None:
            errors.append((f"{path}.{found.which}" if found.which != "ca" else path,
                           found.problem))

    for fe in config.frontends:
        for i, cert in enumerate(fe.tls):
            at = f"frontends.{fe.name}.tls" + (f"[{i}]" if len(fe.tls) > 1 else "")
            add(at, certificate_problem(cert.cert_file, cert.key_file))
    for pool in config.pools.values():
        if pool.check is not None and pool.check.spec.ca_file:
            add(f"pools.{pool.name}.check.ca_file", ca_problem(pool.check.spec.ca_file))
        if pool.upstream_tls is not None and pool.upstream_tls.ca_file:
            add(f"pools.{pool.name}.tls.ca_file", ca_problem(pool.upstream_tls.ca_file))
    return list(dict.fromkeys(errors))


def exit_on_file_errors(config: Config, path: Path) -> None:
    """Every file problem with its key path on stderr, then exit 2; nothing when all load."""
    errors = file_errors(config)
    for key, problem in errors:
        typer.echo(f"error: {key}: {problem}", err=True)
    if errors:
        count = len(errors)
        typer.echo(f"{path}: {count} error{'s' if count != 1 else ''}", err=True)
        raise typer.Exit(2)


def _sets_first_response(pool: PoolConfig) -> bool:
    """Whether the pool sets a first-response timeout other than its protocol's default."""
    proto = PROTOCOLS.get(pool.protocol.lower()) if pool.protocol else None
    default = None if proto is None else proto.first_response_timeout
    return pool.first_response_timeout not in (None, default)


def find_warnings(config: Config) -> list[str]:
    """Designs that validate but will hurt, one sentence each, with their key path."""
    warnings: list[str] = []
    used = {name for fe in config.frontends for name in fe.pool_names}
    http_pools = {n for fe in config.frontends if fe.mode is Mode.HTTP for n in fe.pool_names}
    tcp_pools = used - http_pools
    for fe in config.frontends:
        for name in fe.pool_names:
            spot = _blind_spot(fe, config.pools[name])
            if spot is not None:
                warnings.append(spot)
    for pool in config.pools.values():
        if pool.name not in used:
            warnings.append(f"pools.{pool.name}: no frontend sends to it")
        if pool.check is None and pool.observe is None:
            warnings.append(f"pools.{pool.name}: no check and no observe: a dead server is "
                            "never taken out")
        if pool.name in http_pools - tcp_pools and _sets_first_response(pool):
            warnings.append(f"pools.{pool.name}.first_response_timeout: ignored behind an http "
                            "frontend (response_timeout bounds the wait there)")
        if pool.balance is Balance.LEASTCONN and not pool.slowstart:
            warnings.append(f"pools.{pool.name}: leastconn without slowstart sends a recovered "
                            "server every new connection until it catches up")
    return warnings


@app.command()
def check(
    config: Annotated[
        Path, typer.Argument(metavar="CONFIG", help="The TOML config file to check.")
    ],
    jitter: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="Probe scheduling jitter to allow for.")
    ] = DEFAULT_JITTER,
    skip_files: Annotated[bool, typer.Option(
        "--skip-files", help="Do not open certificate, key and CA files (not deployed yet).",
    )] = False,
) -> None:
    """Validate CONFIG and print its plan with worst-case detection times.

    Example: caslb check config/l7-single-namespace.toml

    Exit status 0 when valid (warnings do not fail), 2 with every error and its
    key path on stderr, a certificate, key or CA file that does not load included.
    """
    loaded = load_or_exit(config)
    if not skip_files:
        exit_on_file_errors(loaded, config)
    servers = {s.name for pool in loaded.pools.values() for s in pool.servers}
    typer.echo(f"{config}: valid; {len(loaded.frontends)} frontends, {len(loaded.pools)} pools, "
               f"{len(servers)} servers")
    typer.echo("")
    typer.echo(render_plan(loaded, jitter=jitter))
    for title, items in (("notes", list(loaded.notes)), ("warnings", find_warnings(loaded))):
        if items:
            typer.echo(f"\n{title}")
            for item in items:
                typer.echo(f"  - {item}")

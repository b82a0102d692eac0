"""`caslb run --workers N`: one supervisor (control plane) and N workers (data plane).

Theory of operation
-------------------
One Python process is bound to one core, so the data plane runs in N worker
processes that share each frontend address through SO_REUSEPORT (the kernel
spreads new connections over them). Everything that must be decided once
stays in the supervisor, the process `caslb run` starts:

- The supervisor runs a `Balancer` with probes, pools and the admin API but
  no frontends. It starts each worker as `caslb run CONFIG --worker` with
  pipes on its stdin and stdout, and restarts one that dies (at most
  `MAX_RESTARTS` times per slot, each logged).
- A worker runs a `Balancer` with the frontends only: no probe runs, no admin
  listener. Its members' check and admin states are whatever the supervisor
  last said.

Messages are JSON lines (lb/workers/messages.py, a leaf module), one object
each, with a `t` field naming the kind, a sequence number `seq` and the hash
`cfg` of the config the sender runs:

- supervisor → worker (stdin): `check` (pool, server, UP|DOWN) for every
  probe transition, `admin` (pool, server, READY|DRAIN|MAINT) for every change
  made through the admin API, `eject` (pool, server, seconds left) for every
  outlier ejection its pools decide (a worker lifts one itself on the check
  transition that lifts it in the supervisor), and a `snapshot` line holding
  every member's states and the ejections in force: when the worker starts,
  when it asks (after a reload, or a gap in the sequence numbers), and every
  `SNAPSHOT_INTERVAL` so a lost line heals.
  The worker applies each with `Pool.set_check_state`/`Pool.set_admin` at its
  own clock (lb/workers/memberstate.py), so resets and drain deadlines act on
  its own connections as they would in one process. A worker applies the
  first snapshot before its frontends accept, so it never serves a member the
  supervisor knows is DOWN.
- worker → supervisor (stdout): `report` (pool, server, ok, reason), the
  passive outcomes of live traffic: every failure, and a success only when the
  worker's previous report for that member was a failure (`ReportFilter`), so
  healthy traffic costs no message; `outcome` (pool, server, outcome, client,
  count), the L7 outcomes for outlier detection, which the worker's pools
  forward rather than judge (`PoolEjections.follow`): failures at once,
  successes batched per (pool, server, client) and flushed every
  `METRICS_INTERVAL` (`OutcomeBatcher`); `reloaded` after a SIGHUP reload and
  `resync` after a gap (the supervisor answers both with a snapshot);
  `metrics` every `METRICS_INTERVAL`.

The supervisor logs whether every worker runs its config
(lb/workers/agreement.py) whenever that changes: after a SIGHUP, one line
once every worker has reloaded into the supervisor's config, or a warning
naming a worker that reloaded into another one.

Metrics: a worker sends the samples of its counters and histograms (and the
current-connections gauge), without `_created`. The supervisor keeps the last
set per worker (`WorkerTotals`) and, when a worker is replaced, folds its
counters into a retired total so no counter goes backwards. Its `/metrics`
is `MergedCollector`: its own series (pool state, checks) with the workers'
samples added per label set, plus `caslb_worker_frontend_connections_total
{worker}` and `caslb_worker_http_requests_total{worker}` to show how the
kernel spread the traffic. prometheus_client's
multiprocess mode was not used: it needs a shared directory and environment
set before import, and does not fit the injected registries. The cost is that
worker traffic counters lag by up to one interval.

Signals: SIGHUP to the supervisor reloads its config, then is forwarded to
every worker (which reloads frontends and pools from the file). SIGTERM or
SIGINT is forwarded; each worker drains for `grace` and exits, and the
supervisor exits 0 once they all have. Workers ignore SIGINT themselves (a
Ctrl-C reaches the whole process group; the forwarded stop is enough) and stop
when their stdin ends, so a supervisor that dies takes them with it.
"""

from lb.workers.agreement import ConfigAgreement, Verdict
from lb.workers.filters import OutcomeBatcher, ReportFilter
from lb.workers.lines import LineReader, LineSplitter, write_lines
from lb.workers.memberstate import apply_control, snapshot
from lb.workers.merged import MergedCollector, WorkerTotals, traffic_families
from lb.workers.messages import (
    AdminChange,
    CheckChange,
    EjectionChange,
    Family,
    GapDetector,
    MemberState,
    MetricsUpdate,
    OutlierOutcome,
    PassiveReport,
    Reloaded,
    Resync,
    Sequencer,
    Snapshot,
    Stamp,
    config_hash,
    decode_control,
    decode_worker,
    encode_control,
    encode_worker,
)
from lb.workers.supervisor import run_supervisor
from lb.workers.worker import run_worker, worker_argv

__all__ = [
    "AdminChange",
    "CheckChange",
    "ConfigAgreement",
    "EjectionChange",
    "Family",
    "GapDetector",
    "LineReader",
    "LineSplitter",
    "MemberState",
    "MergedCollector",
    "MetricsUpdate",
    "OutcomeBatcher",
    "OutlierOutcome",
    "PassiveReport",
    "Reloaded",
    "ReportFilter",
    "Resync",
    "Sequencer",
    "Snapshot",
    "Stamp",
    "Verdict",
    "WorkerTotals",
    "apply_control",
    "config_hash",
    "decode_control",
    "decode_worker",
    "encode_control",
    "encode_worker",
    "run_supervisor",
    "run_worker",
    "snapshot",
    "traffic_families",
    "worker_argv",
    "write_lines",
]

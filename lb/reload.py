"""Planning a reload (pure): from old config, new config and what is serving to the steps.

Theory of operation
-------------------
A reload must not refuse or drop a connection, and must keep every member's
check, admin and slow-start state. The app (lb/app.py) carries out a
`ReloadPlan` in this order: reconfigure the pools it keeps and add new ones,
retire the frontends that are gone, then walk the new config's frontends in
order, starting each new one and replacing each changed one, and at last
remove the pools that are gone (no frontend refers to them any more).

- A pool kept by name is reconfigured in place (`Pool.reconfigure`), so its
  members keep their states; a new pool starts fresh.
- A frontend is replaced only when `lb.build.needs_rebuild` says its
  object must change, its settings or a certificate, key or CA file it
  was built from (`renewed`, lb/renewal.py); an unchanged one keeps serving
  untouched.
- A replaced frontend that keeps its (host, port) hands its listening sockets
  to its successor (`reuse`), so the kernel never refuses a connection; the
  old one only stops accepting and ends with its last connection. One that
  moves gets fresh sockets and its old ones are closed.
- A retired frontend's sockets are closed at once; its connections finish.
- A changed admin listener cannot move while running: it is reported as
  needing a restart.

`serving` is what runs now: frontend name → the `FrontendConfig` its object
was built from (a process that serves no frontends, the supervisor, passes
nothing and `serve_frontends=False`); `pools`, the pools it holds, which are
`old`'s unless a reload failed part way and left some behind.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from lb.build import needs_rebuild
from lb.config import Config, FrontendConfig


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload does, by name (see the module docstring for the order).

    Attributes:
        reconfigure: pools kept, reconfigured in place.
        add: pools new in the config.
        remove: pools no longer in the config.
        retire: frontends no longer served: stop accepting, close their sockets.
        start: frontends new to this process, on fresh sockets.
        replace: frontends rebuilt from their new config.
        reuse: the replaced frontends that take over their predecessor's sockets.
        keep: frontends left as they are.
        needs_restart: changes this process cannot apply while running.
    """

    reconfigure: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    retire: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    reuse: frozenset[str] = frozenset()
    keep: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()


def _address(fe: FrontendConfig) -> tuple[str, int]:
    return fe.host, fe.port


def plan_reload(
    old: Config,
    new: Config,
    serving: Mapping[str, FrontendConfig],
    *,
    pools: Collection[str] | None = None,
    serve_frontends: bool = True,
    renewed: Collection[str] = frozenset(),
) -> ReloadPlan:
    """The steps that take a process running `old` (with `serving`) to `new`, when the
    files `renewed` changed on disk since `serving` was built."""
    held = list(old.pools) if pools is None else list(pools)
    wanted = new.frontends if serve_frontends else ()
    wanted_names = {fe.name for fe in wanted}
    start, replace, keep, reuse = [], [], [], set()
    for fe in wanted:
        before = serving.get(fe.name)
        if before is None:
            start.append(fe.name)
        elif not needs_rebuild(before, fe, old, new, renewed):
            keep.append(fe.name)
        else:
            replace.append(fe.name)
            if _address(before) == _address(fe):
                reuse.add(fe.name)
    return ReloadPlan(
        reconfigure=tuple(name for name in new.pools if name in held),
        add=tuple(name for name in new.pools if name not in held),
        remove=tuple(name for name in held if name not in new.pools),
        retire=tuple(name for name in serving if name not in wanted_names),
        start=tuple(start),
        replace=tuple(replace),
        reuse=frozenset(reuse),
        keep=tuple(keep),
        needs_restart=tuple(key for key, changed in (("admin", new.admin != old.admin),
                                                     ("logging", new.logging != old.logging))
                            if changed),
    )

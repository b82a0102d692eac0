"""perf ha's figures from a client's requests and the moments of the sequence (pure)."""

from __future__ import annotations

from typing import Any

from perf.ha.scenario import count_errors, measure


def req(started: float, finished: float, server: str | None,
        error: str | None = None) -> dict[str, Any]:
    return {"started": started, "finished": finished, "server": server, "error": error}


AT = {"drained": 1.0, "killed": 2.0, "moved": 3.5, "restarted": 6.0, "backup": 8.0,
      "cut": 9.0, "moved_back": 10.0}
ADMIN = {"drain": {"lb1": "DRAIN"}, "restart": {"lb1": "READY"}, "redrain": {"lb1": "DRAIN"}}


def test_failover_ends_with_the_first_answer_to_a_request_started_after_the_kill() -> None:
    requests = [
        req(0.5, 0.6, "cas1"),  # before the drain: cas1 may answer
        req(1.2, 1.3, "cas2"),
        req(1.9, 2.1, "cas3"),  # started before the kill, answered after: not the end
        req(2.1, 2.2, None, "ConnectionRefusedError"),
        req(2.2, 2.7, None, "TimeoutError"),
        req(3.6, 3.7, "cas2"),  # the end of the outage
        req(6.5, 6.6, None, "TimeoutError"),  # after the restart
        req(6.7, 6.8, "cas1"),
        req(9.0, 9.5, None, "ConnectionResetError"),  # the cut
        req(10.0, 10.2, "cas2"),
        req(10.3, 10.4, "cas3"),
    ]
    result = measure(requests, AT, ADMIN, ["lb2"], ["lo"])
    assert result.requests == 11
    assert result.vip_moved_after == 1.5
    assert result.served_after == 3.7 - 2.0
    assert result.failover_errors == 2
    assert result.failback_after == 2.0 and result.failback_errors == 1
    assert result.errors_before_kill == 0
    assert (result.cut_vip_moved_after, result.cut_errors) == (1.0, 1)
    assert abs(result.cut_served_after - 1.2) < 1e-9
    assert result.served_by_cas1_after_drain == 1
    assert result.answered_after_drain == ["cas1", "cas2", "cas3"]
    assert result.admin_after_restart == {"lb1": "READY"}
    assert result.lines()[0] == ("failover: VIP on lb2 1.50 s after caslb on lb1 was killed; "
                                 "first answer 1.70 s after; 2 client error(s)")


def test_errors_count_by_when_they_ended() -> None:
    requests = [req(0.0, 1.0, None, "x"), req(1.0, 2.0, None, "x"), req(2.0, 2.5, "cas1")]
    assert count_errors(requests, 1.0, 2.0) == 1
    assert count_errors(requests, 0.0, 3.0) == 2

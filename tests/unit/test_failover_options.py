"""`python -m perf failover`'s options reach the run's settings."""

from __future__ import annotations

from perf.__main__ import run_settings
from perf.failover.settings import FULL, QUICK


def test_new_connections_sets_the_rate_and_nothing_else() -> None:
    settings = run_settings(False, 0.0, 160.0)
    assert settings.mix.new_connections_per_second == 160.0
    assert settings.mix.clients == FULL.mix.clients
    assert settings.phases == FULL.phases


def test_without_options_the_mix_is_the_default() -> None:
    assert run_settings(True, 0.0, None) == QUICK
    assert run_settings(False, 5.0, None).health_cache_delay == 5.0

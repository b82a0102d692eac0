"""Debian's Prometheus server on loopback for a test: start it, wait for its targets, query it."""

from __future__ import annotations

import json
import math
import shutil
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass(frozen=True)
class Prometheus:
    """A running Prometheus: where its HTTP API answers."""

    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one result) `expr` evaluates to now."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(address, timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", (expr, answer)
        data = answer["data"]
        return data["result"] if data["resultType"] in ("vector", "matrix") else [
            {"metric": {}, "value": data["result"]}]

    async def wait_until(self, expr: str, limit: float = 20.0) -> list[dict[str, Any]]:
        """Poll until `expr` returns a non-empty vector (a condition that holds)."""
        with trio.fail_after(limit):
            while True:
                try:
                    found = await trio.to_thread.run_sync(self.query, expr)
                except OSError:
                    found = []  # not listening yet
                if found:
                    return found
                await trio.sleep(0.25)


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    """The sample values of an instant query's result that are numbers (not NaN)."""
    values = [float(series["value"][1]) for series in result]
    return [v for v in values if not math.isnan(v)]


def scrape_config(jobs: dict[str, str], rule_files: list[Path]) -> str:
    """A prometheus.yml scraping each job's loopback target every second."""
    lines = ["global:", "  scrape_interval: 1s", "  evaluation_interval: 1s", "rule_files:"]
    lines += [f"  - {path}" for path in rule_files]
    lines.append("scrape_configs:")
    for job, target in jobs.items():
        lines += [f"  - job_name: {job}", "    scrape_timeout: 900ms",
                  "    static_configs:", f'      - targets: ["{target}"]']
    return "\n".join(lines) + "\n"


@asynccontextmanager
async def running_prometheus(config: str, port: int, workdir: Path) -> AsyncIterator[Prometheus]:
    """Run /usr/bin/prometheus on 127.0.0.1:`port` with `config`, storage under `workdir`."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: .ci/run installs Debian's prometheus package"
    (workdir / "prometheus.yml").write_text(config)
    log = (workdir / "prometheus.log").open("w")
    command = [binary, f"--config.file={workdir / 'prometheus.yml'}",
               f"--storage.tsdb.path={workdir / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}"]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(command, check=False, stdout=log, stderr=log,
                                                 task_status=task_status))
        try:
            yield Prometheus(f"http://127.0.0.1:{port}")
        finally:
            process.terminate()
            log.close()

"""Smoke runs of berth-bench, so the benchmark tool keeps working (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest


def run_bench(server, *args):
    bench = os.environ.get("BERTH_BENCH_BIN")
    if not bench:
        pytest.fail("set BERTH_BENCH_BIN to the berth-bench binary")
    creds = server.data_dir / "credentials" / "admin.json"
    done = subprocess.run(
        [bench, "--credentials", str(creds), "--endpoint", server.base, "--server-pid", str(server.proc.pid),
         "--warmup", "0s", "--duration", "3s", "--drain", "5s", *args],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    [line] = [l for l in done.stdout.splitlines() if l.startswith("BENCH ")]
    return json.loads(line[len("BENCH "):])


def assert_exactly_once(summary, total):
    assert summary["sent"] == total, summary
    assert summary["received"] == total, summary
    assert (summary["lost"], summary["duplicates"], summary["foreign"]) == (0, 0, 0), summary
    assert summary["exactly_once"] is True
    assert summary["errors"] == {"put": 0, "get": 0, "delete": 0}, summary
    assert summary["server_cpu_us_per_msg"] is not None and summary["server_rss_mib"] > 0


def test_bench_rest_smoke_run_receives_every_message_exactly_once(server):
    summary = run_bench(server, "--queue", "bench-rest", "--producers", "2", "--consumers", "2",
                        "--batch", "10", "--get-limit", "10", "--total", "405")
    assert_exactly_once(summary, 405)


def test_bench_stomp_smoke_run_receives_every_message_exactly_once(server):
    summary = run_bench(server, "--protocol", "stomp", "--stomp-addr", server.stomp_addr, "--queue", "bench-stomp",
                        "--producers", "2", "--consumers", "2", "--total", "200")
    assert_exactly_once(summary, 200)

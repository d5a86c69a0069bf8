"""Driver of scripts/soak: starts the server, runs the mixed load, samples, judges."""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import oci

SAMPLE_EVERY = 10


def start_server(berth: str, data: Path) -> tuple[subprocess.Popen, str, str]:
    log = open(data.parent / "server.log", "wb")
    proc = subprocess.Popen([berth, "serve", "--data-dir", str(data), "--http-addr", "127.0.0.1:0",
                             "--stomp-addr", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=log)
    line = proc.stdout.readline().decode()
    m = re.match(r"listening http=(\S+) stomp=(\S+)", line)
    assert m, f"no listening line: {line!r}"
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    return proc, m.group(1), m.group(2)


def sample(pid: int, data: Path) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    size = lambda p: p.stat().st_size if p.exists() else 0
    return {"t": round(time.monotonic()), "rss_mib": round(rss_kib / 1024, 1),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "db_mib": round(size(data / "berth.sqlite3") / 2**20, 1),
            "wal_mib": round(size(data / "berth.sqlite3-wal") / 2**20, 1)}


def bench(bench: str, creds: Path, http: str, stomp: str, pid: int, protocol: str, seconds: int) -> subprocess.Popen:
    return subprocess.Popen([bench, "--credentials", str(creds), "--endpoint", f"http://{http}",
                             "--protocol", protocol, "--stomp-addr", stomp, "--queue", f"soak-{protocol}",
                             "--producers", "4", "--consumers", "4", "--interval", "20ms", "--batch", "10",
                             "--warmup", "1s", "--duration", f"{seconds}s", "--server-pid", str(pid),
                             "--label", f"soak-{protocol}"], stdout=subprocess.PIPE, text=True)


def sdk_load(config: dict, base: str, stop: threading.Event, errors: list, counts: dict) -> None:
    """Puts, long polls and deletes on one queue; creates and deletes a queue every 3 s."""
    admin = oci.queue.QueueAdminClient(config, service_endpoint=base)
    composite = oci.queue.QueueAdminClientCompositeOperations(admin)
    qc = oci.queue.QueueClient(config, service_endpoint=base)

    def create(name):
        work = composite.create_queue_and_wait_for_state(
            oci.queue.models.CreateQueueDetails(display_name=name, compartment_id=config["tenancy"]),
            wait_for_states=["SUCCEEDED"]).data
        return work.resources[0].identifier

    queue_id = create("soak-sdk")
    last_churn = 0.0
    n = 0
    while not stop.is_set():
        try:
            if time.monotonic() - last_churn > 3:
                churn = create(f"soak-churn-{n}")
                qc.put_messages(churn, oci.queue.models.PutMessagesDetails(
                    messages=[oci.queue.models.PutMessagesDetailsEntry(content="churn")]))
                composite.delete_queue_and_wait_for_state(churn, wait_for_states=["SUCCEEDED"])
                counts["churned"] += 1
                last_churn = time.monotonic()
            qc.put_messages(queue_id, oci.queue.models.PutMessagesDetails(
                messages=[oci.queue.models.PutMessagesDetailsEntry(content=f"sdk {n}")]))
            got = qc.get_messages(queue_id, limit=10, timeout_in_seconds=5).data.messages
            for m in got:
                qc.delete_message(queue_id, m.receipt)
            counts["sdk"] += len(got)
            # A long poll that waits: nothing is put on this channel.
            if n % 20 == 0:
                qc.get_messages(queue_id, limit=1, timeout_in_seconds=2, channel_filter="idle")
            n += 1
        except Exception as e:  # every error fails the soak
            errors.append(repr(e)[:300])
            time.sleep(1)


def grows(series: list[float], slack: float) -> bool:
    """Unbounded growth: the last third's median above the middle third's by more than slack."""
    if len(series) < 9:
        return False
    third = len(series) // 3
    return statistics.median(series[-third:]) > statistics.median(series[third:2 * third]) + slack


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--berth", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--seconds", type=int, default=1800)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="berth-soak-"))
    data = work / "data"
    proc, http, stomp = start_server(args.berth, data)
    creds = data / "credentials" / "admin.json"
    config = oci.config.from_file(str(data / "credentials" / "oci-config"))
    samples, errors, counts = [], [], {"sdk": 0, "churned": 0}
    stop = threading.Event()
    sdk = threading.Thread(target=sdk_load, args=(config, f"http://{http}", stop, errors, counts), daemon=True)
    sdk.start()
    benches = [bench(args.bench, creds, http, stomp, proc.pid, p, args.seconds) for p in ("rest", "stomp")]
    deadline = time.monotonic() + args.seconds
    results = []
    try:
        while time.monotonic() < deadline:
            samples.append(sample(proc.pid, data))
            print(json.dumps(samples[-1]), flush=True)
            time.sleep(SAMPLE_EVERY)
        stop.set()
        sdk.join(30)
        for b in benches:
            out, _ = b.communicate(timeout=180)
            line = next((l for l in out.splitlines() if l.startswith("BENCH ")), None)
            results.append(json.loads(line[6:]) if line else {"label": "missing", "exactly_once": False})
        samples.append(sample(proc.pid, data))
    finally:
        proc.terminate()
        proc.wait(30)
    failures = list(errors)
    for r in results:
        errs = r.get("errors", {})
        if not r.get("exactly_once") or any(errs.values()):
            failures.append(f"{r['label']}: exactly_once={r.get('exactly_once')} lost={r.get('lost')} "
                            f"duplicates={r.get('duplicates')} errors={errs}")
    for key, slack in (("rss_mib", 16), ("fds", 16), ("db_mib", 16), ("wal_mib", 64)):
        if grows([s[key] for s in samples], slack):
            failures.append(f"{key} grows: {[s[key] for s in samples]}")
    summary = {"seconds": args.seconds, "samples": len(samples), "sdk_messages": counts["sdk"],
               "queues_churned": counts["churned"],
               "bench": [{k: r.get(k) for k in ("label", "sent", "received", "lost", "duplicates", "errors",
                                               "received_per_s")} for r in results],
               "first": samples[0], "last": samples[-1],
               "max": {k: max(s[k] for s in samples) for k in ("rss_mib", "fds", "db_mib", "wal_mib")},
               "failures": failures}
    print("SOAK " + json.dumps(summary))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

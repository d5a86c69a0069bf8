"""Several `berth serve` nodes on one PostgreSQL store, any node answering any request:
wakeups cross nodes, every message is delivered once across nodes, a node killed mid-lease
costs only its leases' visibility, a PostgreSQL restart under load is answered 503
while it lasts and mended without restarting the nodes, and a crash of PostgreSQL loses no
acknowledged put or delete.

Runs in the compatibility suite's PostgreSQL run (BERTH_COMPAT_POSTGRES_URL); the nodes of
a test share one store (a schema of its own), each with a data dir of its own.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import oci
import pytest

from berthlib import (POSTGRES_URL, BerthServer, Tenant, berth_bin, delete_queue, get, put, stats, store_env, unique_name,
                      wait_for)

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL (the suite's run on PostgreSQL)")

POSTGRES_SERVER = Path(__file__).resolve().parents[2] / "scripts" / "postgres-server"


def start_nodes(tmp_path: Path, n: int, env: dict[str, str] | None = None) -> list[BerthServer]:
    """n nodes on one new store; the first writes the admin credentials, the others
    start once it is up (they find the admin user in the store)."""
    env = env or store_env()
    nodes = []
    for i in range(n):
        node = BerthServer(berth_bin(), tmp_path / f"node{i}", tmp_path / f"logs{i}", env=env)
        nodes.append(node.start())
    return nodes


def tenant_on(first: BerthServer, node: BerthServer) -> Tenant:
    """The admin credentials (written by the first node), talking to `node`."""
    return Tenant.load(first.config_path, first.admin_json_path, node.base)


@pytest.fixture
def nodes(tmp_path):
    made: list[BerthServer] = []

    def make(n: int, env=None) -> list[BerthServer]:
        made.extend(start_nodes(tmp_path, n, env))
        return made[-n:]

    yield make
    for node in made:
        if node.running:
            node.kill()


def test_nodes_started_at_once_on_a_new_store_make_one_admin(tmp_path):
    env = store_env()
    servers = [BerthServer(berth_bin(), tmp_path / f"n{i}", tmp_path / f"logs{i}", env=env) for i in range(3)]
    failed = []

    def start(server):
        try:
            server.start()
        except Exception as e:  # noqa: BLE001 - reported below
            failed.append(e)

    starting = [threading.Thread(target=start, args=(s,)) for s in servers]
    for thread in starting:
        thread.start()
    for thread in starting:
        thread.join(timeout=120)
    try:
        assert not failed and all(s.running for s in servers), failed
        made = [s for s in servers if s.admin_json_path.exists()]
        assert len(made) == 1, "exactly one node wrote the admin's credentials"
        for s in servers:
            if s is not made[0]:
                assert not any(s.credentials_dir.glob("*")), "no credentials naming a user that does not exist"
        qid = tenant_on(made[0], servers[0]).create_queue(unique_name("at-once"))
        for s in servers:
            assert stats(tenant_on(made[0], s).qc, qid).queue.visible_messages == 0
    finally:
        for s in servers:
            if s.running:
                s.kill()


def test_a_long_poll_on_one_node_wakes_at_a_put_on_another(nodes):
    a, b = nodes(2)
    on_a, on_b = tenant_on(a, a), tenant_on(a, b)
    qid = on_a.create_queue(unique_name("across"))
    waited = []
    for round_ in range(5):
        got = {}

        def poll():
            got["messages"] = get(on_b.qc, qid, timeout_in_seconds=20, visibility_in_seconds=60)
            got["at"] = time.monotonic()

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.5)  # the GetMessages waits on node B
        put_at = time.monotonic()
        put(on_a.qc, qid, [f"wake-{round_}"])
        poller.join(timeout=25)
        assert [m.content for m in got["messages"]] == [f"wake-{round_}"]
        waited.append(got["at"] - put_at)
        on_b.qc.delete_message(qid, got["messages"][0].receipt)
    print(f"put on A -> long poll on B returned: median {statistics.median(waited) * 1000:.0f} ms, "
          f"max {max(waited) * 1000:.0f} ms")
    # Woken by the change feed, not by the end of the 20 s poll.
    assert max(waited) < 2, waited


def test_a_long_poll_on_one_node_ends_404_when_another_deletes_the_queue(nodes):
    a, b = nodes(2)
    on_a, on_b = tenant_on(a, a), tenant_on(a, b)
    qid = on_a.create_queue(unique_name("deleted"))
    got = {}

    def poll():
        try:
            get(on_b.qc, qid, timeout_in_seconds=20)
        except oci.exceptions.ServiceError as e:
            got["status"] = e.status
        got["at"] = time.monotonic()

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)  # the GetMessages waits on node B
    deleted_at = time.monotonic()
    delete_queue(on_a.admin, qid)
    poller.join(timeout=25)
    assert got.get("status") == 404
    assert got["at"] - deleted_at < 5, "ended by the deletion, not by its timeout"


def test_three_nodes_and_thirty_consumers_deliver_every_message_exactly_once(nodes):
    # berth-bench counts every message by its key: lost, duplicated or foreign.
    servers = nodes(3)
    bench = os.environ.get("BERTH_BENCH_BIN")
    if not bench:
        pytest.fail("set BERTH_BENCH_BIN to the berth-bench binary")
    total = 100_000
    endpoints = [arg for node in servers for arg in ("--endpoint", node.base)]
    pids = [arg for node in servers for arg in ("--server-pid", str(node.proc.pid))]
    done = subprocess.run(
        [bench, "--credentials", str(servers[0].admin_json_path), *endpoints, *pids,
         "--queue", "three-nodes", "--producers", "6", "--consumers", "30", "--batch", "20", "--get-limit", "20",
         "--size", "256", "--visibility", "60", "--total", str(total),
         "--warmup", "0s", "--duration", "240s", "--drain", "60s"],
        capture_output=True, text=True, timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [l for l in done.stdout.splitlines() if l.startswith("BENCH ")]
    summary = json.loads(line[len("BENCH "):])
    print(f"3 nodes, 30 consumers: {summary['received_per_s']} msg/s, {summary['received']} received")
    assert (summary["sent"], summary["received"]) == (total, total), summary
    # Leases last 60 s, longer than the run: any duplicate would be a double lease.
    assert (summary["lost"], summary["duplicates"], summary["foreign"]) == (0, 0, 0), summary
    assert summary["errors"] == {"put": 0, "get": 0, "delete": 0}, summary


def test_a_node_killed_mid_lease_costs_only_its_leases_visibility(nodes):
    a, b = nodes(2)
    on_a, on_b = tenant_on(a, a), tenant_on(a, b)
    qid = on_a.create_queue(unique_name("killed"))
    put(on_a.qc, qid, [f"m{i}" for i in range(6)])
    leased = get(on_a.qc, qid, limit=3, visibility_in_seconds=4)
    assert [m.content for m in leased] == ["m0", "m1", "m2"]
    leased_at = time.monotonic()
    a.kill()
    # The other node goes on at once with what was not leased.
    rest = get(on_b.qc, qid, limit=10, visibility_in_seconds=60)
    assert [m.content for m in rest] == ["m3", "m4", "m5"]
    assert get(on_b.qc, qid, limit=10) == [], "the dead node's leases still hold"
    # Then its leases end as leases do, and node B delivers them again.
    again = wait_for(lambda: get(on_b.qc, qid, limit=10, visibility_in_seconds=60), timeout=15)
    assert time.monotonic() - leased_at >= 3.5
    assert sorted(m.content for m in again) == ["m0", "m1", "m2"]
    assert {m.delivery_count for m in again} == {2}


CLOCK_AHEAD_S = 8


def test_nodes_whose_clocks_differ_agree_on_lease_times(tmp_path):
    """Node B's clock runs 8 s ahead (libfaketime): leases it hands out and extends end
    when node A (and the database) say, as both take time from the database."""
    assert shutil.which("faketime"), "needs Debian's faketime (scripts/test installs it)"
    env = store_env()
    a = BerthServer(berth_bin(), tmp_path / "a", tmp_path / "logs-a", env=env).start()
    ahead = ["faketime", "-f", f"+{CLOCK_AHEAD_S}s"]
    b = BerthServer(berth_bin(), tmp_path / "b", tmp_path / "logs-b", env={**env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"},
                    wrapper=ahead).start()
    try:
        # B's own clock is off indeed: its HTTP Date header says so.
        with urllib.request.urlopen(f"{b.base}/health", timeout=5) as response:
            b_date = email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
        assert abs(b_date - time.time() - CLOCK_AHEAD_S) < 2, "faketime did not move node B's clock"
        on_a, on_b = tenant_on(a, a), tenant_on(a, b)
        qid = on_a.create_queue(unique_name("clocks"))
        put(on_a.qc, qid, ["m0", "m1"])

        # Leased on B for 5 s: B says it ends in 5 s of real time, and A agrees.
        leased_at = time.time()
        [m0] = get(on_b.qc, qid, limit=1, visibility_in_seconds=5)
        assert m0.content == "m0"
        assert abs(m0.visible_after.timestamp() - (leased_at + 5)) < 1.5, m0.visible_after
        [m1] = get(on_a.qc, qid, limit=10, visibility_in_seconds=60)
        assert m1.content == "m1", "m0 is leased on both nodes' reading"
        again = wait_for(lambda: get(on_a.qc, qid, limit=10, visibility_in_seconds=60), timeout=15)
        ended_after = time.time() - leased_at
        assert [m.content for m in again] == ["m0"]
        assert 4.5 <= ended_after < 5 + CLOCK_AHEAD_S / 2, f"the lease ended after {ended_after:.1f} s, not 5 s"

        # Leased on A, extended and deleted on B with A's receipt.
        extended_at = time.time()
        updated = on_b.qc.update_message(qid, again[0].receipt, oci.queue.models.UpdateMessageDetails(
            visibility_in_seconds=10)).data
        assert abs(updated.visible_after.timestamp() - (extended_at + 10)) < 1.5, updated.visible_after
        on_b.qc.delete_message(qid, again[0].receipt)
        on_a.qc.delete_message(qid, m1.receipt)
        assert stats(on_b.qc, qid).queue.visible_messages == 0
        assert get(on_a.qc, qid, limit=10) == []
    finally:
        for node in (a, b):
            node.kill()


@contextlib.contextmanager
def node_on_postgres_of_its_own(tmp_path: Path):
    """A started node on a PostgreSQL server of the test's own, so that stopping that server
    disturbs no other test (in /tmp: the postgres user cannot enter pytest's root-only
    tmp_path). Yields the server's dir and the node."""
    pg_dir = Path(tempfile.mkdtemp(prefix="berth-restart-pg."))
    subprocess.run([str(POSTGRES_SERVER), "start", str(pg_dir)], check=True, timeout=120)
    env = store_env((pg_dir / "url").read_text().strip())
    node = BerthServer(berth_bin(), tmp_path / "node", tmp_path / "logs", env=env)
    try:
        yield pg_dir, node.start()
    finally:
        if node.running:
            node.kill()
        subprocess.run([str(POSTGRES_SERVER), "stop", str(pg_dir)], timeout=60)
        shutil.rmtree(pg_dir, ignore_errors=True)


def keep_doing(action, errors: list, stop: threading.Event):
    """Runs action(i) for i = 0, 1, ... until stopped, noting each error as (HTTP status,
    code), or (0, exception name) for a connection reset while the server stops."""
    i = 0
    while not stop.is_set():
        try:
            action(i)
        except oci.exceptions.ServiceError as e:
            errors.append((e.status, e.code))
            time.sleep(0.05)
        except Exception as e:
            errors.append((0, type(e).__name__))
            time.sleep(0.05)
        i += 1


def drain(qc, qid: str) -> list[str]:
    """The contents still in the queue, once every lease has ended."""
    wait_for(lambda: stats(qc, qid).queue.in_flight_messages == 0, timeout=30, desc="leases to end")
    got = []
    while batch := get(qc, qid, limit=20, visibility_in_seconds=60):
        got.extend(m.content for m in batch)
    return got


def test_postgres_restarted_under_load_answers_503_then_recovers_without_losing_acknowledged_puts(tmp_path):
    with node_on_postgres_of_its_own(tmp_path) as (pg_dir, node):
        t = node.tenant()
        qid = t.create_queue(unique_name("restart"))
        qc = t.qc  # no SDK retries: each answer is seen as it is
        acknowledged, statuses, stop = [], [], threading.Event()

        def produce(i):
            put(qc, qid, [f"p{i}"])
            acknowledged.append(f"p{i}")

        producer = threading.Thread(target=keep_doing, args=(produce, statuses, stop))
        producer.start()
        wait_for(lambda: len(acknowledged) >= 20, timeout=30, desc="puts before the restart")
        subprocess.run([str(POSTGRES_SERVER), "stop", str(pg_dir)], check=True, timeout=60)
        wait_for(lambda: len(statuses) >= 3, timeout=30, desc="answers while PostgreSQL is down")
        down = node.health()
        subprocess.run([str(POSTGRES_SERVER), "resume", str(pg_dir)], check=True, timeout=60)
        before = len(acknowledged)
        wait_for(lambda: len(acknowledged) >= before + 20, timeout=30, desc="puts after the restart")
        stop.set()
        producer.join(timeout=30)
        assert node.running, "the node survived the restart"
        assert down.status_code == 503, down.text
        refused = [s for s in statuses if s[0] != 0]
        assert refused and all(s == (503, "ServiceUnavailable") for s in refused), statuses
        # Everything acknowledged is there, once.
        got = drain(qc, qid)
        assert sorted(set(acknowledged) - set(got)) == [], "acknowledged puts lost"
        assert len(got) == len(set(got))
        assert stats(qc, qid).queue.visible_messages == 0


def test_a_postgres_crash_loses_no_acknowledged_put_or_delete(tmp_path):
    # Leases commit without waiting for their flush (batches.rs, BEGIN_LEASE): a crash may
    # forget the last ones, which only delivers those messages again. Puts and deletes must
    # all be there.
    with node_on_postgres_of_its_own(tmp_path) as (pg_dir, node):
        t = node.tenant()
        qid = t.create_queue(unique_name("crash"))
        qc = t.qc
        acknowledged, deleted, put_errors, stop = [], set(), [], threading.Event()
        # A delete whose commit reached the disk just before the crash cut its answer is
        # done, though its client saw an error: such messages may be gone.
        unanswered = set()

        def produce(i):
            put(qc, qid, [f"p{i}-{j}" for j in range(5)])
            acknowledged.extend(f"p{i}-{j}" for j in range(5))

        def consume(_):
            # A short visibility: leases the crash forgot or ended come back soon.
            for m in get(qc, qid, limit=10, visibility_in_seconds=2):
                try:
                    qc.delete_message(qid, m.receipt)
                except Exception:
                    unanswered.add(m.content)
                    raise
                deleted.add(m.content)

        workers = [threading.Thread(target=keep_doing, args=(produce, put_errors, stop)),
                   threading.Thread(target=keep_doing, args=(consume, [], stop))]
        for w in workers:
            w.start()
        wait_for(lambda: len(deleted) >= 100, timeout=30, desc="deletes before the crash")
        subprocess.run([str(POSTGRES_SERVER), "crash", str(pg_dir)], check=True, timeout=60)
        wait_for(lambda: len(put_errors) >= 3, timeout=30, desc="answers while PostgreSQL is down")
        subprocess.run([str(POSTGRES_SERVER), "resume", str(pg_dir)], check=True, timeout=60)
        before = len(deleted)
        wait_for(lambda: len(deleted) >= before + 100, timeout=30, desc="deletes after the crash")
        stop.set()
        for w in workers:
            w.join(timeout=30)
        assert node.running, "the node survived the crash"
        refused = [s for s in put_errors if s[0] != 0]
        assert refused and all(s == (503, "ServiceUnavailable") for s in refused), put_errors
        left = drain(qc, qid)
        assert len(left) == len(set(left)), "a message is in the queue twice"
        assert sorted(set(left) & deleted) == [], "an acknowledged delete came back"
        assert sorted(set(acknowledged) - deleted - set(left) - unanswered) == [], "acknowledged puts lost"

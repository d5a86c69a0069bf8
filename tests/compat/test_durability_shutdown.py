"""Durability across kill -9 / restart, and clean SIGTERM shutdown.
Each test runs its own server on its own data dir."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from berthlib import channel_of, collect, delete_queue, get, put, stats, update_queue


def test_acknowledged_messages_survive_kill_9(fresh_server):
    srv = fresh_server()
    t = srv.tenant()
    config_before = srv.config_path.read_text()
    creds_before = srv.admin_creds()
    qid = t.create_queue("durable", visibility_in_seconds=30, retention_in_seconds=3600)

    plain = put(t.qc, qid, [f"plain-{i}" for i in range(20)])
    a = put(t.qc, qid, [f"a-{i}" for i in range(10)], channel_id="dur-a", custom_properties={"k": "a"})
    b = put(t.qc, qid, [f"b-{i}" for i in range(10)], channel_id="dur-b", custom_properties={"k": "b"})
    contents = [f"plain-{i}" for i in range(20)] + [f"a-{i}" for i in range(10)] + [f"b-{i}" for i in range(10)]
    channels = [None] * 20 + ["dur-a"] * 10 + ["dur-b"] * 10
    all_ids = [p.id for p in plain + a + b]
    expected = {i: (c, ch) for i, c, ch in zip(all_ids, contents, channels)}  # id -> (content, channel)

    # Lease 5 messages of dur-a (not deleted) and delete one of dur-b.
    leased = get(t.qc, qid, channel_filter="dur-a", limit=5, visibility_in_seconds=2)
    assert [m.delivery_count for m in leased] == [1] * 5
    [gone] = get(t.qc, qid, channel_filter="dur-b", visibility_in_seconds=30)
    t.qc.delete_message(qid, gone.receipt)
    del expected[gone.id]
    st = stats(t.qc, qid)
    assert st.queue.visible_messages + st.queue.in_flight_messages == 39

    srv.kill()
    srv.start()
    t = srv.tenant()

    assert srv.config_path.read_text() == config_before
    assert srv.admin_creds() == creds_before
    q = t.admin.get_queue(qid).data
    assert (q.display_name, q.visibility_in_seconds, q.retention_in_seconds) == ("durable", 30, 3600)
    st = stats(t.qc, qid)
    assert st.queue.visible_messages + st.queue.in_flight_messages == 39

    got = collect(t.qc, qid, 39, timeout=20)
    assert len(got) == 39
    assert {m.id: (m.content, channel_of(m)) for m in got} == expected
    leased_ids = {m.id for m in leased}
    for m in got:
        assert m.delivery_count == (2 if m.id in leased_ids else 1), (m.id, m.content, m.delivery_count)
        if channel_of(m):
            assert m.metadata.custom_properties == {"k": channel_of(m)[-1]}
    # FIFO per channel survived the restart.
    for ch in (None, "dur-b"):
        ids = [m.id for m in got if channel_of(m) == ch]
        assert ids == [i for i in all_ids if i in ids]


def test_deletes_and_queue_changes_survive_sigterm_restart(fresh_server):
    srv = fresh_server()
    t = srv.tenant()
    qid = t.create_queue("graceful")
    doomed = t.create_queue("doomed")
    put(t.qc, qid, ["keep-1", "drop", "keep-2"])
    msgs = get(t.qc, qid, limit=3, visibility_in_seconds=2)
    assert msgs[1].content == "drop"
    t.qc.delete_message(qid, msgs[1].receipt)
    update_queue(t.admin, qid, visibility_in_seconds=1, display_name="graceful-2")
    delete_queue(t.admin, doomed)

    assert srv.stop() == 0
    srv.start()
    t = srv.tenant()
    q = t.admin.get_queue(qid).data
    assert (q.display_name, q.visibility_in_seconds) == ("graceful-2", 1)
    assert doomed not in {x.id for x in t.admin.list_queues().data.items}
    got = collect(t.qc, qid, 2, timeout=15)
    assert sorted(m.content for m in got) == ["keep-1", "keep-2"]
    assert get(t.qc, qid) == []


def test_sigterm_exits_with_code_0_quickly(fresh_server):
    srv = fresh_server()
    t = srv.tenant()
    qid = t.create_queue()
    put(t.qc, qid, ["x"])
    t0 = time.monotonic()
    srv.terminate()
    assert srv.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5


def test_sigterm_ends_waiting_long_polls_with_empty_results(fresh_server):
    srv = fresh_server()
    t = srv.tenant()
    qid = t.create_queue()
    pollers = [t.new_queue_client() for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        futs = [pool.submit(lambda c=c: (get(c, qid, timeout_in_seconds=20), time.monotonic())) for c in pollers]
        time.sleep(1.0)  # both GetMessages are now waiting in the server
        assert not any(f.done() for f in futs)
        t0 = time.monotonic()
        srv.terminate()
        results = [f.result(timeout=15) for f in futs]
    for msgs, done in results:
        assert msgs == []
        assert done - t0 < 5, f"long poll ended {done - t0:.1f}s after SIGTERM"
    assert srv.wait(timeout=10) == 0


@pytest.mark.sqlite_only  # on PostgreSQL, several nodes are the point
def test_a_second_server_on_the_same_data_dir_refuses_to_start(fresh_server):
    srv = fresh_server()
    t = srv.tenant()
    qid = t.create_queue("owned")
    put(t.qc, qid, ["only-once"])
    second = subprocess.run(
        [srv.binary, "serve", "--data-dir", str(srv.data_dir),
         "--http-addr", "127.0.0.1:0", "--stomp-addr", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert second.returncode != 0
    assert "another berth server is using the data dir" in second.stderr, second.stderr
    # The first server still serves the message, once.
    [m] = get(t.qc, qid, visibility_in_seconds=30)
    assert m.content == "only-once"
    assert get(t.qc, qid) == []

"""A stored message that cannot be read (its content no longer UTF-8, or its bytes changed
under its checksum) no longer stops its queue: the get that reaches it moves it to the DLQ
and logs it once, the messages behind it flow, and from the DLQ it is taken away.
"""

from __future__ import annotations

import sqlite3

import pytest

from berthlib import put, stats, unique_name, wait_for

pytestmark = pytest.mark.sqlite_only


def test_unreadable_messages_go_to_the_dlq_and_the_rest_of_the_queue_flows(fresh_server):
    srv = fresh_server()
    t = srv.tenant()
    queue_id = t.create_queue(unique_name("poison"))
    for content in ["first", "not utf-8 soon", "flipped soon", "last"]:
        put(t.qc, queue_id, [content])  # one put each: one batch row each
    assert srv.stop() == 0

    with sqlite3.connect(srv.data_dir / "berth.sqlite3") as db:
        rows = {body.decode(): row for row, body in db.execute("SELECT id, bodies FROM message_batches")}
        # As a damaged disk would leave them: invalid UTF-8 in a row from before checksums,
        # and one changed byte under a checksum.
        db.execute("UPDATE message_batches SET bodies = ?, sums = NULL WHERE id = ?",
                   (b"not utf-8 so\xff\xfe", rows["not utf-8 soon"]))
        db.execute("UPDATE message_batches SET bodies = ? WHERE id = ?", (b"flipped s00n", rows["flipped soon"]))

    srv.start()
    t = srv.tenant()
    got = []
    for _ in range(4):
        for m in t.qc.get_messages(queue_id, limit=1, timeout_in_seconds=1).data.messages:
            got.append(m.content)
            t.qc.delete_message(queue_id, m.receipt)
    assert got == ["first", "last"], got

    st = stats(t.qc, queue_id)
    assert st.queue.visible_messages == 0 and st.dlq.visible_messages == 2, st
    log = srv.stderr_log.read_text()
    assert log.count("a stored message cannot be read") == 2, log[-3000:]
    assert "checksum does not match" in log and "not UTF-8" in log

    # From the DLQ they are taken away: nothing to serve, nothing left behind.
    resp = t.raw.request("GET", f"/20210201/queues/{queue_id}/messages",
                         params={"limit": 10, "timeoutInSeconds": 0, "deadLetterQueue": "true"})
    assert resp.status_code == 200 and resp.json()["messages"] == [], resp.text
    wait_for(lambda: stats(t.qc, queue_id).dlq.visible_messages == 0, timeout=5, desc="DLQ emptied")
    assert srv.stderr_log.read_text().count("a stored message cannot be read") == 4

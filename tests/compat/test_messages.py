"""Data plane: put/get/update/delete, leases, receipts, batches, stats."""

from __future__ import annotations

from datetime import timedelta

from oci.queue.models import (DeleteMessagesDetails, DeleteMessagesDetailsEntry, PutMessagesDetails,
                              UpdateMessageDetails, UpdateMessagesDetails, UpdateMessagesDetailsEntry)

from berthlib import (DEFAULT_RETENTION, MAX_GET_LIMIT, NOT_FOUND, approx_seconds, b64url, collect, counts, entry,
                      get, get_one_when_visible, now_utc, purge_queue, put, qpath, queue_client,
                      raises_service_error, sleep_until, stats, wait_for_counts)


def test_messages_endpoint_from_get_queue_serves_put_and_get(tenant, admin, queue_id):
    endpoint = admin.get_queue(queue_id).data.messages_endpoint
    client = queue_client(tenant.config, endpoint)
    put(client, queue_id, ["via-endpoint"])
    msgs = get(client, queue_id)
    assert [m.content for m in msgs] == ["via-endpoint"]


def test_put_returns_integer_ids_and_expire_after(qc, raw, queue_id):
    before = now_utc()
    res = put(qc, queue_id, ["a", "b", "c"])
    ids = [m.id for m in res]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 3
    for m in res:
        assert abs(approx_seconds(m.expire_after, before) - DEFAULT_RETENTION) < 5
    # Wire level: ids are JSON integers, timestamps RFC 3339 strings.
    r = raw.request("POST", qpath(queue_id, "messages"), {"messages": [{"content": "d"}]})
    assert r.status_code == 200, r.text
    body = r.json()["messages"][0]
    assert isinstance(body["id"], int)
    assert isinstance(body["expireAfter"], str) and body["expireAfter"].endswith("Z")


def test_get_returns_content_receipt_and_timestamps(qc, queue_id):
    before = now_utc()
    [p] = put(qc, queue_id, ["héllo wörld ✓ {\"json\": true}"])
    after = now_utc()
    [m] = get(qc, queue_id, visibility_in_seconds=20)
    got_at = now_utc()
    assert m.id == p.id
    assert m.content == "héllo wörld ✓ {\"json\": true}"
    assert isinstance(m.receipt, str) and m.receipt
    assert m.delivery_count == 1
    assert before - timedelta(seconds=1) <= m.created_at <= after + timedelta(seconds=1)
    assert abs(approx_seconds(m.visible_after, got_at) - 20) < 2
    assert abs(approx_seconds(m.expire_after, m.created_at) - DEFAULT_RETENTION) < 0.01
    assert m.expire_after == p.expire_after


def test_get_messages_default_limit_is_one(qc, queue_id):
    put(qc, queue_id, ["1", "2", "3"])
    assert len(get(qc, queue_id, visibility_in_seconds=30)) == 1


def test_get_messages_returns_up_to_limit_in_fifo_order(qc, queue_id):
    first = put(qc, queue_id, [f"m{i}" for i in range(5)])
    second = put(qc, queue_id, [f"m{i}" for i in range(5, 10)])
    msgs = get(qc, queue_id, limit=MAX_GET_LIMIT, visibility_in_seconds=30)
    assert [m.content for m in msgs] == [f"m{i}" for i in range(10)]
    assert [m.id for m in msgs] == [p.id for p in first + second]
    assert get(qc, queue_id, limit=3, visibility_in_seconds=30) == []


def test_limit_caps_the_batch(qc, queue_id):
    put(qc, queue_id, [f"m{i}" for i in range(MAX_GET_LIMIT + 5)])
    assert len(get(qc, queue_id, limit=MAX_GET_LIMIT, visibility_in_seconds=30)) == MAX_GET_LIMIT
    assert len(get(qc, queue_id, limit=4, visibility_in_seconds=30)) == 4
    assert len(get(qc, queue_id, limit=MAX_GET_LIMIT, visibility_in_seconds=30)) == 1


def test_leased_message_is_invisible_until_its_lease_ends(qc, queue_id):
    put(qc, queue_id, ["lease"])
    [m1] = get(qc, queue_id, visibility_in_seconds=2)
    assert get(qc, queue_id) == []
    m2, at = get_one_when_visible(qc, queue_id, timeout=10, visibility_in_seconds=30)
    assert m2.id == m1.id
    assert m2.delivery_count == 2
    assert m2.receipt != m1.receipt
    assert at >= m1.visible_after - timedelta(milliseconds=100), "redelivered before visibleAfter"


def test_long_poll_wakes_when_a_lease_expires(qc, queue_id):
    put(qc, queue_id, ["wake"])
    [m1] = get(qc, queue_id, visibility_in_seconds=1)
    t0 = now_utc()
    msgs = get(qc, queue_id, timeout_in_seconds=10, visibility_in_seconds=30)
    assert [m.id for m in msgs] == [m1.id]
    assert approx_seconds(now_utc(), t0) < 5


def test_update_message_sets_visible_after_relative_to_now(qc, queue_id):
    put(qc, queue_id, ["extend"])
    [m] = get(qc, queue_id, visibility_in_seconds=1)
    t_update = now_utc()
    upd = qc.update_message(queue_id, m.receipt, UpdateMessageDetails(visibility_in_seconds=3)).data
    assert upd.id == m.id
    assert abs(approx_seconds(upd.visible_after, t_update) - 3) < 1
    sleep_until(m.visible_after, margin=0.3)
    assert get(qc, queue_id) == [], "message came back at the end of the original lease"
    again, at = get_one_when_visible(qc, queue_id, timeout=10, visibility_in_seconds=30)
    assert again.id == m.id and again.delivery_count == 2
    assert at >= upd.visible_after - timedelta(milliseconds=100)


def test_delete_message_removes_it(qc, queue_id):
    put(qc, queue_id, ["gone", "stays"])
    [m] = get(qc, queue_id, visibility_in_seconds=30)
    assert m.content == "gone"
    resp = qc.delete_message(queue_id, m.receipt)
    assert 200 <= resp.status < 300
    assert resp.headers.get("opc-request-id")
    wait_for_counts(qc, queue_id, queue=(1, 0))
    [left] = get(qc, queue_id, visibility_in_seconds=30)
    assert left.content == "stays"
    with raises_service_error(404, NOT_FOUND):
        qc.delete_message(queue_id, m.receipt)


def test_visibility_zero_delivers_without_hiding_and_counts_deliveries(qc, queue_id):
    put(qc, queue_id, ["peek"])
    [a] = get(qc, queue_id, visibility_in_seconds=0)
    [b] = get(qc, queue_id, visibility_in_seconds=0)
    assert a.id == b.id
    assert (a.delivery_count, b.delivery_count) == (1, 2)
    [c] = get(qc, queue_id, visibility_in_seconds=30)
    assert c.delivery_count == 3


def test_queue_default_visibility_applies_when_not_given(admin, qc, make_queue):
    qid = make_queue(visibility_in_seconds=2)
    put(qc, qid, ["default-vis"])
    got_at = now_utc()
    [m] = get(qc, qid)
    assert abs(approx_seconds(m.visible_after, got_at) - 2) < 1
    assert get(qc, qid) == []
    m2, _ = get_one_when_visible(qc, qid, timeout=10)
    assert m2.id == m.id and m2.delivery_count == 2


# --------------------------------------------------------------------------
# Receipts
# --------------------------------------------------------------------------

def assert_receipt_rejected(qc, queue_id, receipt):
    with raises_service_error(404, NOT_FOUND):
        qc.update_message(queue_id, receipt, UpdateMessageDetails(visibility_in_seconds=5))
    with raises_service_error(404, NOT_FOUND):
        qc.delete_message(queue_id, receipt)


def test_forged_and_garbage_receipts_are_404(qc, queue_id):
    put(qc, queue_id, ["x"])
    [m] = get(qc, queue_id, visibility_in_seconds=30)
    for bad in (b64url(48), "garbage", "not a receipt!", m.receipt[:-4] + ("AAAA" if not m.receipt.endswith("AAAA") else "BBBB")):
        assert_receipt_rejected(qc, queue_id, bad)
    qc.delete_message(queue_id, m.receipt)  # the real one still works


def test_receipt_from_another_queue_is_404(qc, make_queue):
    q1, q2 = make_queue(), make_queue()
    put(qc, q1, ["one"])
    put(qc, q2, ["two"])
    [m1] = get(qc, q1, visibility_in_seconds=30)
    assert_receipt_rejected(qc, q2, m1.receipt)
    qc.delete_message(q1, m1.receipt)


def test_receipt_of_expired_lease_is_404(qc, queue_id):
    put(qc, queue_id, ["expired"])
    [m] = get(qc, queue_id, visibility_in_seconds=1)
    sleep_until(m.visible_after, margin=0.3)
    assert_receipt_rejected(qc, queue_id, m.receipt)
    wait_for_counts(qc, queue_id, queue=(1, 0))


def test_superseded_receipt_is_404_and_current_one_works(qc, queue_id):
    put(qc, queue_id, ["superseded"])
    [old] = get(qc, queue_id, visibility_in_seconds=1)
    new, _ = get_one_when_visible(qc, queue_id, timeout=10, visibility_in_seconds=30)
    assert new.id == old.id and new.delivery_count == 2
    assert_receipt_rejected(qc, queue_id, old.receipt)
    assert qc.update_message(queue_id, new.receipt, UpdateMessageDetails(visibility_in_seconds=30)).data.id == new.id
    qc.delete_message(queue_id, new.receipt)
    wait_for_counts(qc, queue_id, queue=(0, 0))


def test_message_management_two_consumer_flow(tenant, queue_id):
    """The OCI docs flow: A gets, extends, B sees nothing; A's lease ends,
    B gets it (deliveryCount 2), A's receipt is dead, B deletes."""
    a, b = tenant.new_queue_client(), tenant.new_queue_client()
    put(a, queue_id, ["job-1"])
    [ma] = get(a, queue_id, visibility_in_seconds=3)
    assert ma.delivery_count == 1
    ext = a.update_message(queue_id, ma.receipt, UpdateMessageDetails(visibility_in_seconds=3)).data
    assert ext.visible_after >= ma.visible_after
    assert get(b, queue_id, visibility_in_seconds=30) == []
    mb, at = get_one_when_visible(b, queue_id, timeout=15, visibility_in_seconds=30)
    assert at >= ext.visible_after - timedelta(milliseconds=100)
    assert mb.id == ma.id and mb.content == "job-1" and mb.delivery_count == 2
    assert_receipt_rejected(a, queue_id, ma.receipt)
    b.delete_message(queue_id, mb.receipt)
    wait_for_counts(b, queue_id, queue=(0, 0))


# --------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------

def test_update_messages_batch_reports_per_entry_results(qc, raw, queue_id):
    put(qc, queue_id, ["b1", "b2"])
    m1, m2 = get(qc, queue_id, limit=2, visibility_in_seconds=30)
    t = now_utc()
    res = qc.update_messages(queue_id, UpdateMessagesDetails(entries=[
        UpdateMessagesDetailsEntry(receipt=m1.receipt, visibility_in_seconds=10),
        UpdateMessagesDetailsEntry(receipt=b64url(48), visibility_in_seconds=10),
        UpdateMessagesDetailsEntry(receipt=m2.receipt, visibility_in_seconds=43201),
        UpdateMessagesDetailsEntry(receipt=m2.receipt, visibility_in_seconds=20),
    ])).data
    assert res.client_failures == 2 and res.server_failures == 0
    e = res.entries
    assert len(e) == 4
    assert e[0].id == m1.id and e[0].error_code is None
    assert abs(approx_seconds(e[0].visible_after, t) - 10) < 2
    assert e[1].error_code == 404 and e[1].error_message
    assert e[2].error_code == 400 and e[2].error_message
    assert e[3].id == m2.id and e[3].error_code is None

    # Wire level: errorCode is a JSON integer.
    r = raw.request("POST", qpath(queue_id, "messages", "actions", "updateMessages"),
                    {"entries": [{"receipt": "garbage", "visibilityInSeconds": 5}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["clientFailures"] == 1 and body["serverFailures"] == 0
    assert body["entries"][0]["errorCode"] == 404 and isinstance(body["entries"][0]["errorCode"], int)


def test_delete_messages_batch_reports_per_entry_results(qc, raw, queue_id):
    put(qc, queue_id, ["d1", "d2", "d3"])
    m1, m2 = get(qc, queue_id, limit=2, visibility_in_seconds=30)
    res = qc.delete_messages(queue_id, DeleteMessagesDetails(entries=[
        DeleteMessagesDetailsEntry(receipt=m1.receipt),
        DeleteMessagesDetailsEntry(receipt="garbage"),
        DeleteMessagesDetailsEntry(receipt=m2.receipt),
    ])).data
    assert res.client_failures == 1 and res.server_failures == 0
    assert [x.error_code for x in res.entries] == [None, 404, None]
    assert res.entries[1].error_message
    wait_for_counts(qc, queue_id, queue=(1, 0))
    assert [m.content for m in get(qc, queue_id, visibility_in_seconds=30)] == ["d3"]

    r = raw.request("POST", qpath(queue_id, "messages", "actions", "deleteMessages"),
                    {"entries": [{"receipt": m1.receipt}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["clientFailures"] == 1
    assert isinstance(body["entries"][0]["errorCode"], int) and body["entries"][0]["errorCode"] == 404


def test_one_put_can_mix_channels_and_returns_results_in_order(qc, queue_id):
    resp = qc.put_messages(queue_id, PutMessagesDetails(messages=[
        entry("x0"), entry("x1", "mix-a"), entry("x2", "mix-b", {"k": "v"}), entry("x3")]))
    put_ids = [m.id for m in resp.data.messages]
    got = collect(qc, queue_id, 4, timeout=10)
    by_id = {m.id: m for m in got}
    assert [by_id[i].content for i in put_ids] == ["x0", "x1", "x2", "x3"]


# --------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------

def test_get_stats_counts_visible_in_flight_and_size(qc, admin, queue_id):
    st = stats(qc, queue_id)
    assert counts(st) == ((0, 0), (0, 0))
    assert st.queue.size_in_bytes == 0
    put(qc, queue_id, ["a" * 100, "b" * 200, "c" * 300])
    wait_for_counts(qc, queue_id, queue=(3, 0), dlq=(0, 0))
    assert stats(qc, queue_id).queue.size_in_bytes >= 600
    [m] = get(qc, queue_id, visibility_in_seconds=30)
    wait_for_counts(qc, queue_id, queue=(2, 1))
    qc.delete_message(queue_id, m.receipt)
    wait_for_counts(qc, queue_id, queue=(2, 0))
    assert stats(qc, queue_id).queue.size_in_bytes >= 500
    purge_queue(admin, queue_id, "NORMAL")
    wait_for_counts(qc, queue_id, queue=(0, 0), timeout=5)
    assert stats(qc, queue_id).queue.size_in_bytes == 0
    assert get(qc, queue_id) == []

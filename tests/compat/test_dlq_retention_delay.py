"""Dead letter queue (incl. Berth's DLQ-consume and redrive extensions),
retention, and delivery delay (Berth extension)."""

from __future__ import annotations

import time

from berthlib import (API, approx_seconds, assert_error, get, get_one_when_visible, now_utc, purge_queue, put,
                      qpath, sleep_until, wait_for_counts)

DLQ = {"deadLetterQueue": "true"}


def dead_letter(qc, queue_id, channel_filter=None):
    """Deliver the next message once with a 1 s lease and let the lease run out
    (on a queue with deadLetterQueueDeliveryCount=1 that sends it to the DLQ)."""
    kw = {"channel_filter": channel_filter} if channel_filter else {}
    [m] = get(qc, queue_id, visibility_in_seconds=1, **kw)
    return m


def raw_get_dlq(raw, queue_id, **params):
    p = {"timeoutInSeconds": 0, "visibilityInSeconds": 30, "limit": 32, **DLQ, **params}
    r = raw.request("GET", qpath(queue_id, "messages"), params=p)
    assert r.status_code == 200, r.text
    return r.json()["messages"]


def redrive(raw, queue_id, body=None):
    r = raw.request("POST", qpath(queue_id, "actions", "redrive"), body)
    assert r.status_code == 200, r.text
    moved = r.json()["messagesMoved"]
    assert isinstance(moved, int)
    return moved


# --------------------------------------------------------------------------
# DLQ
# --------------------------------------------------------------------------

def test_message_moves_to_dlq_after_max_deliveries(qc, make_queue):
    qid = make_queue(dead_letter_queue_delivery_count=2)
    put(qc, qid, ["poison"])
    [m1] = get(qc, qid, visibility_in_seconds=1)
    assert m1.delivery_count == 1
    m2, _ = get_one_when_visible(qc, qid, timeout=10, visibility_in_seconds=1)
    assert m2.id == m1.id and m2.delivery_count == 2
    sleep_until(m2.visible_after, margin=0.2)
    wait_for_counts(qc, qid, queue=(0, 0), dlq=(1, 0), timeout=10)
    assert get(qc, qid, timeout_in_seconds=1) == []


def test_without_dlq_a_message_is_redelivered_indefinitely(qc, make_queue):
    qid = make_queue()  # deadLetterQueueDeliveryCount defaults to 0: no DLQ
    put(qc, qid, ["again"])
    for expected in range(1, 5):
        [m] = get(qc, qid, visibility_in_seconds=0)
        assert m.delivery_count == expected
    wait_for_counts(qc, qid, queue=(1, 0), dlq=(0, 0))


def test_dlq_can_be_consumed_with_dead_letter_queue_flag(qc, raw, make_queue):
    qid = make_queue(dead_letter_queue_delivery_count=1)
    put(qc, qid, ["d1", "d2", "d3"])
    dead = [dead_letter(qc, qid) for _ in range(3)]
    wait_for_counts(qc, qid, queue=(0, 0), dlq=(3, 0), timeout=10)

    msgs = raw_get_dlq(raw, qid)
    assert [m["content"] for m in msgs] == ["d1", "d2", "d3"]
    assert [m["id"] for m in msgs] == [m.id for m in dead]
    wait_for_counts(qc, qid, dlq=(0, 3))
    d1, d2, d3 = msgs

    r = raw.request("PUT", qpath(qid, "messages", d1["receipt"]), {"visibilityInSeconds": 60}, params=DLQ)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == d1["id"]
    r = raw.request("DELETE", qpath(qid, "messages", d1["receipt"]), params=DLQ)
    assert 200 <= r.status_code < 300, r.text
    r = raw.request("POST", qpath(qid, "messages", "actions", "updateMessages"),
                    {"entries": [{"receipt": d2["receipt"], "visibilityInSeconds": 60}]}, params=DLQ)
    assert r.status_code == 200 and r.json()["clientFailures"] == 0, r.text
    r = raw.request("POST", qpath(qid, "messages", "actions", "deleteMessages"),
                    {"entries": [{"receipt": d2["receipt"]}, {"receipt": d3["receipt"]}]}, params=DLQ)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["clientFailures"] == 0 and len(body["entries"]) == 2
    assert not any(e.get("errorCode") for e in body["entries"])
    wait_for_counts(qc, qid, queue=(0, 0), dlq=(0, 0))


def test_redrive_moves_dlq_messages_back_with_delivery_count_reset(qc, raw, make_queue):
    qid = make_queue(dead_letter_queue_delivery_count=1)
    put(qc, qid, ["r1", "r2"])
    dead_letter(qc, qid)
    dead_letter(qc, qid)
    wait_for_counts(qc, qid, queue=(0, 0), dlq=(2, 0), timeout=10)
    assert redrive(raw, qid) == 2
    wait_for_counts(qc, qid, queue=(2, 0), dlq=(0, 0))
    msgs = get(qc, qid, limit=10, visibility_in_seconds=30)
    assert sorted(m.content for m in msgs) == ["r1", "r2"]
    assert [m.delivery_count for m in msgs] == [1, 1]
    assert redrive(raw, qid) == 0


def test_redrive_with_channel_ids_moves_only_those_channels(qc, raw, make_queue):
    qid = make_queue(dead_letter_queue_delivery_count=1)
    put(qc, qid, ["a"], channel_id="rd-a")
    put(qc, qid, ["b"], channel_id="rd-b")
    dead_letter(qc, qid, "rd-a")
    dead_letter(qc, qid, "rd-b")
    wait_for_counts(qc, qid, queue=(0, 0), dlq=(2, 0), timeout=10)
    assert redrive(raw, qid, {"channelIds": ["rd-a"]}) == 1
    wait_for_counts(qc, qid, channel_id="rd-a", queue=(1, 0), dlq=(0, 0))
    wait_for_counts(qc, qid, channel_id="rd-b", queue=(0, 0), dlq=(1, 0))
    [m] = get(qc, qid, channel_filter="rd-a", visibility_in_seconds=30)
    assert m.content == "a" and m.delivery_count == 1


def test_purge_dlq_and_both(qc, admin, make_queue):
    qid = make_queue(dead_letter_queue_delivery_count=1)
    put(qc, qid, ["dead-1", "live-1"])
    dead_letter(qc, qid)
    wait_for_counts(qc, qid, queue=(1, 0), dlq=(1, 0), timeout=10)

    purge_queue(admin, qid, "DLQ")
    wait_for_counts(qc, qid, queue=(1, 0), dlq=(0, 0), timeout=5)

    put(qc, qid, ["dead-2"])
    [live] = get(qc, qid, visibility_in_seconds=60)      # FIFO: live-1 first; keep it in flight
    assert live.content == "live-1"
    assert dead_letter(qc, qid).content == "dead-2"
    wait_for_counts(qc, qid, queue=(0, 1), dlq=(1, 0), timeout=10)

    purge_queue(admin, qid, "BOTH")
    wait_for_counts(qc, qid, queue=(0, 0), dlq=(0, 0), timeout=5)


def test_purge_normal_leaves_the_dlq(qc, admin, make_queue):
    qid = make_queue(dead_letter_queue_delivery_count=1)
    put(qc, qid, ["to-dlq", "normal"])
    dead_letter(qc, qid)
    wait_for_counts(qc, qid, queue=(1, 0), dlq=(1, 0), timeout=10)
    purge_queue(admin, qid, "NORMAL")
    wait_for_counts(qc, qid, queue=(0, 0), dlq=(1, 0), timeout=5)


# --------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------

def test_retention_expires_messages(qc, make_queue):
    qid = make_queue(retention_in_seconds=10)
    [p] = put(qc, qid, ["short-lived"])
    [m] = get(qc, qid, visibility_in_seconds=1)
    assert abs(approx_seconds(m.expire_after, m.created_at) - 10) < 0.01
    assert abs(approx_seconds(p.expire_after, m.created_at) - 10) < 0.01
    assert approx_seconds(m.expire_after, now_utc()) > 8
    sleep_until(m.expire_after, margin=0.5)
    assert get(qc, qid, timeout_in_seconds=1) == []
    wait_for_counts(qc, qid, queue=(0, 0), dlq=(0, 0), timeout=5)


# --------------------------------------------------------------------------
# Delivery delay (Berth extension)
# --------------------------------------------------------------------------

def test_put_with_delay_in_seconds_defers_delivery(qc, raw, queue_id):
    t0 = time.monotonic()
    r = raw.request("POST", qpath(queue_id, "messages"),
                    {"messages": [{"content": "later", "delayInSeconds": 2}, {"content": "now"}]})
    assert r.status_code == 200, r.text
    msgs = get(qc, queue_id, limit=5, visibility_in_seconds=30)
    assert [m.content for m in msgs] == ["now"]
    late, _ = get_one_when_visible(qc, queue_id, timeout=10, visibility_in_seconds=30)
    assert late.content == "later" and late.delivery_count == 1
    assert time.monotonic() - t0 >= 1.9


def test_delay_in_seconds_out_of_range_is_400(raw, make_queue):
    qid = make_queue(retention_in_seconds=60)
    for bad in (-1, 61):
        r = raw.request("POST", qpath(qid, "messages"), {"messages": [{"content": "x", "delayInSeconds": bad}]})
        assert_error(r, 400, "InvalidParameter")


def test_queue_delivery_delay_default_round_trips_and_applies(qc, raw, tenant):
    qid = raw.create_queue(tenant.compartment_id, deliveryDelayInSeconds=2)
    assert raw.get_queue(qid)["deliveryDelayInSeconds"] == 2

    t0 = time.monotonic()
    put(qc, qid, ["delayed-by-queue"])
    assert get(qc, qid) == []
    m, _ = get_one_when_visible(qc, qid, timeout=10, visibility_in_seconds=30)
    assert m.content == "delayed-by-queue"
    assert time.monotonic() - t0 >= 1.9

    # A per-message delay overrides the queue default.
    r = raw.request("POST", qpath(qid, "messages"), {"messages": [{"content": "no-delay", "delayInSeconds": 0}]})
    assert r.status_code == 200, r.text
    assert [x.content for x in get(qc, qid, visibility_in_seconds=30)] == ["no-delay"]

    r = raw.request("PUT", qpath(qid), {"deliveryDelayInSeconds": 0})
    assert r.status_code == 202, r.text
    raw.wait_work_request(r.headers["opc-work-request-id"])
    assert raw.get_queue(qid)["deliveryDelayInSeconds"] == 0
    put(qc, qid, ["immediate"])
    assert [x.content for x in get(qc, qid, visibility_in_seconds=30)] == ["immediate"]


def test_queue_delivery_delay_out_of_range_is_400(raw, tenant):
    r = raw.request("POST", f"{API}/queues", {"displayName": "bad-delay", "compartmentId": tenant.compartment_id,
                                               "deliveryDelayInSeconds": 604801})
    assert_error(r, 400, "InvalidParameter")
    r = raw.request("POST", f"{API}/queues", {"displayName": "bad-delay", "compartmentId": tenant.compartment_id,
                                               "deliveryDelayInSeconds": -1})
    assert_error(r, 400, "InvalidParameter")

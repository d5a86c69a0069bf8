"""Peek (Berth extension): `GET /queues/{id}/peek` lists messages with their bodies
without leasing them, signed like every other request (the SDK's signer)."""

from __future__ import annotations

from berthlib import assert_error, counts, get, put, qpath, stats, wait_for_counts


def peek(raw, queue_id, **params):
    """One page: (messages, the opc-next-page cursor or None)."""
    r = raw.request("GET", qpath(queue_id, "peek"), params=params)
    assert r.status_code == 200, r.text
    return r.json()["messages"], r.headers.get("opc-next-page")


def test_peek_shows_bodies_in_order_and_leases_nothing(qc, raw, make_queue):
    qid = make_queue()
    put(qc, qid, ["p1", "p2"], channel_id="pk-a", custom_properties={"kind": "order"})
    put(qc, qid, ["p3"])
    shown, next_page = peek(raw, qid)
    assert next_page is None
    assert [m["content"] for m in shown] == ["p1", "p2", "p3"]
    assert [m["state"] for m in shown] == ["VISIBLE"] * 3
    assert [m["deliveryCount"] for m in shown] == [0, 0, 0]
    assert shown[0]["metadata"] == {"channelId": "pk-a", "customProperties": {"kind": "order"}}
    assert "metadata" not in shown[2]
    assert all("receipt" not in m for m in shown), "a peek must never hand out a receipt"
    assert ids_rise(shown)
    # Looking changed nothing: still visible, and the first delivery counts 1.
    assert counts(stats(qc, qid)) == ((3, 0), (0, 0))
    got = get(qc, qid, limit=10, visibility_in_seconds=30)
    assert sorted(m.content for m in got) == ["p1", "p2", "p3"]
    assert {m.delivery_count for m in got} == {1}


def ids_rise(messages) -> bool:
    ids = [m["id"] for m in messages]
    return ids == sorted(ids) and len(set(ids)) == len(ids)


def test_peek_lists_in_flight_and_delayed_messages_only_when_asked(qc, raw, make_queue):
    qid = make_queue()
    put(qc, qid, ["leased", "ready"])
    r = raw.request("POST", qpath(qid, "messages"), {"messages": [{"content": "later", "delayInSeconds": 60}]})
    assert r.status_code == 200, r.text
    [m] = get(qc, qid, limit=1, visibility_in_seconds=60)
    assert m.content == "leased"
    assert [m["content"] for m in peek(raw, qid)[0]] == ["ready"]
    shown, _ = peek(raw, qid, includeInFlight="true", includeDelayed="true")
    assert [(m["content"], m["state"], m["deliveryCount"]) for m in shown] == [
        ("leased", "IN_FLIGHT", 1), ("ready", "VISIBLE", 0), ("later", "DELAYED", 0)]
    assert [m["content"] for m in peek(raw, qid, includeDelayed="true")[0]] == ["ready", "later"]


def test_peek_pages_through_a_queue_and_one_channel(qc, raw, make_queue):
    qid = make_queue()
    put(qc, qid, [f"m{i}" for i in range(5)])
    put(qc, qid, ["c0", "c1", "c2"], channel_id="pk-c")
    seen, page, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"page": page} if page else {})}
        shown, page = peek(raw, qid, **params)
        pages += 1
        seen.extend(shown)
        if page is None:
            break
    assert [m["content"] for m in seen] == ["m0", "m1", "m2", "m3", "m4", "c0", "c1", "c2"]
    assert pages == 3 and ids_rise(seen)
    shown, page = peek(raw, qid, channelId="pk-c", limit=2)
    assert [m["content"] for m in shown] == ["c0", "c1"]
    shown, page = peek(raw, qid, channelId="pk-c", limit=2, page=page)
    assert ([m["content"] for m in shown], page) == (["c2"], None)


def test_peek_shows_the_dead_letter_queue(qc, raw, make_queue):
    qid = make_queue(dead_letter_queue_delivery_count=1)
    put(qc, qid, ["poison", "fine"])
    [m] = get(qc, qid, limit=1, visibility_in_seconds=1)
    assert m.content == "poison"
    wait_for_counts(qc, qid, queue=(1, 0), dlq=(1, 0), timeout=10)
    shown, _ = peek(raw, qid, deadLetterQueue="true")
    assert [(m["content"], m["deliveryCount"], m["state"]) for m in shown] == [("poison", 1, "VISIBLE")]
    assert [m["content"] for m in peek(raw, qid)[0]] == ["fine"]


def test_peek_errors_are_oci_errors(raw, make_queue, tenant_b):
    qid = make_queue()
    for bad in ({"limit": 0}, {"limit": 101}, {"page": "not-a-cursor"}, {"channelId": "x" * 300}):
        assert_error(raw.request("GET", qpath(qid, "peek"), params=bad), 400, "InvalidParameter")
    assert_error(raw.request("GET", qpath(qid + "x", "peek")), 404, "NotAuthorizedOrNotFound")
    # Another tenancy's queue is not found, not shown.
    assert_error(tenant_b.raw.request("GET", qpath(qid, "peek")), 404, "NotAuthorizedOrNotFound")
    assert_error(raw.request("GET", qpath(qid, "peek"), auth=None), 401, "NotAuthenticated")

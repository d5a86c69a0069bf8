"""STOMP end to end with stomp.py (1.0, 1.1, 1.2): SEND / SUBSCRIBE / ACK /
NACK, mixing STOMP and REST on one queue, channels, prefetch, visibility,
redelivery, DLQ, authentication, tenancy isolation and SIGTERM.
Wire-level checks over raw sockets are in test_stomp_protocol.py, TLS in
test_tls.py."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from berthlib import (HEART_BEAT_RE, SERVER_HEADER_RE, STOMP_DEFAULT_PREFETCH, STOMP_VERSIONS, assert_error_frame,
                      assert_message_headers, channel_of, collect, counts, destination, epoch_ms_now, error_text,
                      fake_queue_id, get, put, stats, unique_name, wait_for_counts)

EMPTY = ((0, 0), (0, 0))


def oci_id(msg) -> int:
    return int(msg.headers["oci-message-id"])


# --------------------------------------------------------------------------
# Connecting and logging in
# --------------------------------------------------------------------------

@pytest.mark.parametrize("version", STOMP_VERSIONS)
def test_connected_frame_reports_version_server_and_session(stomp_client, tenant, version):
    s = stomp_client(connect=False, version=version)
    h = s.connect(tenant.stomp_login, tenant.stomp_passcode).headers
    assert h.get("version") == version, h
    assert SERVER_HEADER_RE.match(h.get("server", "")), h
    assert h.get("session"), h
    if version != "1.0":
        assert HEART_BEAT_RE.match(h.get("heart-beat", "")), h


def test_credentials_create_gives_a_stomp_login_of_tenancy_and_user(server, stomp_client, tmp_path):
    assert re.fullmatch(r"[^/]+/[^/]+", server.tenant().stomp_login)
    tenancy = unique_name("stomp-tenancy")
    bob = server.create_credentials(tenancy, "bob", tmp_path / "bob")
    assert bob.stomp_login == f"{tenancy}/bob"
    assert bob.stomp_passcode
    stomp_client(who=bob)  # logs in


BAD_LOGINS = {
    "wrong passcode": lambda t: (t.stomp_login, t.stomp_passcode + "x"),
    "missing passcode": lambda t: (t.stomp_login, None),
    "unknown user": lambda t: (t.stomp_login.split("/")[0] + "/nobody-" + uuid.uuid4().hex[:8], t.stomp_passcode),
    "unknown tenancy": lambda t: ("no-such-tenancy-" + uuid.uuid4().hex[:8] + "/" + t.stomp_login.split("/")[1],
                                  t.stomp_passcode),
    "login without slash": lambda t: (t.stomp_login.replace("/", ""), t.stomp_passcode),
    "missing login": lambda t: (None, t.stomp_passcode),
}


@pytest.mark.parametrize("version", ["1.0", "1.2"])
@pytest.mark.parametrize("case", BAD_LOGINS)
def test_bad_credentials_get_an_error_frame_and_the_connection_closes(stomp_client, tenant, case, version):
    login, passcode = BAD_LOGINS[case](tenant)
    s = stomp_client(connect=False, version=version)
    assert_error_frame(s.connect_expect_error(login, passcode))


def test_another_users_passcode_does_not_log_in(stomp_client, tenant, tenant_b):
    s = stomp_client(connect=False)
    assert_error_frame(s.connect_expect_error(tenant.stomp_login, tenant_b.stomp_passcode))


# --------------------------------------------------------------------------
# STOMP -> REST, REST -> STOMP
# --------------------------------------------------------------------------

@pytest.mark.parametrize("version", STOMP_VERSIONS)
def test_message_sent_with_receipt_is_readable_over_rest(stomp_client, qc, make_queue, version):
    qid = make_queue()
    text = f"héllo ☃ 𝄞 over STOMP {version}"
    stomp_client(version=version).send(destination(qid), text)
    # The RECEIPT means the message is stored: no polling needed.
    [m] = get(qc, qid)
    assert (m.content, m.delivery_count, channel_of(m)) == (text, 1, None)


def test_message_sent_without_receipt_is_enqueued(stomp_client, qc, make_queue):
    qid = make_queue()
    stomp_client().send(destination(qid), "fire and forget", receipt=False)
    [m] = collect(qc, qid, 1, timeout=5)
    assert m.content == "fire and forget"


def test_send_to_a_channel_destination_puts_the_message_in_that_channel(stomp_client, qc, make_queue):
    qid = make_queue()
    s = stomp_client()
    s.send(destination(qid, "ch-a"), "in channel a")
    s.send(destination(qid), "queue level")
    [m] = get(qc, qid, channel_filter="ch-a")
    assert (m.content, channel_of(m)) == ("in channel a", "ch-a")
    [m] = get(qc, qid)
    assert (m.content, channel_of(m)) == ("queue level", None)


def test_message_put_over_rest_arrives_with_content_and_oci_headers(stomp_client, qc, make_queue):
    qid = make_queue(retention_in_seconds=3600)
    content = "ünïcødé ☃ " + "x" * 100
    [p] = put(qc, qid, [content])
    s = stomp_client()
    sub = s.subscribe(destination(qid), visibility=20)
    [m] = s.wait_messages(1)
    now = epoch_ms_now()
    h = assert_message_headers(m, qid, sub)
    assert m.body == content
    assert h["oci-message-id"] == str(p.id)
    assert abs(int(h["visible-after"]) - (now + 20_000)) < 3000, h
    assert abs(int(h["expire-after"]) - p.expire_after.timestamp() * 1000) < 1500, (h, p.expire_after)
    assert counts(stats(qc, qid)) == ((0, 1), (0, 0))


@pytest.mark.parametrize("version", STOMP_VERSIONS)
def test_send_subscribe_ack_round_trip(stomp_client, qc, make_queue, version):
    """1.2 ACKs with `id` = the MESSAGE's `ack`; 1.0/1.1 with `message-id`
    (which then is the receipt, not the numeric id)."""
    qid = make_queue()
    s = stomp_client(version=version)
    bodies = [f"{version}-{i}" for i in range(3)]
    for b in bodies:
        s.send(destination(qid), b)
    sub = s.subscribe(destination(qid))
    msgs = s.wait_messages(3)
    assert [m.body for m in msgs] == bodies
    for m in msgs:
        assert_message_headers(m, qid, sub, version=version)
    assert len({oci_id(m) for m in msgs}) == 3
    for m in msgs:
        s.ack(m)
    assert counts(stats(qc, qid)) == EMPTY
    assert len(s.messages_after(0.5)) == 3


# --------------------------------------------------------------------------
# NACK, visibility, redelivery, DLQ
# --------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_redelivers_at_once_with_the_delivery_count_kept(stomp_client, qc, make_queue, version):
    qid = make_queue(visibility_in_seconds=30)
    put(qc, qid, ["again"])
    s = stomp_client(version=version)
    sub = s.subscribe(destination(qid))
    [m1] = s.wait_messages(1)
    assert_message_headers(m1, qid, sub, delivery_count=1, version=version)
    s.nack(m1)
    m2 = s.wait_messages(2, timeout=5)[1]  # well before the 30 s lease would have ended
    assert_message_headers(m2, qid, sub, delivery_count=2, version=version)
    assert oci_id(m2) == oci_id(m1) and m2.body == "again"
    assert s.ack_id(m2) != s.ack_id(m1), "a new lease needs a new receipt"
    s.ack(m2)
    assert counts(stats(qc, qid)) == EMPTY


def test_message_nacked_up_to_the_dlq_delivery_count_moves_to_the_dlq(stomp_client, qc, make_queue):
    qid = make_queue(dead_letter_queue_delivery_count=2)
    put(qc, qid, ["poison"])
    s = stomp_client()
    sub = s.subscribe(destination(qid))
    [m1] = s.wait_messages(1)
    assert_message_headers(m1, qid, sub, delivery_count=1)
    s.nack(m1)
    m2 = s.wait_messages(2, timeout=5)[1]
    assert_message_headers(m2, qid, sub, delivery_count=2)
    s.nack(m2)
    wait_for_counts(qc, qid, queue=(0, 0), dlq=(1, 0), timeout=5)
    assert len(s.messages_after(1.0)) == 2


def test_subscribe_visibility_sets_the_lease_and_an_expired_lease_is_redelivered(stomp_client, qc, make_queue):
    qid = make_queue(visibility_in_seconds=30)
    put(qc, qid, ["short lease"])
    s = stomp_client()
    sub = s.subscribe(destination(qid), visibility=2)
    [m1] = s.wait_messages(1)
    t1, now = time.monotonic(), epoch_ms_now()
    assert abs(int(m1.headers["visible-after"]) - (now + 2000)) < 1500, m1.headers
    assert counts(stats(qc, qid)) == ((0, 1), (0, 0))
    m2 = s.wait_messages(2, timeout=8)[1]
    assert time.monotonic() - t1 >= 1.5, "redelivered before the 2 s lease ended"
    assert_message_headers(m2, qid, sub, delivery_count=2)
    assert oci_id(m2) == oci_id(m1)
    s.ack(m2)
    assert counts(stats(qc, qid)) == EMPTY


def test_default_visibility_is_the_queues_visibility(stomp_client, qc, make_queue):
    qid = make_queue(visibility_in_seconds=7)
    put(qc, qid, ["default lease"])
    s = stomp_client()
    s.subscribe(destination(qid))
    [m] = s.wait_messages(1)
    assert abs(int(m.headers["visible-after"]) - (epoch_ms_now() + 7000)) < 2000, m.headers


def test_ack_after_the_lease_expired_is_an_error_and_closes_the_connection(stomp_client, qc, make_queue):
    qid = make_queue()
    put(qc, qid, ["too slow"])
    s = stomp_client()
    s.subscribe(destination(qid), visibility=1)
    [m] = s.wait_messages(1)
    time.sleep(max(0.0, int(m.headers["visible-after"]) / 1000 - time.time()) + 0.5)  # the lease must run out
    s.ack(m, receipt=False)
    assert_error_frame(s.expect_error_and_close(), r"expire|lease|receipt|invalid")
    [again] = collect(qc, qid, 1, timeout=5)  # not deleted
    assert again.content == "too slow" and again.delivery_count >= 2


# --------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------

def test_channel_subscription_gets_only_that_channels_messages(stomp_client, qc, make_queue):
    qid = make_queue()
    put(qc, qid, ["a1", "a2", "a3"], channel_id="ch-a")
    put(qc, qid, ["b1", "b2"], channel_id="ch-b")
    put(qc, qid, ["q1"])
    s = stomp_client()
    sub = s.subscribe(destination(qid, "ch-a"))
    msgs = s.wait_messages(3)
    assert [m.body for m in msgs] == ["a1", "a2", "a3"]
    for m in msgs:
        assert_message_headers(m, qid, sub, channel_id="ch-a")
    assert len(s.messages_after(1.0)) == 3
    assert counts(stats(qc, qid, "ch-b"))[0] == (2, 0)
    for m in msgs:
        s.ack(m)
    rest = collect(qc, qid, 3, timeout=5)
    assert sorted((m.content, channel_of(m)) for m in rest) == [("b1", "ch-b"), ("b2", "ch-b"), ("q1", None)]


def test_queue_subscription_names_each_messages_channel_in_destination(stomp_client, qc, make_queue):
    qid = make_queue()
    put(qc, qid, ["plain"])
    put(qc, qid, ["channelled"], channel_id="ch-x")
    s = stomp_client()
    sub = s.subscribe(destination(qid))
    by_body = {m.body: m for m in s.wait_messages(2)}
    assert set(by_body) == {"plain", "channelled"}
    assert_message_headers(by_body["plain"], qid, sub)
    assert_message_headers(by_body["channelled"], qid, sub, channel_id="ch-x")


# --------------------------------------------------------------------------
# Prefetch
# --------------------------------------------------------------------------

def test_prefetch_caps_the_unacknowledged_messages_of_a_subscription(stomp_client, qc, make_queue):
    qid = make_queue()
    put(qc, qid, [f"m{i}" for i in range(10)])
    s = stomp_client()
    s.subscribe(destination(qid), prefetch=3)
    s.wait_messages(3)
    got = s.messages_after(1.5)
    assert [m.body for m in got] == ["m0", "m1", "m2"]
    assert counts(stats(qc, qid))[0] == (7, 3)
    s.ack(got[0])
    s.wait_messages(4, timeout=5)
    got = s.messages_after(1.0)
    assert [m.body for m in got] == ["m0", "m1", "m2", "m3"]
    assert counts(stats(qc, qid))[0] == (6, 3)


def test_rabbitmq_s_prefetch_count_header_caps_the_window_too(stomp_client, qc, make_queue):
    qid = make_queue()
    put(qc, qid, [f"m{i}" for i in range(6)])
    s = stomp_client()
    s.subscribe(destination(qid), **{"prefetch-count": 2})
    s.wait_messages(2)
    assert [m.body for m in s.messages_after(1.5)] == ["m0", "m1"]
    assert counts(stats(qc, qid))[0] == (4, 2)


def test_default_prefetch_is_20(stomp_client, qc, make_queue):
    qid = make_queue()
    put(qc, qid, [f"m{i}" for i in range(STOMP_DEFAULT_PREFETCH + 5)])
    s = stomp_client()
    s.subscribe(destination(qid))
    s.wait_messages(STOMP_DEFAULT_PREFETCH)
    assert len(s.messages_after(1.5)) == STOMP_DEFAULT_PREFETCH
    assert counts(stats(qc, qid))[0] == (5, STOMP_DEFAULT_PREFETCH)


# --------------------------------------------------------------------------
# Releasing leases: dropped connections, UNSUBSCRIBE, DISCONNECT
# --------------------------------------------------------------------------

def test_dropped_connection_releases_unacknowledged_messages_at_once(stomp_client, qc, make_queue):
    qid = make_queue(visibility_in_seconds=60)
    put(qc, qid, ["d1", "d2"])
    s = stomp_client()
    s.subscribe(destination(qid))
    s.wait_messages(2)
    s.drop()
    got = collect(qc, qid, 2, timeout=3)  # long before the 60 s lease ends
    assert sorted((m.content, m.delivery_count) for m in got) == [("d1", 2), ("d2", 2)]


def test_unsubscribe_releases_unacknowledged_messages_and_stops_delivery(stomp_client, qc, make_queue):
    qid = make_queue(visibility_in_seconds=60)
    put(qc, qid, ["u1", "u2"])
    s = stomp_client()
    sub = s.subscribe(destination(qid))
    s.wait_messages(2)
    s.unsubscribe(sub)
    got = collect(qc, qid, 2, timeout=3)
    assert sorted((m.content, m.delivery_count) for m in got) == [("u1", 2), ("u2", 2)]
    put(qc, qid, ["after unsubscribe"])
    assert len(s.messages_after(1.0)) == 2
    assert counts(stats(qc, qid))[0] == (1, 2)
    s.disconnect()  # the connection itself is still usable


def test_disconnect_with_receipt_releases_unacknowledged_messages(stomp_client, qc, make_queue):
    qid = make_queue(visibility_in_seconds=60)
    put(qc, qid, ["x1"])
    s = stomp_client()
    s.subscribe(destination(qid))
    s.wait_messages(1)
    s.disconnect()
    [m] = collect(qc, qid, 1, timeout=3)
    assert (m.content, m.delivery_count) == ("x1", 2)


# --------------------------------------------------------------------------
# Tenancy isolation
# --------------------------------------------------------------------------

def refused(stomp_client, who, target: str, frame: str) -> str:
    """The ERROR text `who` gets for SEND or SUBSCRIBE on target (queue id
    replaced by a placeholder), after which the server must close."""
    s = stomp_client(who=who)
    if frame == "SEND":
        s.conn.send(destination(target), "intruder", headers={"receipt": "r-isolation"})
    else:
        s.conn.subscribe(destination(target), "sub-isolation", ack="client-individual",
                         headers={"receipt": "r-isolation"})
    err = s.expect_error_and_close()
    assert_error_frame(err)
    assert "r-isolation" not in s.listener.receipts
    return error_text(err).replace(target, "<queue>")


@pytest.mark.parametrize("frame", ["SEND", "SUBSCRIBE"])
def test_other_tenancys_queue_is_refused_like_a_queue_that_does_not_exist(stomp_client, tenant_b, qc, make_queue,
                                                                          frame):
    qid = make_queue()
    put(qc, qid, ["private"])
    foreign = refused(stomp_client, tenant_b, qid, frame)
    missing = refused(stomp_client, tenant_b, fake_queue_id(), frame)
    assert foreign == missing
    assert counts(stats(qc, qid)) == ((1, 0), (0, 0))


def test_second_tenancy_uses_stomp_on_its_own_queue(stomp_client, tenant_b):
    qid = tenant_b.create_queue()
    s = stomp_client(who=tenant_b)
    s.send(destination(qid), "mine")
    sub = s.subscribe(destination(qid))
    [m] = s.wait_messages(1)
    assert_message_headers(m, qid, sub)
    s.ack(m)
    assert counts(stats(tenant_b.qc, qid)) == EMPTY



# --------------------------------------------------------------------------
# Pipelining: frames written back to back, answered in order
# --------------------------------------------------------------------------

def test_pipelined_sends_are_receipted_in_order_and_survive_kill_9(fresh_server, stomp_client):
    srv = fresh_server()
    t = srv.tenant()
    qid = t.create_queue("pipelined")
    s = stomp_client(who=t, srv=srv)
    bodies = [f"p-{i}" for i in range(500)]
    rids = [s._receipt(True) for _ in bodies]
    for rid, body in zip(rids, bodies):
        s.conn.send(destination(qid), body, headers={"receipt": rid})
    assert s.wait_receipts(rids) == rids, "RECEIPTs out of SEND order"

    srv.kill()
    srv.start()
    t = srv.tenant()
    got = collect(t.qc, qid, len(bodies), timeout=30)
    assert [m.content for m in got] == bodies, "receipted SENDs lost or out of order after kill -9"


def test_pipelined_acks_are_receipted_in_order_and_delete_every_message(stomp_client, qc, make_queue):
    qid = make_queue()
    put(qc, qid, [f"a-{i}" for i in range(20)])
    put(qc, qid, [f"a-{i}" for i in range(20, 40)])
    s = stomp_client()
    s.subscribe(destination(qid), prefetch=40)
    msgs = s.wait_messages(40)
    rids = [s._receipt(True) for _ in msgs]
    for rid, msg in zip(rids, msgs):
        s.conn.send_frame("ACK", {"id": msg.headers["ack"], "receipt": rid})
    assert s.wait_receipts(rids) == rids, "RECEIPTs out of ACK order"
    assert counts(stats(qc, qid)) == EMPTY

# --------------------------------------------------------------------------
# Shutdown
# --------------------------------------------------------------------------

def test_sigterm_sends_error_to_subscribers_and_leases_last_until_visibility_ends(fresh_server, stomp_client):
    srv = fresh_server()
    t = srv.tenant()
    qid = t.create_queue(visibility_in_seconds=30)
    put(t.qc, qid, ["s1", "s2"])
    s = stomp_client(who=t, srv=srv)
    s.subscribe(destination(qid), visibility=10)
    msgs = s.wait_messages(2)
    visible_at = max(int(m.headers["visible-after"]) for m in msgs) / 1000

    srv.terminate()
    assert_error_frame(s.expect_error_and_close(timeout=10), r"shut")
    assert srv.wait(15) == 0

    srv.start()
    t = srv.tenant()
    assert time.time() < visible_at - 1, "restart took too long to observe the lease"
    assert get(t.qc, qid) == [], "leases of a shut-down connection must last until their visibility ends"
    got = collect(t.qc, qid, 2, timeout=visible_at - time.time() + 5)
    assert time.time() >= visible_at - 0.5
    assert sorted((m.content, m.delivery_count) for m in got) == [("s1", 2), ("s2", 2)]

"""STOMP at the wire level, over raw sockets: version negotiation, CONNECTED
headers, DISCONNECT, heart-beats, the idle timeout, and input the server
must refuse with an ERROR frame (saying what was wrong) before closing the
connection."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from berthlib import (HEART_BEAT_RE, error_text, wait_for, MAX_MESSAGE_BYTES, SERVER_HEADER_RE, STOMP_MAX_FRAME_BYTES, STOMP_MAX_HEADERS,
                      assert_error_frame, collect, counts, epoch_ms_now, get, put, stats)

EMPTY = ((0, 0), (0, 0))
TOO_BIG = r"large|size|long|big|limit|exceed|bytes|KiB|MiB"


@pytest.fixture
def conn(raw_stomp, tenant):
    """A raw STOMP 1.2 connection to the session server, logged in as the admin."""
    s = raw_stomp()
    s.login(tenant)
    return s


def subscribe(conn, queue_id: str, **headers) -> None:
    conn.send_frame("SUBSCRIBE", {"destination": queue_id, "id": "s1", "ack": "client-individual", **headers})


# --------------------------------------------------------------------------
# CONNECT / CONNECTED / DISCONNECT
# --------------------------------------------------------------------------

NEGOTIATION = [(cmd, accept, expected)
               for accept, expected in [("1.0", "1.0"), ("1.1", "1.1"), ("1.2", "1.2"), ("1.0,1.1", "1.1"),
                                        ("1.1,1.2", "1.2"), ("1.0,1.1,1.2", "1.2"), ("1.2,1.0", "1.2")]
               for cmd in ("CONNECT", "STOMP") if not (cmd == "STOMP" and accept == "1.0")]


@pytest.mark.parametrize("command,accept,expected", NEGOTIATION)
def test_connect_negotiates_the_highest_common_version(raw_stomp, tenant, command, accept, expected):
    f = raw_stomp().login(tenant, accept_version=accept, command=command)
    assert f.headers.get("version") == expected, f.headers


def test_connect_without_accept_version_is_stomp_1_0(raw_stomp, tenant):
    f = raw_stomp().login(tenant, accept_version=None)
    assert f.headers.get("version", "1.0") == "1.0", f.headers


def test_connected_frame_names_the_server_a_session_and_heart_beats(raw_stomp, tenant):
    a = raw_stomp().login(tenant).headers
    b = raw_stomp().login(tenant).headers
    assert SERVER_HEADER_RE.match(a.get("server", "")), a
    assert HEART_BEAT_RE.match(a.get("heart-beat", "")), a
    assert a.get("session") and b.get("session") and a["session"] != b["session"], (a, b)


def test_disconnect_with_receipt_gets_the_receipt_then_the_server_closes(conn):
    conn.request("DISCONNECT")
    conn.assert_closed(5)


# --------------------------------------------------------------------------
# Heart-beats and idle connections
# --------------------------------------------------------------------------

def test_server_sends_heart_beats_as_often_as_the_client_asks(raw_stomp, tenant):
    s = raw_stomp()
    hb = s.login(tenant, heart_beat="0,1000").headers.get("heart-beat", "")
    t0 = time.monotonic()
    assert HEART_BEAT_RE.match(hb), hb
    sends, expects = map(int, hb.split(","))
    assert 0 < sends <= 1000 and expects == 0, f"server promises heart-beats every {sends} ms, expects {expects} ms"
    assert s.listen(3.5) == [], "no frames expected, only heart-beats"
    assert not s.eof, "server closed the connection"
    beats = [b - t0 for b in s.heartbeats if b >= t0]
    gaps = [b - a for a, b in zip([0.0] + beats, beats + [3.5])]
    assert len(beats) >= 3 and max(gaps) <= 1.6, f"heart-beats at {beats}"


def test_silent_connection_is_closed_after_the_idle_timeout(fresh_server, raw_stomp):
    srv = fresh_server(["--stomp-idle-timeout", "2s"])
    t = srv.tenant()
    qid = t.create_queue()
    quiet, busy = raw_stomp(srv), raw_stomp(srv)
    quiet.login(t)
    busy.login(t)
    t0 = time.monotonic()
    closed: dict = {}

    def watch():
        closed["frames"] = quiet.listen(8)
        closed["after"] = time.monotonic() - t0 if quiet.eof else None

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    sent = 0
    while time.monotonic() - t0 < 4.5:  # a client that keeps sending frames is not idle
        busy.request("SEND", {"destination": qid}, f"keep-alive {sent}")
        sent += 1
        time.sleep(0.5)
    watcher.join(10)
    assert closed.get("after") is not None, "silent connection was not closed"
    assert 1.5 <= closed["after"] <= 4.5, f"closed after {closed['after']:.1f}s (idle timeout 2s)"
    assert all(f.command == "ERROR" for f in closed["frames"]), closed["frames"]
    busy.request("DISCONNECT")
    assert counts(stats(t.qc, qid))[0] == (sent, 0)


# --------------------------------------------------------------------------
# Size and header limits
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["huge header", "unterminated body"])
def test_frame_over_1_mib_is_refused(conn, qc, queue_id, shape):
    if shape == "huge header":
        conn.send_frame_ignoring_reset("SEND", [("destination", queue_id),
                                                ("receipt", "r" * (STOMP_MAX_FRAME_BYTES + 1024))], "small")
    else:  # no content-length and no NUL: the server must give up at the limit, not buffer on
        head = f"SEND\ndestination:{queue_id}\n\n".encode()
        try:
            conn.send_raw(head + b"a" * (STOMP_MAX_FRAME_BYTES + 1024))
        except OSError:
            pass
    assert_error_frame(conn.expect_error_and_close(), TOO_BIG)
    assert counts(stats(qc, queue_id)) == EMPTY


def test_frame_with_64_headers_is_accepted(conn, qc, queue_id):
    # 62 x destination (the first one counts) + content-length + receipt
    conn.request("SEND", [("destination", queue_id)] * (STOMP_MAX_HEADERS - 2), "64 headers")
    [m] = get(qc, queue_id)
    assert m.content == "64 headers"


def test_frame_with_more_than_64_headers_is_refused(conn, qc, queue_id):
    # 63 x destination + receipt + content-length = 65
    conn.send_frame("SEND", [("destination", queue_id)] * (STOMP_MAX_HEADERS - 1) + [("receipt", "r-65")],
                    "65 headers")
    assert_error_frame(conn.expect_error_and_close(), r"header")
    assert counts(stats(qc, queue_id)) == EMPTY


def test_non_utf8_header_is_refused(conn, qc, queue_id):
    conn.send_frame("SEND", [("destination", queue_id), ("receipt", b"r-\xff\xfe")], "bad header")
    assert_error_frame(conn.expect_error_and_close(), r"utf|encod")
    assert counts(stats(qc, queue_id)) == EMPTY


def test_send_body_of_exactly_128_kib_is_accepted(conn, qc, queue_id):
    body = "é" * (MAX_MESSAGE_BYTES // 2)  # 131072 bytes
    conn.request("SEND", {"destination": queue_id}, body)
    [m] = get(qc, queue_id)
    assert m.content == body


@pytest.mark.parametrize("body", ["b" * (MAX_MESSAGE_BYTES + 1), "é" * (MAX_MESSAGE_BYTES // 2 + 1)],
                         ids=["131073 ascii bytes", "65537 two-byte chars"])
def test_send_body_over_128_kib_is_refused(conn, qc, queue_id, body):
    conn.send_frame("SEND", {"destination": queue_id, "receipt": "r-big"}, body)
    assert_error_frame(conn.expect_error_and_close(), TOO_BIG)
    assert counts(stats(qc, queue_id)) == EMPTY


@pytest.mark.parametrize("body", [b"", b"\xff\xfe not utf-8"], ids=["empty", "not utf-8"])
def test_send_body_that_is_not_a_valid_message_is_refused(conn, qc, queue_id, body):
    conn.send_frame("SEND", {"destination": queue_id, "receipt": "r-body"}, body, content_length=True)
    assert_error_frame(conn.expect_error_and_close())
    assert counts(stats(qc, queue_id)) == EMPTY


# --------------------------------------------------------------------------
# Unsupported frames and headers
# --------------------------------------------------------------------------

def test_unknown_command_is_refused(conn):
    conn.send_frame("FROBNICATE", {"receipt": "r-unknown"})
    assert_error_frame(conn.expect_error_and_close(), r"unknown|unsupported|not supported|invalid|FROBNICATE")


@pytest.mark.parametrize("command", ["BEGIN", "COMMIT", "ABORT"])
def test_transaction_frames_are_refused(conn, command):
    conn.send_frame(command, {"transaction": "tx-1"})
    assert_error_frame(conn.expect_error_and_close(), r"transaction|unsupported|not supported|" + command)


def test_transaction_header_on_send_is_refused(conn, qc, queue_id):
    conn.send_frame("SEND", {"destination": queue_id, "transaction": "tx-1", "receipt": "r-tx"}, "in a transaction")
    assert_error_frame(conn.expect_error_and_close(), r"transaction")
    assert counts(stats(qc, queue_id)) == EMPTY


def test_transaction_header_on_ack_is_refused_and_the_message_is_kept(conn, qc, queue_id):
    put(qc, queue_id, ["held"])
    subscribe(conn, queue_id)
    m = conn.expect("MESSAGE")
    conn.send_frame("ACK", {"id": m.headers["ack"], "transaction": "tx-1", "receipt": "r-tx"})
    assert_error_frame(conn.expect_error_and_close(), r"transaction")
    [again] = collect(qc, queue_id, 1, timeout=5)  # released when the connection closed, not deleted
    assert again.content == "held"


# --------------------------------------------------------------------------
# SUBSCRIBE headers
# --------------------------------------------------------------------------

@pytest.mark.parametrize("ack", ["auto", "client", None])
def test_subscribe_requires_client_individual_ack(conn, qc, queue_id, ack):
    put(qc, queue_id, ["not for auto-ack"])
    h = {"destination": queue_id, "id": "s1"}
    if ack is not None:
        h["ack"] = ack
    conn.send_frame("SUBSCRIBE", h)
    assert_error_frame(conn.expect_error_and_close(), r"ack|client-individual")
    assert not [f for f in conn.frames if f.command == "MESSAGE"]
    assert counts(stats(qc, queue_id)) == ((1, 0), (0, 0))


@pytest.mark.parametrize("header,value", [("prefetch", "0"), ("prefetch", "1001"), ("prefetch", "many"),
                                          ("visibility", "43201"), ("visibility", "-1")])
def test_subscribe_refuses_prefetch_and_visibility_out_of_range(conn, queue_id, header, value):
    subscribe(conn, queue_id, **{header: value})
    assert_error_frame(conn.expect_error_and_close(), header)


def test_subscribe_accepts_the_largest_prefetch_and_visibility(conn, qc, queue_id):
    put(qc, queue_id, ["long lease"])
    subscribe(conn, queue_id, prefetch="1000", visibility="43200")
    m = conn.expect("MESSAGE")
    assert m.body == "long lease".encode()
    assert abs(int(m.headers["visible-after"]) - (epoch_ms_now() + 43_200_000)) < 5000, m.headers


# --------------------------------------------------------------------------
# Failed logins
# --------------------------------------------------------------------------

def test_repeated_failed_logins_are_logged_and_slowed_and_a_success_clears_them(fresh_server, raw_stomp):
    srv = fresh_server()
    t = srv.tenant()
    took = []
    for _ in range(7):
        s = raw_stomp(srv)
        started = time.monotonic()
        f = s.connect(t.stomp_login, "wrong-passcode", timeout=30)
        took.append(time.monotonic() - started)
        assert f.command == "ERROR" and "login failed" in error_text(f)
        s.close()
    # Three free failures; from the 4th on, each attempt books the next one a doubling
    # delay later (0.25 s, 0.5 s, ...).
    assert max(took[:5]) < 0.25, took
    assert took[5] >= 0.2 and took[6] >= 0.4, f"wrong passcodes in a row were not slowed: {took}"
    # Parallel connections do not buy more guesses: their attempts take turns, and those
    # whose turn is more than 5 s away are refused at once instead of holding a connection.
    many = [raw_stomp(srv) for _ in range(6)]
    started = time.monotonic()
    for s in many:
        s.send_frame("CONNECT", {"accept-version": "1.2", "host": "berth", "login": t.stomp_login,
                                 "passcode": "wrong"})

    def answer(s):
        f = s.read_frame(timeout=60)
        assert f.command == "ERROR", f
        return time.monotonic() - started, error_text(f)

    with concurrent.futures.ThreadPoolExecutor(len(many)) as pool:
        answers = list(pool.map(answer, many))
    refused = [took for took, text in answers if "too many failed logins" in text]
    checked = [took for took, text in answers if "login failed" in text]
    assert refused and checked, answers
    assert max(refused) < 2, f"refused attempts are answered at once: {answers}"
    assert max(checked) >= 2, f"checked attempts after 7 failures take turns: {answers}"
    assert time.monotonic() - started < 8, answers
    ok = raw_stomp(srv)
    ok.login(t, timeout=30)
    s = raw_stomp(srv)
    started = time.monotonic()
    assert s.connect(t.stomp_login, "wrong-again").command == "ERROR"
    assert time.monotonic() - started < 0.25, "a success clears the address's failures"
    wait_for(lambda: srv.stderr_log.read_text().count("STOMP login failed") == 8 + len(checked), timeout=10,
             desc="a warning per failed login")
    assert srv.stderr_log.read_text().count("STOMP login refused") == len(refused)
    log = srv.stderr_log.read_text()
    assert "peer=127.0.0.1:" in log and f'login="{t.stomp_login}"' in log

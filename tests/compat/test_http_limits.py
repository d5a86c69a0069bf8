"""The HTTP edge under hostile or unlucky clients, on the real binary over real sockets:
idle and slow connections are cut, a connection cap holds the rest in the kernel backlog,
the server raises its open-files limit, and requests hyper would answer bare (too many
headers, a long target, a malformed chunked body) or that overflow paging get OCI's error
shape with an opc-request-id.
"""

from __future__ import annotations

import json
import resource
import socket
import time
from contextlib import contextmanager

import pytest

from berthlib import API, assert_error, put, split_addr, unique_name, wait_for


def connect(addr: str) -> socket.socket:
    s = socket.create_connection(split_addr(addr), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def is_closed(s: socket.socket) -> bool:
    """True once the server has closed (EOF or reset); False while it is open and silent."""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        s.setblocking(True)


def exchange(addr: str, raw: bytes, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Sends raw bytes, reads one response (until its content-length or EOF)."""
    with connect(addr) as s:
        s.settimeout(timeout)
        s.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body


def assert_oci_error(status: int, headers: dict, body: bytes, want_status: int, want_code: str) -> None:
    assert status == want_status, (status, body[:300])
    assert headers.get("opc-request-id"), headers
    parsed = json.loads(body)
    assert parsed["code"] == want_code and parsed["message"], parsed


@contextmanager
def open_files_soft_limit(limit: int):
    """Runs the block with this process's soft open-files limit set (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def server_soft_limit(pid: int) -> int:
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line")


def test_idle_connections_are_closed_after_the_idle_timeout_kept_alive_ones_too(fresh_server):
    srv = fresh_server(["--http-idle-timeout", "1s", "--http-header-timeout", "1s"])
    idle = [connect(srv.http_addr) for _ in range(50)]
    kept_alive = connect(srv.http_addr)
    kept_alive.sendall(b"GET /health HTTP/1.1\r\nHost: berth\r\n\r\n")
    assert b"200 OK" in kept_alive.recv(4096)
    assert not is_closed(kept_alive), "kept alive right after its response"
    wait_for(lambda: all(is_closed(s) for s in idle + [kept_alive]), timeout=10, desc="idle connections closed")
    for s in idle + [kept_alive]:
        s.close()


def test_a_slow_header_sender_is_cut_at_the_header_deadline_while_an_idle_connection_stays(fresh_server):
    srv = fresh_server(["--http-idle-timeout", "60s", "--http-header-timeout", "1s"])
    idle = connect(srv.http_addr)
    slow = connect(srv.http_addr)
    slow.sendall(b"GET /health HTTP/1.1\r\n")
    started = time.monotonic()
    closed = False
    # One header byte every 200 ms: the head never completes.
    while time.monotonic() - started < 10:
        try:
            slow.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if is_closed(slow):
            closed = True
            break
        time.sleep(0.2)
    assert closed, "a head trickled byte by byte is never cut"
    assert time.monotonic() - started < 5
    assert not is_closed(idle), "an idle connection gets the idle timeout, not the header timeout"
    idle.close()
    slow.close()


def test_rest_answers_while_2000_idle_and_200_slow_connections_are_held(fresh_server):
    # The server starts with the common soft limit of 1,024 open files and must raise it.
    with open_files_soft_limit(1024):
        srv = fresh_server()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2400:
        pytest.skip(f"hard open-files limit {hard} is too low to hold 2,200 connections")
    assert server_soft_limit(srv.proc.pid) == hard, "the server did not raise its open-files limit"
    tenant = srv.tenant()
    queue_id = tenant.create_queue(unique_name("held"))
    with open_files_soft_limit(hard):
        held = [connect(srv.http_addr) for _ in range(2000)]
        slow = [connect(srv.http_addr) for _ in range(200)]
        try:
            for s in slow:
                s.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
            qc = tenant.new_queue_client()
            for round_ in range(20):
                put(qc, queue_id, [f"m{round_}"])
                got = qc.get_messages(queue_id, limit=1, timeout_in_seconds=0).data.messages
                assert [m.content for m in got] == [f"m{round_}"]
                qc.delete_message(queue_id, got[0].receipt)
            assert srv.health().status_code == 200
            # STOMP shares the file table: it still accepts while HTTP holds 2,200.
            with socket.create_connection(split_addr(srv.stomp_addr), timeout=10) as stomp:
                stomp.sendall(b"STOMP\naccept-version:1.2\nhost:berth\n\n\x00")
                assert stomp.recv(4096).startswith(b"ERROR")  # no login: refused, but served
        finally:
            for s in held + slow:
                s.close()


def test_connections_past_the_cap_wait_for_a_slot(fresh_server):
    srv = fresh_server(["--http-max-connections", "8"])
    held = [connect(srv.http_addr) for _ in range(8)]
    waiting = connect(srv.http_addr)  # the kernel completes the handshake; Berth does not accept yet
    waiting.sendall(b"GET /health HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n")
    waiting.settimeout(1.0)
    with pytest.raises(socket.timeout):
        waiting.recv(4096)
    held.pop().close()
    waiting.settimeout(10)
    assert b"200 OK" in waiting.recv(4096), "served once a slot freed up"
    for s in held + [waiting]:
        s.close()


@pytest.mark.parametrize("path", [f"{API}/queues", f"{API}/workRequests"])
def test_a_page_past_any_list_is_invalid_not_the_first_page(signed_request, tenant, path):
    resp = signed_request("GET", path, params={"compartmentId": tenant.compartment_id, "limit": 1,
                                               "page": "9223372036854775808"})
    assert_error(resp, 400, "InvalidParameter")
    assert "opc-next-page" not in resp.headers


def test_too_many_headers_get_oci_error_shape(server):
    headers = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(150))
    status, h, body = exchange(server.http_addr, f"GET /health HTTP/1.1\r\nHost: b\r\n{headers}\r\n".encode())
    assert_oci_error(status, h, body, 431, "RequestHeaderFieldsTooLarge")


def test_a_long_request_target_gets_oci_error_shape(server):
    target = f"{API}/queues?compartmentId=" + "x" * 10_000
    status, h, body = exchange(server.http_addr, f"GET {target} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
    assert_oci_error(status, h, body, 414, "UriTooLong")


def test_a_malformed_chunked_body_is_400_not_413(server):
    raw = (f"POST {API}/queues HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
           "Transfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n").encode()
    status, h, body = exchange(server.http_addr, raw)
    assert_oci_error(status, h, body, 400, "CannotParseRequest")


@pytest.mark.parametrize("raw, status, code", [
    (b"GET /health HTTP/1.1 extra\r\nHost: b\r\n\r\n", 400, "CannotParseRequest"),  # bad request line
    (b"GET /health HTTP/1.1\r\nHost: b\r\nX-Nul: a\x00b\r\n\r\n", 400, "CannotParseRequest"),
    (b"POST /health HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab", 400,
     "CannotParseRequest"),
    (b"GET /health HTTP/1.1\r\nHost: b\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(500)) + b"\r\n", 431,
     "RequestHeaderFieldsTooLarge"),  # past hyper's own header limit
], ids=["request-line", "nul-in-header", "conflicting-content-length", "500-headers"])
def test_requests_hyper_cannot_parse_get_oci_error_shape(server, raw, status, code):
    got_status, headers, body = exchange(server.http_addr, raw)
    assert_oci_error(got_status, headers, body, status, code)
    assert headers.get("connection") == "close"


def test_a_kept_alive_connection_still_answers_after_a_good_request(server):
    """After a request's own answer, the next unparsable head on the same connection is shaped too."""
    with connect(server.http_addr) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: b\r\n\r\n")
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 200") and b"opc-request-id" in first
        s.sendall(b"BAD REQUEST LINE\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 400") and b"CannotParseRequest" in data, data


def test_a_client_that_stops_reading_its_answers_is_cut_at_the_idle_timeout(fresh_server):
    srv = fresh_server(["--http-idle-timeout", "2s"])
    t = srv.tenant()
    queue_id = t.create_queue(unique_name("slow-reader"))
    big = "x" * (128 * 1024)
    for _ in range(16):  # 64 messages of 128 KiB: four GetMessages answers of 2 MiB each
        put(t.qc, queue_id, [big] * 4)
    prepared = t.raw.prepare("GET", f"{API}/queues/{queue_id}/messages",
                             params={"limit": 16, "timeoutInSeconds": 0, "visibilityInSeconds": 600})
    head = f"GET {prepared.path_url} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in prepared.headers.items())
    request = (head + "\r\n").encode()

    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect, so the window stays small
    s.connect(split_addr(srv.http_addr))
    s.sendall(request * 4)  # pipelined: more answer than the kernel's buffers hold
    time.sleep(6)  # reads nothing for three idle timeouts
    s.settimeout(10)
    received = 0
    try:
        while chunk := s.recv(1 << 20):
            received += len(chunk)
    except ConnectionResetError:
        pass
    s.close()
    assert received < 4 * 16 * len(big), f"the connection was not cut: {received} bytes arrived"
    assert srv.health().status_code == 200

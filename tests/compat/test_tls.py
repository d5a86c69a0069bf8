"""TLS: `--stomp-tls-cert/--stomp-tls-key` make the STOMP port TLS-only and
`--http-tls-cert/--http-tls-key` the HTTP port HTTPS-only. One server per
module with both, on a self-signed certificate for 127.0.0.1 (IP SAN) that
the clients trust explicitly."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests

from berthlib import (BerthServer, RawStomp, assert_message_headers, berth_bin, client_ssl_context, counts,
                      destination, get, make_self_signed_cert, put, read_raw_until_closed, stats)

EMPTY = ((0, 0), (0, 0))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("berth-tls")
    cert, key = make_self_signed_cert(root / "tls")
    tls_args = ["--stomp-tls-cert", cert, "--stomp-tls-key", key, "--http-tls-cert", cert, "--http-tls-key", key]
    srv = BerthServer(berth_bin(), root / "data", root / "logs", tls_args)
    srv.start()
    yield srv
    if srv.running:
        srv.stop()


@pytest.fixture(scope="module")
def tls_tenant(tls_server):
    return tls_server.tenant()


def test_stomp_over_tls_sends_subscribes_and_acks(tls_server, tls_tenant, stomp_client):
    qid = tls_tenant.create_queue()
    s = stomp_client(who=tls_tenant, srv=tls_server)  # stomp.py with set_ssl(ca_certs=cert)
    s.send(destination(qid), "over tls")
    sub = s.subscribe(destination(qid))
    [m] = s.wait_messages(1)
    assert m.body == "over tls"
    assert_message_headers(m, qid, sub)
    s.ack(m)
    assert counts(stats(tls_tenant.qc, qid)) == EMPTY


def test_tls_stomp_client_verifying_the_ip_san_connects(tls_server, tls_tenant, raw_stomp):
    s = raw_stomp(tls_server, ssl_context=client_ssl_context(tls_server.stomp_ca))
    assert s.login(tls_tenant).headers.get("version") == "1.2"


def test_the_startup_line_names_the_tls_schemes(tls_server):
    lines = [l for l in tls_server.stdout_log.read_text().splitlines() if l.startswith("listening ")]
    assert lines[-1] == f"listening https={tls_server.http_addr} stomp+tls={tls_server.stomp_addr}", lines


def test_oci_sdk_over_https_creates_a_queue_and_moves_messages(tls_server, tls_tenant):
    assert tls_tenant.base == f"https://{tls_server.http_addr}"
    qid = tls_tenant.create_queue()
    endpoint = urlsplit(tls_tenant.admin.get_queue(qid).data.messages_endpoint)
    assert (endpoint.scheme, endpoint.netloc) == ("https", tls_server.http_addr)
    put(tls_tenant.qc, qid, ["over https"])
    [m] = get(tls_tenant.qc, qid)
    assert m.content == "over https"
    tls_tenant.qc.delete_message(qid, m.receipt)
    assert counts(stats(tls_tenant.qc, qid)) == EMPTY
    assert tls_server.health().status_code == 200


def test_plain_tcp_stomp_to_the_tls_port_gets_no_connected(tls_server, tls_tenant):
    connect = RawStomp.encode("CONNECT", {"accept-version": "1.2", "host": "127.0.0.1",
                                          "login": tls_tenant.stomp_login, "passcode": tls_tenant.stomp_passcode})
    reply = read_raw_until_closed(tls_server.stomp_addr, connect, timeout=5)
    assert b"CONNECTED" not in reply, reply[:200]


def test_plain_http_to_the_https_port_gets_no_answer(tls_server):
    try:
        r = requests.get(f"http://{tls_server.http_addr}/health", timeout=5)
    except requests.RequestException:
        return
    assert r.status_code != 200, f"plain HTTP was served on the HTTPS port: {r.status_code} {r.text[:200]}"

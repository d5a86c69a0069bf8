"""Request signing (401 NotAuthenticated), tenancy isolation, --insecure-no-auth."""

from __future__ import annotations

import email.utils
import time

import oci
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oci.queue.models import (ChangeQueueCompartmentDetails, PurgeQueueDetails, PutMessagesDetails,
                              UpdateMessageDetails, UpdateQueueDetails)

from berthlib import (API, DEFAULT_VISIBILITY, NOT_FOUND, assert_error, entry, get, put, qpath,
                      raises_service_error, wait_for_counts, wait_work_request)


@pytest.fixture(scope="module")
def other_key_file(tmp_path_factory):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p = tmp_path_factory.mktemp("wrong-key") / "key.pem"
    p.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return str(p)


def test_health_needs_no_auth(server):
    r = server.health()
    assert r.status_code == 200


def test_unsigned_requests_are_401(raw, qc, queue_id, tenant):
    assert_error(raw.request("GET", f"{API}/queues", params={"compartmentId": tenant.compartment_id}, auth=None),
                 401, "NotAuthenticated")
    assert_error(raw.request("POST", qpath(queue_id, "messages"), {"messages": [{"content": "x"}]}, auth=None),
                 401, "NotAuthenticated")
    assert_error(raw.request("GET", qpath(queue_id, "messages"), params={"timeoutInSeconds": 0}, auth=None),
                 401, "NotAuthenticated")
    wait_for_counts(qc, queue_id, queue=(0, 0))


def test_signature_with_wrong_key_is_401(raw, tenant, other_key_file, queue_id):
    c = tenant.config
    wrong = oci.signer.Signer(c["tenancy"], c["user"], c["fingerprint"], other_key_file)
    assert_error(raw.request("GET", qpath(queue_id), auth=wrong), 401, "NotAuthenticated")
    assert_error(raw.request("POST", qpath(queue_id, "messages"), {"messages": [{"content": "x"}]}, auth=wrong),
                 401, "NotAuthenticated")


def test_unknown_key_id_is_401(raw, tenant, queue_id):
    c = tenant.config
    unknown_fp = oci.signer.Signer(c["tenancy"], c["user"], "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff",
                                   c["key_file"])
    assert_error(raw.request("GET", qpath(queue_id), auth=unknown_fp), 401, "NotAuthenticated")
    unknown_user = oci.signer.Signer(c["tenancy"], "ocid1.user.oc1..nobody", c["fingerprint"], c["key_file"])
    assert_error(raw.request("GET", qpath(queue_id), auth=unknown_user), 401, "NotAuthenticated")


def test_tampered_body_is_401(raw, qc, queue_id):
    body = b'{"messages": [{"content": "original"}]}'
    req = raw.prepare("POST", qpath(queue_id, "messages"), body)
    tampered = body.replace(b"original", b"tampered")
    assert len(tampered) == len(body)
    req.body = tampered   # x-content-sha256 and the signature still describe the original body
    assert_error(raw.send(req), 401, "NotAuthenticated")
    wait_for_counts(qc, queue_id, queue=(0, 0))


def test_tampered_path_is_401(raw, queue_id, make_queue):
    other = make_queue()
    req = raw.prepare("GET", qpath(queue_id, "stats"))
    req.url = req.url.replace(qpath(queue_id), qpath(other))
    assert_error(raw.send(req), 401, "NotAuthenticated")


@pytest.mark.parametrize("skew", [-600, 600])
def test_date_more_than_5_minutes_off_is_401(raw, queue_id, skew):
    date = email.utils.formatdate(time.time() + skew, usegmt=True)
    assert_error(raw.request("GET", qpath(queue_id), headers={"date": date}), 401, "NotAuthenticated")
    assert_error(raw.request("POST", qpath(queue_id, "messages"), {"messages": [{"content": "x"}]},
                             headers={"date": date}), 401, "NotAuthenticated")


def test_date_within_5_minutes_is_accepted(raw, queue_id):
    date = email.utils.formatdate(time.time() - 120, usegmt=True)
    r = raw.request("GET", qpath(queue_id), headers={"date": date})
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------
# Tenancy isolation
# --------------------------------------------------------------------------

def test_second_tenancy_credentials_work_without_restart(tenant, tenant_b):
    assert tenant_b.tenancy_id != tenant.tenancy_id
    assert tenant_b.config["user"] != tenant.config["user"]
    qid = tenant_b.create_queue()
    q = tenant_b.admin.get_queue(qid).data
    assert q.compartment_id == tenant_b.compartment_id
    put(tenant_b.qc, qid, ["b-message"])
    assert [m.content for m in get(tenant_b.qc, qid, visibility_in_seconds=30)] == ["b-message"]


ISOLATED_OPS = {
    "get_queue": lambda b, q: b.admin.get_queue(q),
    "update_queue": lambda b, q: b.admin.update_queue(q, UpdateQueueDetails(visibility_in_seconds=7)),
    "delete_queue": lambda b, q: b.admin.delete_queue(q),
    "purge_queue": lambda b, q: b.admin.purge_queue(q, PurgeQueueDetails(purge_type="BOTH")),
    "change_compartment": lambda b, q: b.admin.change_queue_compartment(
        q, ChangeQueueCompartmentDetails(compartment_id=b.compartment_id)),
    "put_messages": lambda b, q: b.qc.put_messages(q, PutMessagesDetails(messages=[entry("intruder")])),
    "get_messages": lambda b, q: b.qc.get_messages(q, timeout_in_seconds=0),
    "get_stats": lambda b, q: b.qc.get_stats(q),
    "list_channels": lambda b, q: b.qc.list_channels(q),
}


@pytest.mark.parametrize("op", sorted(ISOLATED_OPS))
def test_other_tenancy_gets_404_on_every_operation(tenant, tenant_b, queue_id, op):
    put(tenant.qc, queue_id, ["private"], channel_id="secret")
    with raises_service_error(404, NOT_FOUND):
        ISOLATED_OPS[op](tenant_b, queue_id)
    q = tenant.admin.get_queue(queue_id).data            # A's queue is untouched
    assert q.lifecycle_state == "ACTIVE"
    assert q.visibility_in_seconds == DEFAULT_VISIBILITY
    assert q.compartment_id == tenant.compartment_id
    wait_for_counts(tenant.qc, queue_id, queue=(1, 0))


def test_other_tenancy_cannot_use_a_receipt(tenant, tenant_b, queue_id):
    put(tenant.qc, queue_id, ["mine"])
    [m] = get(tenant.qc, queue_id, visibility_in_seconds=30)
    with raises_service_error(404, NOT_FOUND):
        tenant_b.qc.update_message(queue_id, m.receipt, UpdateMessageDetails(visibility_in_seconds=0))
    with raises_service_error(404, NOT_FOUND):
        tenant_b.qc.delete_message(queue_id, m.receipt)
    tenant.qc.delete_message(queue_id, m.receipt)


def test_other_tenancy_cannot_read_work_requests(tenant, tenant_b):
    resp = tenant.admin.create_queue(oci.queue.models.CreateQueueDetails(
        display_name="wr-isolation", compartment_id=tenant.compartment_id))
    wr_id = resp.headers["opc-work-request-id"]
    wait_work_request(tenant.admin, wr_id)
    with raises_service_error(404, NOT_FOUND):
        tenant_b.admin.get_work_request(wr_id)
    ids = {w.id for w in oci.pagination.list_call_get_all_results(tenant_b.admin.list_work_requests).data}
    assert wr_id not in ids


def test_list_queues_shows_only_the_callers_tenancy(tenant, tenant_b, queue_id):
    b_queue = tenant_b.create_queue()
    b_ids = {q.id for q in oci.pagination.list_call_get_all_results(tenant_b.admin.list_queues).data}
    a_ids = {q.id for q in oci.pagination.list_call_get_all_results(tenant.admin.list_queues).data}
    assert b_queue in b_ids and queue_id not in b_ids
    assert queue_id in a_ids and b_queue not in a_ids
    # Naming A's compartment explicitly does not reveal A's queues either.
    try:
        items = tenant_b.admin.list_queues(compartment_id=tenant.compartment_id).data.items
    except oci.exceptions.ServiceError as e:
        assert e.status in (400, 401, 403, 404), e
    else:
        assert queue_id not in {q.id for q in items}


# --------------------------------------------------------------------------
# --insecure-no-auth
# --------------------------------------------------------------------------

def test_insecure_no_auth_accepts_unsigned_requests(fresh_server):
    srv = fresh_server(["--insecure-no-auth"])
    creds = srv.admin_creds()
    s = requests.Session()
    h = {"content-type": "application/json"}
    r = s.get(srv.base + f"{API}/queues", params={"compartmentId": creds["tenancyId"]}, headers=h, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []
    r = s.post(srv.base + f"{API}/queues", json={"displayName": "open", "compartmentId": creds["tenancyId"]},
               headers=h, timeout=10)
    assert r.status_code == 202, r.text
    # the signed SDK keeps working too
    t = srv.tenant()
    wr = wait_work_request(t.admin, r.headers["opc-work-request-id"])
    qid = wr.resources[0].identifier
    r = s.get(srv.base + qpath(qid), headers=h, timeout=10)
    assert r.status_code == 200 and r.json()["displayName"] == "open"
    r = s.post(srv.base + qpath(qid, "messages"), json={"messages": [{"content": "unsigned"}]}, headers=h, timeout=10)
    assert r.status_code == 200, r.text
    assert [m.content for m in get(t.qc, qid, visibility_in_seconds=30)] == ["unsigned"]

"""Validation limits, error codes and error-response shape."""

from __future__ import annotations

import oci
import pytest
from oci.queue.models import (ChangeQueueCompartmentDetails, CreateQueueDetails, PurgeQueueDetails,
                              PutMessagesDetails, UpdateMessageDetails, UpdateQueueDetails)

from berthlib import (API, MAX_GET_LIMIT, MAX_MESSAGE_BYTES, MAX_PUT_MESSAGES, MAX_PUT_TOTAL_BYTES, NOT_FOUND,
                      BerthServer, assert_error, berth_bin, entry, fake_compartment_id, fake_queue_id, get, put, qpath,
                      raises_service_error, store_env, unique_name, wait_for, wait_for_counts)


# --------------------------------------------------------------------------
# GetMessages parameters
# --------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    {"limit": 0}, {"limit": MAX_GET_LIMIT + 1},
    {"visibility_in_seconds": -1}, {"visibility_in_seconds": 43201},
    {"timeout_in_seconds": -1}, {"timeout_in_seconds": 31},
], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_get_messages_out_of_range_parameters_are_400(qc, queue_id, kw):
    with raises_service_error(400, "InvalidParameter"):
        qc.get_messages(queue_id, **{"timeout_in_seconds": 0, **kw})


def test_get_messages_accepts_boundary_parameters(qc, queue_id):
    put(qc, queue_id, ["x"])
    assert len(get(qc, queue_id, limit=MAX_GET_LIMIT, visibility_in_seconds=43200)) == 1
    assert get(qc, queue_id, limit=1, visibility_in_seconds=0, timeout_in_seconds=0) == []


def test_non_numeric_query_parameter_is_400(raw, queue_id):
    r = raw.request("GET", qpath(queue_id, "messages"), params={"limit": "lots", "timeoutInSeconds": 0})
    assert_error(r, 400, "InvalidParameter")


# --------------------------------------------------------------------------
# PutMessages limits
# --------------------------------------------------------------------------

def test_message_content_of_128_kib_is_accepted_and_one_byte_more_is_400(qc, queue_id):
    put(qc, queue_id, ["x" * MAX_MESSAGE_BYTES])
    with raises_service_error(400, "InvalidParameter"):
        put(qc, queue_id, ["x" * (MAX_MESSAGE_BYTES + 1)])
    [m] = get(qc, queue_id, visibility_in_seconds=30)
    assert len(m.content) == MAX_MESSAGE_BYTES


def test_content_size_counts_utf8_bytes(qc, queue_id):
    # 'é' is two bytes in UTF-8: 65537 of them is 131074 bytes.
    with raises_service_error(400, "InvalidParameter"):
        put(qc, queue_id, ["é" * (MAX_MESSAGE_BYTES // 2 + 1)])
    put(qc, queue_id, ["é" * (MAX_MESSAGE_BYTES // 2)])


def test_empty_content_is_400(qc, queue_id):
    with raises_service_error(400, "InvalidParameter"):
        qc.put_messages(queue_id, PutMessagesDetails(messages=[entry("")]))


def test_at_most_20_messages_per_put(qc, queue_id):
    qc.put_messages(queue_id, PutMessagesDetails(messages=[entry(str(i)) for i in range(MAX_PUT_MESSAGES)]))
    with raises_service_error(400, "InvalidParameter"):
        qc.put_messages(queue_id, PutMessagesDetails(messages=[entry(str(i)) for i in range(MAX_PUT_MESSAGES + 1)]))
    wait_for_counts(qc, queue_id, queue=(MAX_PUT_MESSAGES, 0))


def test_at_most_512_kib_of_content_per_put(qc, queue_id):
    big = "y" * MAX_MESSAGE_BYTES
    n = MAX_PUT_TOTAL_BYTES // MAX_MESSAGE_BYTES  # 4 messages of 128 KiB = 512 KiB exactly
    qc.put_messages(queue_id, PutMessagesDetails(messages=[entry(big) for _ in range(n)]))
    with raises_service_error(400, "InvalidParameter"):
        qc.put_messages(queue_id, PutMessagesDetails(messages=[entry(big) for _ in range(n)] + [entry("z")]))
    wait_for_counts(qc, queue_id, queue=(n, 0))


# --------------------------------------------------------------------------
# Queue settings limits
# --------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("visibility_in_seconds", -1), ("visibility_in_seconds", 43201),
    ("timeout_in_seconds", -1), ("timeout_in_seconds", 31),
    ("retention_in_seconds", 9), ("retention_in_seconds", 604801),
    ("dead_letter_queue_delivery_count", -1), ("dead_letter_queue_delivery_count", 21),
])
def test_create_queue_out_of_range_settings_are_400(admin, tenant, field, value):
    name = unique_name("bad")
    with raises_service_error(400, "InvalidParameter"):
        admin.create_queue(CreateQueueDetails(display_name=name, compartment_id=tenant.compartment_id,
                                              **{field: value}))
    assert admin.list_queues(display_name=name).data.items == []


@pytest.mark.parametrize("field,value", [
    ("visibility_in_seconds", 43201), ("timeout_in_seconds", 31), ("dead_letter_queue_delivery_count", 21),
])
def test_update_queue_out_of_range_settings_are_400(admin, queue_id, field, value):
    with raises_service_error(400, "InvalidParameter"):
        admin.update_queue(queue_id, UpdateQueueDetails(**{field: value}))


def test_update_message_visibility_out_of_range_is_400(qc, queue_id):
    put(qc, queue_id, ["x"])
    [m] = get(qc, queue_id, visibility_in_seconds=30)
    with raises_service_error(400, "InvalidParameter"):
        qc.update_message(queue_id, m.receipt, UpdateMessageDetails(visibility_in_seconds=43201))
    with raises_service_error(400, "InvalidParameter"):
        qc.update_message(queue_id, m.receipt, UpdateMessageDetails(visibility_in_seconds=-1))
    qc.delete_message(queue_id, m.receipt)  # the lease is untouched


def test_purge_with_invalid_purge_type_is_400(raw, queue_id):
    r = raw.request("POST", qpath(queue_id, "actions", "purge"), {"purgeType": "EVERYTHING"})
    assert_error(r, 400, "InvalidParameter")


# --------------------------------------------------------------------------
# Body parsing
# --------------------------------------------------------------------------

@pytest.mark.parametrize("path_fn,body", [
    (lambda q: qpath(q, "messages"), '{"messages": [ {"content": "x"'),
    (lambda q: f"{API}/queues", "not json at all"),
    (lambda q: qpath(q, "messages", "actions", "deleteMessages"), '{"entries": [}'),
], ids=["put", "create", "delete-batch"])
def test_malformed_json_is_400_cannot_parse_request(raw, queue_id, path_fn, body):
    assert_error(raw.request("POST", path_fn(queue_id), body), 400, "CannotParseRequest")


def test_missing_required_fields_are_400_missing_parameter(raw, tenant, queue_id):
    assert_error(raw.request("POST", qpath(queue_id, "messages"), {}), 400, "MissingParameter")
    assert_error(raw.request("POST", f"{API}/queues", {"displayName": unique_name()}), 400, "MissingParameter")
    assert_error(raw.request("POST", qpath(queue_id, "messages"), {"messages": [{"metadata": {}}]}),
                 400, "MissingParameter")
    assert_error(raw.request("POST", qpath(queue_id, "actions", "changeCompartment"), {}), 400, "MissingParameter")


def test_wrong_json_types_are_400_invalid_parameter(raw, tenant, queue_id):
    assert_error(raw.request("POST", qpath(queue_id, "messages"), {"messages": "x"}), 400, "InvalidParameter")
    assert_error(raw.request("POST", qpath(queue_id, "messages"), {"messages": [{"content": 5}]}),
                 400, "InvalidParameter")
    assert_error(raw.request("POST", f"{API}/queues", {"displayName": unique_name(),
                                                       "compartmentId": tenant.compartment_id,
                                                       "retentionInSeconds": "ten"}), 400, "InvalidParameter")
    assert_error(raw.request("PUT", qpath(queue_id), {"visibilityInSeconds": [1]}), 400, "InvalidParameter")


# --------------------------------------------------------------------------
# Unknown queue
# --------------------------------------------------------------------------

UNKNOWN_QUEUE_OPS = {
    "get_queue": lambda t, q: t.admin.get_queue(q),
    "update_queue": lambda t, q: t.admin.update_queue(q, UpdateQueueDetails(visibility_in_seconds=5)),
    "delete_queue": lambda t, q: t.admin.delete_queue(q),
    "purge_queue": lambda t, q: t.admin.purge_queue(q, PurgeQueueDetails(purge_type="NORMAL")),
    "change_compartment": lambda t, q: t.admin.change_queue_compartment(
        q, ChangeQueueCompartmentDetails(compartment_id=fake_compartment_id())),
    "put_messages": lambda t, q: t.qc.put_messages(q, PutMessagesDetails(messages=[entry("x")])),
    "get_messages": lambda t, q: t.qc.get_messages(q, timeout_in_seconds=0),
    "get_stats": lambda t, q: t.qc.get_stats(q),
    "list_channels": lambda t, q: t.qc.list_channels(q),
    "update_message": lambda t, q: t.qc.update_message(q, "some-receipt", UpdateMessageDetails(visibility_in_seconds=5)),
    "delete_message": lambda t, q: t.qc.delete_message(q, "some-receipt"),
}


@pytest.mark.parametrize("op", sorted(UNKNOWN_QUEUE_OPS))
def test_unknown_queue_is_404_not_authorized_or_not_found(tenant, op):
    with raises_service_error(404, NOT_FOUND):
        UNKNOWN_QUEUE_OPS[op](tenant, fake_queue_id())


# --------------------------------------------------------------------------
# Response shape
# --------------------------------------------------------------------------

def test_every_response_carries_opc_request_id(raw, server, tenant, queue_id):
    responses = [
        raw.request("GET", qpath(queue_id)),
        raw.request("GET", qpath(queue_id, "stats")),
        raw.request("POST", qpath(queue_id, "messages"), {"messages": [{"content": "x"}]}),
        raw.request("GET", qpath(queue_id, "messages"), params={"timeoutInSeconds": 0}),
        raw.request("GET", qpath(fake_queue_id())),
        raw.request("POST", qpath(queue_id, "messages"), "{bad"),
        raw.request("GET", f"{API}/queues", auth=None),
    ]
    for r in responses:
        assert r.headers.get("opc-request-id"), f"{r.request.method} {r.request.url} -> {r.status_code} lacks opc-request-id"
    for r in responses[4:]:
        assert_error(r, r.status_code)


# --------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------

def test_log_lines_of_a_request_carry_its_opc_request_id(tmp_path):
    env = {**store_env(), "RUST_LOG": "berth_server=debug"}
    server = BerthServer(berth_bin(), tmp_path / "data", tmp_path / "logs", env=env).start()
    try:
        tenant = server.tenant()
        with pytest.raises(oci.exceptions.ServiceError) as refused:
            tenant.admin.get_queue(fake_queue_id(), opc_request_id="trace-me-4711")
        assert refused.value.status == 404
        assert refused.value.request_id == "trace-me-4711"
        lines = wait_for(lambda: [line for line in server.stderr_log.read_text().splitlines()
                                  if "request refused" in line] or None, timeout=5)
        assert any("id=trace-me-4711" in line for line in lines), lines
    finally:
        server.kill()

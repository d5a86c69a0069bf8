"""Control plane: queues, work requests, etags, retry tokens, listing."""

from __future__ import annotations

import oci
import pytest
from oci.queue.models import (ChangeQueueCompartmentDetails, CreateQueueDetails, LargeMessagesCapabilityDetails,
                              UpdateQueueDetails)

from berthlib import (API, DEFAULT_CHANNEL_CONSUMPTION_LIMIT, DEFAULT_RETENTION, DEFAULT_TIMEOUT, DEFAULT_VISIBILITY,
                      NOT_FOUND, admin_client, create_queue, delete_queue, fake_compartment_id,
                      queue_id_from_resources, raises_service_error, unique_name, update_queue, wait_async,
                      wait_work_request)


def list_all_queues(admin, **kw):
    return oci.pagination.list_call_get_all_results(admin.list_queues, **kw).data


# --------------------------------------------------------------------------
# CreateQueue and its work request
# --------------------------------------------------------------------------

def test_create_queue_answers_202_with_work_request_header_and_no_body(admin, tenant):
    resp = admin.create_queue(CreateQueueDetails(display_name=unique_name(), compartment_id=tenant.compartment_id))
    assert resp.status == 202
    assert resp.data is None
    assert resp.headers.get("opc-work-request-id")
    assert resp.headers.get("opc-request-id")


def test_create_queue_raw_response_body_is_empty(raw, tenant):
    r = raw.request("POST", f"{API}/queues", {"displayName": unique_name(), "compartmentId": tenant.compartment_id})
    assert r.status_code == 202, r.text
    assert r.content == b""
    assert r.headers.get("opc-work-request-id")
    assert r.headers.get("opc-request-id")


def test_create_work_request_succeeds_and_names_the_new_queue(admin, tenant):
    resp = admin.create_queue(CreateQueueDetails(display_name=unique_name(), compartment_id=tenant.compartment_id))
    wr = wait_work_request(admin, resp.headers["opc-work-request-id"])
    assert wr.id == resp.headers["opc-work-request-id"]
    assert wr.status == "SUCCEEDED"
    assert wr.operation_type == "CREATE_QUEUE"
    assert wr.compartment_id == tenant.compartment_id
    assert wr.time_accepted is not None
    res = wr.resources[0]
    assert res.entity_type == "queue"
    assert res.action_type == "CREATED"
    assert res.identifier.startswith("ocid1.queue.")
    assert res.entity_uri == f"/queues/{res.identifier}"
    q = admin.get_queue(res.identifier).data
    assert q.id == res.identifier


def test_create_queue_and_wait_for_state_composite_with_default_sdk_client(tenant, server):
    # A client with the SDK's default retry strategy (which also adds an opc-retry-token).
    client = admin_client(tenant.config, server.base, default_retries=True)
    composite = oci.queue.QueueAdminClientCompositeOperations(client)
    name = unique_name("composite")
    result = composite.create_queue_and_wait_for_state(
        CreateQueueDetails(display_name=name, compartment_id=tenant.compartment_id),
        wait_for_states=["SUCCEEDED"],
        waiter_kwargs={"max_wait_seconds": 60, "max_interval_seconds": 1})
    assert result.data.status == "SUCCEEDED"
    qid = queue_id_from_resources(result.data.resources)
    q = client.get_queue(qid).data
    assert q.display_name == name
    assert q.lifecycle_state == "ACTIVE"


def test_new_queue_has_documented_defaults(admin, tenant, server):
    name = unique_name("defaults")
    qid = create_queue(admin, tenant.compartment_id, name)
    assert qid.startswith("ocid1.queue.")
    q = admin.get_queue(qid).data
    assert q.id == qid
    assert q.display_name == name
    assert q.compartment_id == tenant.compartment_id
    assert q.lifecycle_state == "ACTIVE"
    assert q.retention_in_seconds == DEFAULT_RETENTION
    assert q.visibility_in_seconds == DEFAULT_VISIBILITY
    assert q.timeout_in_seconds == DEFAULT_TIMEOUT
    assert q.dead_letter_queue_delivery_count == 0
    assert q.channel_consumption_limit == DEFAULT_CHANNEL_CONSUMPTION_LIMIT
    assert q.messages_endpoint == server.base
    assert q.time_created is not None and q.time_updated is not None
    assert q.time_updated >= q.time_created


def test_create_queue_stores_explicit_settings_and_tags(admin, tenant):
    qid = create_queue(admin, tenant.compartment_id, retention_in_seconds=600, visibility_in_seconds=5,
                       timeout_in_seconds=10, dead_letter_queue_delivery_count=3, channel_consumption_limit=50,
                       freeform_tags={"team": "berth", "env": "test"},
                       defined_tags={"Ops": {"CostCenter": "42"}})
    q = admin.get_queue(qid).data
    assert (q.retention_in_seconds, q.visibility_in_seconds, q.timeout_in_seconds) == (600, 5, 10)
    assert q.dead_letter_queue_delivery_count == 3
    assert q.channel_consumption_limit == 50
    assert q.freeform_tags == {"team": "berth", "env": "test"}
    assert q.defined_tags == {"Ops": {"CostCenter": "42"}}


@pytest.mark.parametrize("field,value", [
    ("retention_in_seconds", 10), ("retention_in_seconds", 604800),
    ("visibility_in_seconds", 43200), ("timeout_in_seconds", 0), ("timeout_in_seconds", 30),
    ("dead_letter_queue_delivery_count", 20),
])
def test_create_queue_accepts_boundary_values(admin, tenant, field, value):
    qid = create_queue(admin, tenant.compartment_id, **{field: value})
    assert getattr(admin.get_queue(qid).data, field) == value


# --------------------------------------------------------------------------
# opc-retry-token
# --------------------------------------------------------------------------

def test_retry_token_repeat_returns_same_work_request_and_creates_one_queue(admin, tenant):
    comp = fake_compartment_id()
    name = unique_name("retry")
    details = CreateQueueDetails(display_name=name, compartment_id=comp)
    token = unique_name("token")
    first = admin.create_queue(details, opc_retry_token=token)
    second = admin.create_queue(details, opc_retry_token=token)
    assert first.headers["opc-work-request-id"] == second.headers["opc-work-request-id"]
    wait_async(admin, second)
    listed = list_all_queues(admin, compartment_id=comp)
    assert [q.display_name for q in listed] == [name]


def test_retry_token_reused_with_different_body_is_409_invalidated_retry_token(admin, tenant):
    token = unique_name("token")
    admin.create_queue(CreateQueueDetails(display_name=unique_name(), compartment_id=tenant.compartment_id),
                       opc_retry_token=token)
    with raises_service_error(409, "InvalidatedRetryToken"):
        admin.create_queue(CreateQueueDetails(display_name=unique_name("other"), compartment_id=tenant.compartment_id),
                           opc_retry_token=token)


# --------------------------------------------------------------------------
# GetQueue / UpdateQueue / etag
# --------------------------------------------------------------------------

def test_update_queue_honours_if_match_and_changes_etag(admin, queue_id):
    before = admin.get_queue(queue_id)
    etag = before.headers.get("etag")
    assert etag, "GetQueue must return an etag header"
    with raises_service_error(412, "NoEtagMatch"):
        admin.update_queue(queue_id, UpdateQueueDetails(visibility_in_seconds=5), if_match='"not-the-etag"')
    assert admin.get_queue(queue_id).data.visibility_in_seconds == DEFAULT_VISIBILITY

    resp = admin.update_queue(queue_id, UpdateQueueDetails(visibility_in_seconds=5), if_match=etag)
    wr = wait_async(admin, resp)
    assert wr.operation_type == "UPDATE_QUEUE"
    after = admin.get_queue(queue_id)
    assert after.data.visibility_in_seconds == 5
    assert after.headers.get("etag") and after.headers["etag"] != etag


def test_update_queue_without_a_body_is_an_empty_update(admin, raw, queue_id):
    """The OCI TypeScript SDK sends no body when the details serialise to {}."""
    before = admin.get_queue(queue_id).data
    resp = raw.request("PUT", f"{API}/queues/{queue_id}", body=b"", headers={"content-type": "application/json"})
    assert resp.status_code == 202, resp.text
    assert raw.wait_work_request(resp.headers["opc-work-request-id"])["operationType"] == "UPDATE_QUEUE"
    after = admin.get_queue(queue_id).data
    assert (after.display_name, after.visibility_in_seconds) == (before.display_name, before.visibility_in_seconds)
    # A body that is there must still be JSON.
    assert raw.request("PUT", f"{API}/queues/{queue_id}", body=b"{").status_code == 400


def test_update_queue_changes_mutable_fields(admin, queue_id):
    new_name = unique_name("renamed")
    update_queue(admin, queue_id, display_name=new_name, visibility_in_seconds=7, timeout_in_seconds=3,
                 dead_letter_queue_delivery_count=4, channel_consumption_limit=25,
                 freeform_tags={"k": "v2"}, defined_tags={"Ops": {"Owner": "me"}})
    q = admin.get_queue(queue_id).data
    assert q.display_name == new_name
    assert (q.visibility_in_seconds, q.timeout_in_seconds) == (7, 3)
    assert q.dead_letter_queue_delivery_count == 4
    assert q.channel_consumption_limit == 25
    assert q.freeform_tags == {"k": "v2"}
    assert q.defined_tags == {"Ops": {"Owner": "me"}}
    assert q.retention_in_seconds == DEFAULT_RETENTION
    assert q.lifecycle_state == "ACTIVE"


# --------------------------------------------------------------------------
# Capabilities
# --------------------------------------------------------------------------

def test_large_messages_capability_is_object_in_get_and_string_in_list(admin, raw, tenant):
    comp = fake_compartment_id()
    qid = create_queue(admin, comp, capabilities=[LargeMessagesCapabilityDetails()])
    q = admin.get_queue(qid).data
    assert [c.type for c in q.capabilities] == ["LARGE_MESSAGES"]
    assert isinstance(q.capabilities[0], LargeMessagesCapabilityDetails)
    assert raw.get_queue(qid)["capabilities"] == [{"type": "LARGE_MESSAGES"}]

    summaries = admin.list_queues(compartment_id=comp).data.items
    assert [s.id for s in summaries] == [qid]
    assert summaries[0].capabilities == ["LARGE_MESSAGES"]
    r = raw.request("GET", f"{API}/queues", params={"compartmentId": comp})
    assert r.status_code == 200
    assert r.json()["items"][0]["capabilities"] == ["LARGE_MESSAGES"]


# --------------------------------------------------------------------------
# ListQueues
# --------------------------------------------------------------------------

@pytest.fixture
def three_queues(admin):
    """Three queues in a compartment of their own, created in the order c, a, b."""
    comp = fake_compartment_id()
    tag = unique_name("lst")
    ids = {}
    for n in ("c", "a", "b"):
        ids[n] = create_queue(admin, comp, f"{n}-{tag}")
    return comp, tag, ids


def test_list_queues_filters_by_compartment_display_name_id_and_state(admin, three_queues):
    comp, tag, ids = three_queues
    items = admin.list_queues(compartment_id=comp).data.items
    assert {q.id for q in items} == set(ids.values())
    assert all(q.compartment_id == comp and q.lifecycle_state == "ACTIVE" for q in items)
    assert all(q.messages_endpoint for q in items)

    assert [q.id for q in admin.list_queues(compartment_id=comp, display_name=f"a-{tag}").data.items] == [ids["a"]]
    assert admin.list_queues(compartment_id=comp, display_name="a").data.items == []  # exact match only
    assert [q.id for q in admin.list_queues(id=ids["b"]).data.items] == [ids["b"]]
    active = admin.list_queues(compartment_id=comp, lifecycle_state="ACTIVE").data.items
    assert {q.id for q in active} == set(ids.values())
    assert admin.list_queues(compartment_id=comp, lifecycle_state="CREATING").data.items == []


def test_list_queues_without_compartment_covers_the_whole_tenancy(admin, three_queues, queue_id):
    _, _, ids = three_queues
    listed = {q.id for q in list_all_queues(admin)}
    assert set(ids.values()) | {queue_id} <= listed


def test_list_queues_sorts_by_time_created_desc_and_display_name_asc_by_default(admin, three_queues):
    comp, tag, ids = three_queues

    def names(**kw):
        return [q.display_name.split("-")[0] for q in admin.list_queues(compartment_id=comp, **kw).data.items]

    assert names() == ["b", "a", "c"]                                  # default sortBy timeCreated, DESC
    assert names(sort_by="timeCreated") == ["b", "a", "c"]
    assert names(sort_by="timeCreated", sort_order="ASC") == ["c", "a", "b"]
    assert names(sort_by="displayName") == ["a", "b", "c"]             # displayName defaults to ASC
    assert names(sort_by="displayName", sort_order="DESC") == ["c", "b", "a"]


def test_list_queues_paginates_with_opc_next_page(admin, raw, three_queues):
    comp, _, ids = three_queues
    first = admin.list_queues(compartment_id=comp, limit=1)
    assert len(first.data.items) == 1
    assert first.has_next_page and first.headers.get("opc-next-page")

    all_items = oci.pagination.list_call_get_all_results(admin.list_queues, compartment_id=comp, limit=1).data
    assert sorted(q.id for q in all_items) == sorted(ids.values())

    # Wire level: the last page carries no opc-next-page header.
    seen, page, pages = [], None, 0
    while True:
        params = {"compartmentId": comp, "limit": 1, **({"page": page} if page else {})}
        r = raw.request("GET", f"{API}/queues", params=params)
        assert r.status_code == 200, r.text
        pages += 1
        seen += [q["id"] for q in r.json()["items"]]
        page = r.headers.get("opc-next-page")
        if not page:
            break
        assert pages < 10
    assert sorted(seen) == sorted(ids.values())


# --------------------------------------------------------------------------
# Delete / change compartment
# --------------------------------------------------------------------------

def test_deleted_queue_reads_as_deleted_is_no_longer_listed_and_has_no_data_plane(admin, qc, three_queues):
    comp, _, ids = three_queues
    wr = delete_queue(admin, ids["a"])
    assert wr.operation_type == "DELETE_QUEUE"
    # As OCI resources do, so that SDK waiters for DELETED succeed (the TypeScript SDK's
    # fails on an immediate 404).
    assert admin.get_queue(ids["a"]).data.lifecycle_state == "DELETED"
    waited = oci.wait_until(admin, admin.get_queue(ids["a"]), "lifecycle_state", "DELETED", max_wait_seconds=10)
    assert waited.data.id == ids["a"]
    deleted = admin.list_queues(compartment_id=comp, lifecycle_state="DELETED").data.items
    assert [q.id for q in deleted] == [ids["a"]]
    with raises_service_error(404, NOT_FOUND):
        admin.update_queue(ids["a"], UpdateQueueDetails(visibility_in_seconds=5))
    listed = {q.id for q in admin.list_queues(compartment_id=comp).data.items}
    assert listed == {ids["b"], ids["c"]}
    assert ids["a"] not in {q.id for q in list_all_queues(admin)}
    with raises_service_error(404, NOT_FOUND):
        qc.get_messages(ids["a"], timeout_in_seconds=0)


def test_change_queue_compartment_moves_the_queue(admin, tenant):
    src, dst = fake_compartment_id(), fake_compartment_id()
    qid = create_queue(admin, src)
    resp = admin.change_queue_compartment(qid, ChangeQueueCompartmentDetails(compartment_id=dst))
    wr = wait_async(admin, resp)
    assert wr.operation_type == "MOVE_QUEUE"
    assert admin.get_queue(qid).data.compartment_id == dst
    assert [q.id for q in admin.list_queues(compartment_id=dst).data.items] == [qid]
    assert admin.list_queues(compartment_id=src).data.items == []


# --------------------------------------------------------------------------
# Work requests
# --------------------------------------------------------------------------

def test_work_requests_are_listed_by_compartment_with_pagination(admin):
    comp = fake_compartment_id()
    wr_ids = []
    for _ in range(2):
        resp = admin.create_queue(CreateQueueDetails(display_name=unique_name(), compartment_id=comp))
        wr_ids.append(resp.headers["opc-work-request-id"])
        wait_async(admin, resp)
    qid = admin.list_queues(compartment_id=comp).data.items[0].id
    resp = admin.update_queue(qid, UpdateQueueDetails(visibility_in_seconds=9))
    wr_ids.append(resp.headers["opc-work-request-id"])
    wait_async(admin, resp)

    items = admin.list_work_requests(compartment_id=comp).data.items
    assert {w.id for w in items} == set(wr_ids)
    assert all(w.compartment_id == comp and w.status == "SUCCEEDED" for w in items)
    assert sorted(w.operation_type for w in items) == ["CREATE_QUEUE", "CREATE_QUEUE", "UPDATE_QUEUE"]

    first = admin.list_work_requests(compartment_id=comp, limit=1)
    assert len(first.data.items) == 1 and first.has_next_page
    paged = oci.pagination.list_call_get_all_results(admin.list_work_requests, compartment_id=comp, limit=1).data
    assert sorted(w.id for w in paged) == sorted(wr_ids)


def test_work_request_errors_are_empty_and_logs_have_entries(admin, tenant):
    resp = admin.create_queue(CreateQueueDetails(display_name=unique_name(), compartment_id=tenant.compartment_id))
    wr = wait_async(admin, resp)
    errors = admin.list_work_request_errors(wr.id)
    assert errors.status == 200 and errors.data.items == []
    assert oci.pagination.list_call_get_all_results(admin.list_work_request_errors, wr.id, limit=1).data == []

    logs = admin.list_work_request_logs(wr.id).data.items
    assert logs, "a finished work request should have log entries"
    for entry in logs:
        assert isinstance(entry.message, str) and entry.message
        assert entry.timestamp is not None
    paged = oci.pagination.list_call_get_all_results(admin.list_work_request_logs, wr.id, limit=1).data
    assert [e.message for e in paged] == [e.message for e in logs]


def test_unknown_work_request_is_404(admin):
    with raises_service_error(404, NOT_FOUND):
        admin.get_work_request("ocid1.queueworkrequest.oc1.iad.doesnotexist")

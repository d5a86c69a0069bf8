"""Consumer groups (fan-out) through the official SDK and the `oci` CLI."""

from __future__ import annotations

import json

import oci
import pytest
from oci.queue.models import (ConsumerGroupsCapabilityDetails, CreateConsumerGroupDetails, DeleteMessagesDetails,
                              DeleteMessagesDetailsEntry, PurgeQueueDetails, UpdateConsumerGroupDetails,
                              UpdateQueueDetails)

from berthlib import (API, Cli, cli_items, entry, fake_compartment_id, raises_service_error, unique_name,
                      wait_async)


def grouped_queue(tenant, **primary) -> tuple[str, str]:
    """A queue with the CONSUMER_GROUPS capability; its id and its primary group's id."""
    qid = tenant.create_queue(capabilities=[ConsumerGroupsCapabilityDetails(**primary)])
    groups = tenant.admin.list_consumer_groups(queue_id=qid).data.items
    assert len(groups) == 1, groups
    return qid, groups[0].id


def new_group(admin, qid: str, name: str, **details) -> str:
    """CreateConsumerGroup and wait for it, as the SDK's composite operation does; the group's id."""
    ops = oci.queue.QueueAdminClientCompositeOperations(admin)
    done = ops.create_consumer_group_and_wait_for_state(
        CreateConsumerGroupDetails(display_name=name, queue_id=qid, **details), wait_for_states=["SUCCEEDED"],
        waiter_kwargs={"max_wait_seconds": 30, "max_interval_seconds": 1})
    wr = done.data
    assert wr.operation_type == "CREATE_CONSUMER_GROUP"
    [res] = wr.resources
    assert res.entity_type == "consumerGroup" and res.action_type == "CREATED"
    return res.identifier


def put_props(qc, qid: str, items):
    details = oci.queue.models.PutMessagesDetails(messages=[entry(c, custom_properties=p) for c, p in items])
    return qc.put_messages(qid, details).data.messages


def get(qc, qid: str, group=None, limit=20, visibility=30):
    kw = {"consumer_group_id": group} if group else {}
    return qc.get_messages(qid, limit=limit, visibility_in_seconds=visibility, timeout_in_seconds=0, **kw).data.messages


def test_the_capability_makes_a_primary_group_and_each_group_reads_its_own_copy(tenant):
    admin, qc = tenant.admin, tenant.qc
    qid, primary = grouped_queue(tenant, primary_consumer_group_display_name="main")
    got = admin.get_consumer_group(primary)
    assert got.headers.get("etag")
    g = got.data
    assert (g.display_name, g.lifecycle_state, g.queue_id, g.filter) == ("main", "ACTIVE", qid, "")
    assert g.dead_letter_queue_delivery_count is None, "unset: the queue's"
    caps = admin.get_queue(qid).data.capabilities
    assert [c.type for c in caps] == ["CONSUMER_GROUPS"] and isinstance(caps[0], ConsumerGroupsCapabilityDetails)

    b = new_group(admin, qid, "b")
    put_ids = [m.id for m in put_props(qc, qid, [("1", None), ("2", None)])]
    mine = get(qc, qid)  # the primary group, as no group is named
    assert [m.content for m in mine] == ["1", "2"]
    theirs = get(qc, qid, b)
    assert [m.content for m in theirs] == ["1", "2"] and [m.id for m in theirs] == put_ids
    assert get(qc, qid, primary) == [], "the primary group's copies are leased"

    # Receipts stay in their group.
    with raises_service_error(404, "NotAuthorizedOrNotFound"):
        qc.delete_message(qid, mine[0].receipt, consumer_group_id=b)
    entries = [DeleteMessagesDetailsEntry(receipt=m.receipt) for m in mine]
    res = qc.delete_messages(qid, DeleteMessagesDetails(entries=entries)).data
    assert res.client_failures == 0 and res.server_failures == 0
    stats = qc.get_stats(qid, consumer_group_id=b).data
    assert stats.queue.in_flight_messages == 2
    assert qc.get_stats(qid).data.queue.in_flight_messages == 0
    raw = tenant.raw.request("GET", f"{API}/queues/{qid}/stats", params={"consumerGroupId": b}).json()
    assert raw["consumerGroupId"] == b
    qc.update_message(qid, theirs[0].receipt, oci.queue.models.UpdateMessageDetails(visibility_in_seconds=0),
                      consumer_group_id=b)
    again = get(qc, qid, b)
    assert [(m.content, m.delivery_count) for m in again] == [("1", 2)]


def test_filters_split_the_stream_and_bad_ones_are_refused_with_their_position(tenant):
    admin, qc = tenant.admin, tenant.qc
    qid, primary = grouped_queue(tenant, is_primary_consumer_group_enabled=False)
    assert admin.get_consumer_group(primary).data.lifecycle_state == "INACTIVE"
    red = new_group(admin, qid, "red", filter=':colour = "red"')
    big = new_group(admin, qid, "big", filter=":size >= 10 AND NOT :colour = 'blue'")
    put_props(qc, qid, [("r", {"colour": "red"}), ("b", {"colour": "blue", "size": "12"}), ("p", None),
                        ("rb", {"colour": "red", "size": "10"})])
    assert [m.content for m in get(qc, qid, red)] == ["r", "rb"]
    assert [m.content for m in get(qc, qid, big)] == ["rb"]
    assert get(qc, qid) == [], "the disabled primary group gets nothing; 'p' matched no group and is gone"
    with raises_service_error(400, "InvalidParameter") as e:
        admin.create_consumer_group(CreateConsumerGroupDetails(display_name="x", queue_id=qid, filter=":a = "))
    assert e.value.message.startswith("filter: at character 6:"), e.value.message
    with raises_service_error(400, "InvalidParameter"):
        admin.update_consumer_group(primary, UpdateConsumerGroupDetails(filter=":a"))


def test_list_update_delete_with_etags_pages_and_unique_names(tenant):
    admin, qc = tenant.admin, tenant.qc
    qid, primary = grouped_queue(tenant)
    ids = [new_group(admin, qid, name) for name in ("c", "a", "b")]
    with raises_service_error(400, "InvalidParameter"):
        admin.create_consumer_group(CreateConsumerGroupDetails(display_name="A", queue_id=qid))
    by_name = admin.list_consumer_groups(queue_id=qid, sort_by="displayName", sort_order="ASC").data.items
    assert [g.display_name for g in by_name] == ["Primary Consumer Group", "a", "b", "c"]
    paged = oci.pagination.list_call_get_all_results(admin.list_consumer_groups, queue_id=qid, limit=1).data
    assert sorted(g.id for g in paged) == sorted(ids + [primary])
    assert [g.id for g in admin.list_consumer_groups(queue_id=qid, display_name="a").data.items] == [ids[1]]

    etag = admin.get_consumer_group(ids[0]).headers["etag"]
    with raises_service_error(412, "NoEtagMatch"):
        admin.update_consumer_group(ids[0], UpdateConsumerGroupDetails(display_name="z"), if_match="999")
    ops = oci.queue.QueueAdminClientCompositeOperations(admin)
    ops.update_consumer_group_and_wait_for_state(
        ids[0], UpdateConsumerGroupDetails(display_name="z", is_enabled=False, dead_letter_queue_delivery_count=2),
        wait_for_states=["SUCCEEDED"], operation_kwargs={"if_match": etag},
        waiter_kwargs={"max_wait_seconds": 30, "max_interval_seconds": 1})
    g = admin.get_consumer_group(ids[0]).data
    assert (g.display_name, g.lifecycle_state, g.dead_letter_queue_delivery_count) == ("z", "INACTIVE", 2)
    inactive = admin.list_consumer_groups(queue_id=qid, lifecycle_state="INACTIVE").data.items
    assert [x.id for x in inactive] == [ids[0]]

    with raises_service_error(400, "InvalidParameter"):
        admin.delete_consumer_group(primary)
    ops.delete_consumer_group_and_wait_for_state(ids[1], wait_for_states=["SUCCEEDED"],
                                                 waiter_kwargs={"max_wait_seconds": 30, "max_interval_seconds": 1})
    with raises_service_error(404, "NotAuthorizedOrNotFound"):
        admin.get_consumer_group(ids[1])
    with raises_service_error(404, "NotAuthorizedOrNotFound"):
        qc.get_messages(qid, consumer_group_id=ids[1], timeout_in_seconds=0)
    with raises_service_error(400, "InvalidParameter"):
        admin.update_queue(qid, UpdateQueueDetails(capabilities=[]))


def test_update_queue_sets_the_primary_group_and_a_retried_create_replays(tenant):
    admin = tenant.admin
    qid = tenant.create_queue()
    added = ConsumerGroupsCapabilityDetails(primary_consumer_group_display_name="first",
                                            primary_consumer_group_dead_letter_queue_delivery_count=3)
    admin.update_queue(qid, UpdateQueueDetails(capabilities=[added]))
    [listed] = admin.list_consumer_groups(queue_id=qid).data.items
    primary = admin.get_consumer_group(listed.id).data
    assert (primary.display_name, primary.dead_letter_queue_delivery_count) == ("first", 3)
    changed = ConsumerGroupsCapabilityDetails(primary_consumer_group_display_name="main",
                                              is_primary_consumer_group_enabled=False)
    admin.update_queue(qid, UpdateQueueDetails(capabilities=[changed]))
    [listed] = admin.list_consumer_groups(queue_id=qid).data.items
    g = admin.get_consumer_group(listed.id).data
    assert (g.id, g.display_name, g.lifecycle_state, g.dead_letter_queue_delivery_count) == (
        primary.id, "main", "INACTIVE", 3)
    with raises_service_error(400, "InvalidParameter"):
        admin.update_queue(qid, UpdateQueueDetails(capabilities=[
            ConsumerGroupsCapabilityDetails(primary_consumer_group_filter=":a")]))

    details = CreateConsumerGroupDetails(display_name="b", queue_id=qid)
    first = admin.create_consumer_group(details, opc_retry_token="retry-b").headers["opc-work-request-id"]
    again = admin.create_consumer_group(details, opc_retry_token="retry-b").headers["opc-work-request-id"]
    assert again == first, "a retry answers with the first work request"
    with raises_service_error(409, "InvalidatedRetryToken"):
        admin.create_consumer_group(CreateConsumerGroupDetails(display_name="c", queue_id=qid),
                                    opc_retry_token="retry-b")


def test_purge_one_group_or_all_and_groups_are_their_tenancys_and_queues_own(tenant, tenant_b):
    admin, qc = tenant.admin, tenant.qc
    qid, primary = grouped_queue(tenant)
    g = new_group(admin, qid, "g")
    put_props(qc, qid, [("m", None)])
    wait_async(admin, admin.purge_queue(qid, PurgeQueueDetails(purge_type="NORMAL", consumer_group_id=g)))
    assert (qc.get_stats(qid).data.queue.visible_messages, qc.get_stats(qid, consumer_group_id=g).data
            .queue.visible_messages) == (1, 0)
    wait_async(admin, admin.purge_queue(qid, PurgeQueueDetails(purge_type="BOTH", consumer_group_id="all")))
    assert qc.get_stats(qid).data.queue.visible_messages == 0

    other = tenant.create_queue()
    with raises_service_error(404, "NotAuthorizedOrNotFound"):
        qc.get_stats(other, consumer_group_id=g)
    with raises_service_error(400, "InvalidParameter"):
        admin.create_consumer_group(CreateConsumerGroupDetails(display_name="x", queue_id=other))
    with raises_service_error(404, "NotAuthorizedOrNotFound"):
        tenant_b.admin.get_consumer_group(g)
    assert tenant_b.admin.list_consumer_groups(queue_id=qid).data.items == []


@pytest.fixture(scope="module")
def cli(server, tenant):
    return Cli(tenant.config_path, server.base)


def test_cli_consumer_groups(cli):
    wait = ("--wait-for-state", "SUCCEEDED", "--wait-interval-seconds", "1", "--max-wait-seconds", "60")
    comp = fake_compartment_id()
    wr = cli.run("queue", "queue-admin", "queue", "create", "--display-name", unique_name("cg"), "-c", comp,
                 "--capabilities", json.dumps([{"type": "CONSUMER_GROUPS"}]), *wait).data
    qid = wr["resources"][0]["identifier"]
    wr = cli.run("queue", "queue-admin", "consumer-group", "create", "--display-name", "audit", "--queue-id", qid,
                 "--filter", ":kind = 'audit'", "--dlq-delivery-count", "4", *wait).data
    assert wr["operation-type"] == "CREATE_CONSUMER_GROUP"
    gid = wr["resources"][0]["identifier"]
    got = cli.run("queue", "queue-admin", "consumer-group", "get", "--consumer-group-id", gid).data
    assert (got["display-name"], got["filter"], got["dead-letter-queue-delivery-count"]) == ("audit", ":kind = 'audit'", 4)
    listed = cli_items(cli.run("queue", "queue-admin", "consumer-group-collection", "list-consumer-groups",
                               "--queue-id", qid, "--all").data)
    assert {x["display-name"] for x in listed} == {"Primary Consumer Group", "audit"}

    msgs = [{"content": "a1", "metadata": {"customProperties": {"kind": "audit"}}}, {"content": "x"}]
    cli.run("queue", "messages", "put-messages", "--queue-id", qid, "--messages", json.dumps(msgs))
    got = cli.run("queue", "messages", "get-messages", "--queue-id", qid, "--consumer-group-id", gid,
                  "--limit", "10", "--timeout-in-seconds", "0").data
    assert [m["content"] for m in got["messages"]] == ["a1"]
    st = cli.run("queue", "messages", "get-stats", "--queue-id", qid, "--consumer-group-id", gid).data
    assert st["queue"]["in-flight-messages"] == 1
    st = cli.run("queue", "messages", "get-stats", "--queue-id", qid).data
    assert st["queue"]["visible-messages"] == 2

    cli.run("queue", "queue-admin", "consumer-group", "update", "--consumer-group-id", gid, "--is-enabled", "false",
            "--force", *wait)
    assert cli.run("queue", "queue-admin", "consumer-group", "get", "--consumer-group-id", gid).data[
        "lifecycle-state"] == "INACTIVE"
    dele = cli.run("queue", "queue-admin", "consumer-group", "delete", "--consumer-group-id", gid, "--force",
                   *wait).data
    assert dele["operation-type"] == "DELETE_CONSUMER_GROUP"
    r = cli.run("queue", "queue-admin", "consumer-group", "get", "--consumer-group-id", gid, check=False)
    assert r.rc != 0 and "NotAuthorizedOrNotFound" in r.stderr


def test_stomp_subscription_reads_the_group_its_header_names(tenant, stomp_client):
    from berthlib import destination
    admin, qc = tenant.admin, tenant.qc
    qid, _ = grouped_queue(tenant)
    g = new_group(admin, qid, "stomp", filter=":to = 'stomp'")
    put_props(qc, qid, [("for-all", None), ("for-stomp", {"to": "stomp"})])
    s = stomp_client()
    s.subscribe(destination(qid), **{"consumer-group-id": g})
    [msg] = s.wait_messages(1)
    assert msg.body == "for-stomp"
    assert s.messages_after(0.5) == [msg], "only the group's copy comes"
    s.ack(msg)
    assert qc.get_stats(qid, consumer_group_id=g).data.queue.in_flight_messages == 0
    assert qc.get_stats(qid).data.queue.visible_messages == 2, "the primary group keeps its copies"
    bad = stomp_client()
    bad.subscribe(destination(qid), **{"consumer-group-id": "ocid1.queueconsumergroup.oc1..none"})
    assert "consumer group not found" in bad.wait_error().body

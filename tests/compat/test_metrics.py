"""GET /metrics: Prometheus (OpenMetrics) text, read with the official prometheus_client
parser: per-queue counts and what moved through them, REST requests by OCI operation and
status, STOMP connections and frames; --metrics off and a listener of its own."""

from __future__ import annotations

import re

import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from berthlib import destination, get, put, wait_for


def scrape(base: str) -> dict:
    """{(sample name, frozenset(labels)): value} of one scrape."""
    r = requests.get(base + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def of_queue(samples: dict, name: str, qid: str, **labels) -> float:
    want = {("queue_id", qid), *labels.items()}
    found = [v for (n, ls), v in samples.items() if n == name and want <= ls]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_queue_counts_and_what_moved_through_them(server, qc, make_queue, tenant):
    qid = make_queue("metered")
    put(qc, qid, ["a", "b", "c"])
    got = get(qc, qid, limit=2, visibility_in_seconds=60)
    qc.delete_message(qid, got[0].receipt)
    samples = scrape(server.base)
    assert of_queue(samples, "berth_queue_messages", qid, side="queue", state="visible") == 1
    assert of_queue(samples, "berth_queue_messages", qid, side="queue", state="in_flight") == 1
    assert of_queue(samples, "berth_queue_messages", qid, side="dlq", state="visible") == 0
    assert of_queue(samples, "berth_queue_bytes", qid, side="queue") == 2
    assert of_queue(samples, "berth_queue_messages_put_total", qid) == 3
    assert of_queue(samples, "berth_queue_messages_delivered_total", qid) == 2
    assert of_queue(samples, "berth_queue_messages_deleted_total", qid) == 1
    labels = dict(next(ls for (n, ls) in samples if n == "berth_queue_messages_put_total" and ("queue_id", qid) in ls))
    assert (labels["queue"], labels["tenancy"]) == ("metered", tenant.stomp_login.split("/")[0])


def test_rest_requests_are_counted_by_operation_and_status_with_latency(server, qc, make_queue):
    qid = make_queue()
    before = scrape(server.base)
    key = ("berth_http_requests_total", frozenset({("operation", "PutMessages"), ("status", "200")}))
    put(qc, qid, ["x"])
    after = scrape(server.base)
    assert after[key] == before.get(key, 0) + 1
    count = ("berth_http_request_duration_seconds_count", frozenset({("operation", "PutMessages")}))
    assert after[count] >= 1
    assert requests.get(server.base + "/20210201/queues", timeout=10).status_code == 401
    refused = ("berth_http_requests_total", frozenset({("operation", "ListQueues"), ("status", "401")}))
    assert scrape(server.base)[refused] == after.get(refused, 0) + 1


def test_stomp_connections_and_frames_are_counted(server, stomp_client, make_queue, qc):
    qid = make_queue()
    s = stomp_client()
    s.send(destination(qid), "over stomp")
    samples = scrape(server.base)
    assert samples[("berth_stomp_connections", frozenset())] >= 1
    assert samples[("berth_stomp_frames_received_total", frozenset({("command", "SEND")}))] >= 1
    s.disconnect()

    def closed():
        return scrape(server.base)[("berth_stomp_connections", frozenset())] == samples[
            ("berth_stomp_connections", frozenset())] - 1
    wait_for(closed, 10, desc="the connection gauge to drop")


def test_metrics_can_be_switched_off_or_served_on_their_own_address(fresh_server):
    off = fresh_server(["--metrics", "off"])
    assert requests.get(off.base + "/metrics", timeout=10).status_code == 404
    apart = fresh_server(["--metrics", "127.0.0.1:0"])
    line = next(l for l in apart.stdout_log.read_text().splitlines() if l.startswith("listening "))
    addr = re.search(r" metrics=(\S+)", line).group(1)
    assert requests.get(apart.base + "/metrics", timeout=10).status_code == 404, "not on the API port"
    samples = scrape(f"http://{addr}")
    assert ("berth_stomp_connections", frozenset()) in samples


def test_redeliveries_dead_letters_and_expiry_are_counted_per_queue(server, qc, make_queue):
    qid = make_queue(dead_letter_queue_delivery_count=2, retention_in_seconds=10)
    put(qc, qid, ["twice"])
    [first] = get(qc, qid, visibility_in_seconds=1)
    [again] = get(qc, qid, visibility_in_seconds=1, timeout_in_seconds=5)
    assert (first.delivery_count, again.delivery_count) == (1, 2)

    def moved():
        s = scrape(server.base)
        counted = (of_queue(s, "berth_queue_messages_dead_lettered_total", qid),
                   of_queue(s, "berth_queue_messages_expired_total", qid))
        return s if counted == (1, 1) else None
    # Its second lease ends: to the DLQ (settled by the sweep); at 10 s its retention ends.
    samples = wait_for(moved, 30, interval=0.5, desc="one dead-lettered and one expired message")
    assert of_queue(samples, "berth_queue_messages_delivered_total", qid) == 2
    assert of_queue(samples, "berth_queue_messages_redelivered_total", qid) == 1


def test_store_commits_are_counted_with_their_size_and_latency(server, qc, make_queue):
    qid = make_queue()
    before = scrape(server.base)
    put(qc, qid, ["one"])
    after = scrape(server.base)
    commits = ("berth_store_commits_total", frozenset())
    assert after[commits] >= before[commits] + 1
    for histogram in ("berth_store_writes_per_commit", "berth_store_commit_duration_seconds"):
        key = (histogram + "_count", frozenset())
        assert after[key] >= before[key] + 1, histogram
        assert after[(histogram + "_sum", frozenset())] > 0, histogram


def test_each_consumer_group_has_its_counts(server, qc, tenant):
    from oci.queue.models import ConsumerGroupsCapabilityDetails, CreateConsumerGroupDetails
    qid = tenant.create_queue(capabilities=[ConsumerGroupsCapabilityDetails()])
    tenant.admin.create_consumer_group(CreateConsumerGroupDetails(display_name="reporting", queue_id=qid))
    [listed] = tenant.admin.list_consumer_groups(queue_id=qid, display_name="reporting").data.items
    gid = listed.id
    put(qc, qid, ["a", "b"])
    got = qc.get_messages(qid, limit=1, visibility_in_seconds=60, timeout_in_seconds=0, consumer_group_id=gid)
    assert len(got.data.messages) == 1
    qc.delete_message(qid, got.data.messages[0].receipt, consumer_group_id=gid)
    got = qc.get_messages(qid, limit=1, visibility_in_seconds=60, timeout_in_seconds=0, consumer_group_id=gid)
    samples = scrape(server.base)
    assert of_queue(samples, "berth_consumer_group_messages_delivered_total", qid, consumer_group="reporting") == 2
    assert of_queue(samples, "berth_consumer_group_messages_deleted_total", qid, consumer_group="reporting") == 1
    assert of_queue(samples, "berth_consumer_group_messages_delivered_total", qid,
                    consumer_group="Primary Consumer Group") == 0
    assert of_queue(samples, "berth_queue_messages_delivered_total", qid) == 0, "the primary group's"
    assert of_queue(samples, "berth_consumer_group_messages", qid, consumer_group="reporting", side="queue",
                    state="visible") == 0
    assert of_queue(samples, "berth_consumer_group_messages", qid, consumer_group_id=gid, side="queue",
                    state="in_flight") == 1
    assert of_queue(samples, "berth_consumer_group_messages", qid, consumer_group="Primary Consumer Group",
                    side="queue", state="visible") == 2
    assert of_queue(samples, "berth_queue_messages", qid, side="queue", state="visible") == 2, "the primary group's"

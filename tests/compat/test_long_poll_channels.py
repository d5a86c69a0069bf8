"""Long polling and channels."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import oci
from oci.queue.models import PutMessagesDetails

from berthlib import (MAX_CHANNELS, MAX_GET_LIMIT, collect, entry, get, purge_queue, put, raises_service_error,
                      stats, unique_name, wait_for, wait_for_counts)


# --------------------------------------------------------------------------
# Long polling
# --------------------------------------------------------------------------

def test_long_poll_returns_promptly_after_a_put_from_another_client(tenant, queue_id):
    poller = tenant.new_queue_client()
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        fut = pool.submit(lambda: (get(poller, queue_id, timeout_in_seconds=20, visibility_in_seconds=30),
                                   time.monotonic()))
        time.sleep(1.0)  # let the GetMessages reach the server and start waiting
        assert not fut.done(), f"long poll returned early: {fut.result()}"
        put(tenant.qc, queue_id, ["wake-up"])
        put_done = time.monotonic()
        msgs, returned = fut.result(timeout=25)
    assert [m.content for m in msgs] == ["wake-up"]
    assert returned - put_done < 1.5, f"long poll answered {returned - put_done:.2f}s after the put"
    assert returned - started < 5


def test_long_poll_on_empty_queue_returns_empty_after_its_timeout(qc, queue_id):
    t0 = time.monotonic()
    msgs = get(qc, queue_id, timeout_in_seconds=2)
    elapsed = time.monotonic() - t0
    assert msgs == []
    assert 1.8 <= elapsed < 5, f"elapsed {elapsed:.2f}s"


def test_timeout_zero_returns_at_once(qc, queue_id):
    t0 = time.monotonic()
    assert get(qc, queue_id, timeout_in_seconds=0) == []
    assert time.monotonic() - t0 < 1


def test_queue_default_timeout_applies_when_not_given(qc, make_queue):
    qid = make_queue(timeout_in_seconds=1)
    t0 = time.monotonic()
    assert qc.get_messages(qid).data.messages == []
    elapsed = time.monotonic() - t0
    assert 0.8 <= elapsed < 4, f"elapsed {elapsed:.2f}s"


def test_long_poll_returns_without_waiting_to_fill_limit(qc, queue_id):
    put(qc, queue_id, ["only-one"])
    t0 = time.monotonic()
    msgs = get(qc, queue_id, timeout_in_seconds=10, limit=10, visibility_in_seconds=30)
    assert [m.content for m in msgs] == ["only-one"]
    assert time.monotonic() - t0 < 1.5


# --------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------

def test_channel_id_and_custom_properties_round_trip(qc, queue_id):
    props = {"type": "order", "priority": "high", "unicode": "ünï"}
    put(qc, queue_id, ["with-meta"], channel_id="orders-eu", custom_properties=props)
    [m] = get(qc, queue_id, visibility_in_seconds=30)
    assert m.metadata is not None
    assert m.metadata.channel_id == "orders-eu"
    assert m.metadata.custom_properties == props


def test_channel_filter_returns_only_that_channel(qc, queue_id):
    put(qc, queue_id, ["a1", "a2"], channel_id="ch-a")
    put(qc, queue_id, ["b1", "b2"], channel_id="ch-b")
    put(qc, queue_id, ["q1"])
    msgs = get(qc, queue_id, channel_filter="ch-b", limit=MAX_GET_LIMIT, visibility_in_seconds=30)
    assert [m.content for m in msgs] == ["b1", "b2"]
    assert all(m.metadata.channel_id == "ch-b" for m in msgs)
    assert get(qc, queue_id, channel_filter="ch-b") == []
    assert get(qc, queue_id, channel_filter="ch") == []  # exact match, not prefix
    assert get(qc, queue_id, channel_filter="no-such-channel", timeout_in_seconds=1) == []


def test_long_poll_with_channel_filter_wakes_for_its_channel(tenant, queue_id):
    poller = tenant.new_queue_client()
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(lambda: (get(poller, queue_id, channel_filter="wanted", timeout_in_seconds=15,
                                       visibility_in_seconds=30), time.monotonic()))
        time.sleep(1.0)
        put(tenant.qc, queue_id, ["other"], channel_id="unwanted")
        put(tenant.qc, queue_id, ["mine"], channel_id="wanted")
        put_done = time.monotonic()
        msgs, returned = fut.result(timeout=20)
    assert [m.content for m in msgs] == ["mine"]
    assert returned - put_done < 1.5


def test_unfiltered_gets_serve_both_busy_channels(qc, queue_id):
    n = 16
    put(qc, queue_id, [f"l{i}" for i in range(n)], channel_id="left")
    put(qc, queue_id, [f"r{i}" for i in range(n)], channel_id="right")
    seen = []
    for _ in range(n):
        [m] = get(qc, queue_id, limit=1, visibility_in_seconds=60)
        seen.append(m.metadata.channel_id)
    assert set(seen) == {"left", "right"}, f"one channel starved the other: {seen}"
    # FIFO holds within each channel
    rest = collect(qc, queue_id, n, timeout=10)
    for ch, prefix in (("left", "l"), ("right", "r")):
        idx = [int(m.content[1:]) for m in rest if m.metadata.channel_id == ch]
        assert idx == sorted(idx)


def test_list_channels_lists_non_empty_channels(qc, queue_id):
    put(qc, queue_id, ["1"], channel_id="lc-one")
    put(qc, queue_id, ["2", "3"], channel_id="lc-two")

    def channel_set():
        return set(qc.list_channels(queue_id).data.items)
    wait_for(lambda: channel_set() == {"lc-one", "lc-two"}, 5, desc="ListChannels == {lc-one, lc-two}")

    paged = oci.pagination.list_call_get_all_results(qc.list_channels, queue_id, limit=1).data
    assert sorted(paged) == ["lc-one", "lc-two"]

    [m] = get(qc, queue_id, channel_filter="lc-one", visibility_in_seconds=30)
    qc.delete_message(queue_id, m.receipt)
    wait_for(lambda: channel_set() == {"lc-two"}, 5, desc="emptied channel to drop out of ListChannels")


def test_get_stats_with_channel_id_gives_per_channel_counts(qc, queue_id):
    put(qc, queue_id, ["a1", "a2", "a3"], channel_id="st-a")
    put(qc, queue_id, ["b1", "b2"], channel_id="st-b")
    put(qc, queue_id, ["q"])
    get(qc, queue_id, channel_filter="st-a", visibility_in_seconds=60)
    wait_for_counts(qc, queue_id, channel_id="st-a", queue=(2, 1), dlq=(0, 0))
    wait_for_counts(qc, queue_id, channel_id="st-b", queue=(2, 0), dlq=(0, 0))
    wait_for_counts(qc, queue_id, queue=(5, 1), dlq=(0, 0))
    st = stats(qc, queue_id, "st-a")
    assert st.channel_id == "st-a"
    assert st.queue.size_in_bytes >= 6


def test_purge_with_channel_ids_only_purges_those_channels(qc, admin, queue_id):
    put(qc, queue_id, ["a1", "a2"], channel_id="pg-a")
    put(qc, queue_id, ["b1", "b2"], channel_id="pg-b")
    purge_queue(admin, queue_id, "NORMAL", channel_ids=["pg-a"])
    wait_for_counts(qc, queue_id, channel_id="pg-a", queue=(0, 0), timeout=5)
    wait_for_counts(qc, queue_id, channel_id="pg-b", queue=(2, 0), timeout=5)
    assert get(qc, queue_id, channel_filter="pg-a") == []
    assert [m.content for m in get(qc, queue_id, limit=5, visibility_in_seconds=30)] == ["b1", "b2"]


def test_more_than_256_channels_is_400_limit_exceeded(qc, queue_id):
    tag = unique_name("c")
    names = [f"{tag}-{i}" for i in range(MAX_CHANNELS)]
    for i in range(0, len(names), 20):
        qc.put_messages(queue_id, PutMessagesDetails(messages=[entry("x", ch) for ch in names[i:i + 20]]))
    with raises_service_error(400, "LimitExceeded"):
        qc.put_messages(queue_id, PutMessagesDetails(messages=[entry("x", f"{tag}-one-too-many")]))
    # existing channels still take messages
    qc.put_messages(queue_id, PutMessagesDetails(messages=[entry("y", names[0])]))
    wait_for_counts(qc, queue_id, queue=(MAX_CHANNELS + 1, 0))

//! Consumer groups: each group reads its own copy of its queue's stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_core::consumer_group::{ConsumerGroupDetails, ConsumerGroupFilter, CONSUMER_GROUPS};
use berth_core::engine::{spec_with_defaults, ConsumerGroupChange, GetMessages, PolicyValues, QueueChange, Target};
use berth_core::model::{NewMessage, PurgeTarget};
use berth_core::QueueError;

use super::{contents, rig, Backend, Rig, T};

/// A queue with consumer groups, its threshold `dead_letter_after`; its primary group's id.
pub(crate) async fn queue_with_groups(
    r: &Rig,
    dead_letter_after: i64,
    primary: ConsumerGroupDetails,
) -> (String, String) {
    let values = PolicyValues { dead_letter_after: Some(dead_letter_after), ..PolicyValues::default() };
    let mut spec = spec_with_defaults("q".into(), T.into(), values).unwrap();
    spec.capabilities = vec![CONSUMER_GROUPS.into()];
    spec.primary_consumer_group = Some(primary);
    let work = r.engine.create_queue(T, spec, None).await.unwrap();
    let q = work.resources[0].identifier.clone();
    let groups = groups_of(r, &q).await;
    assert_eq!(groups.len(), 1, "the capability makes the primary group");
    (q, groups[0].clone())
}

async fn groups_of(r: &Rig, q: &str) -> Vec<String> {
    let filter = ConsumerGroupFilter { queue_id: Some(q.into()), ..ConsumerGroupFilter::default() };
    let page = r.engine.list_consumer_groups(T, &filter, None, None).await.unwrap();
    page.items.into_iter().map(|g| g.id).collect()
}

pub(crate) fn named(name: &str, filter: &str) -> ConsumerGroupDetails {
    ConsumerGroupDetails {
        display_name: Some(name.into()),
        filter: Some(filter.into()),
        ..ConsumerGroupDetails::default()
    }
}

/// Creates a group of `q`; its id.
pub(crate) async fn group(r: &Rig, q: &str, details: ConsumerGroupDetails) -> String {
    let work = r.engine.create_consumer_group(T, q, details, None).await.unwrap();
    work.resources[0].identifier.clone()
}

pub(crate) fn via<'a>(q: &'a str, group: &'a str) -> Target<'a> {
    Target { queue_id: q, consumer_group_id: Some(group) }
}

pub(crate) async fn get_in(
    r: &Rig,
    target: Target<'_>,
    limit: i64,
    visibility: i64,
) -> Vec<berth_core::engine::Delivered> {
    let params = GetMessages::new(Some(visibility), Some(0), Some(limit), None, false).unwrap();
    r.engine.get_messages(T, target, params).await.unwrap()
}

/// Visible messages of the target's queue or DLQ side.
async fn stats(r: &Rig, target: Target<'_>, dead_letter: bool) -> u64 {
    let stats = r.engine.stats(T, target, None).await.unwrap();
    if dead_letter {
        stats.dead_letter.visible
    } else {
        stats.queue.visible
    }
}

async fn put_with(r: &Rig, q: &str, messages: &[(&str, &[(&str, &str)])]) -> Vec<i64> {
    let messages = messages
        .iter()
        .map(|(content, props)| NewMessage {
            content: (*content).into(),
            channel: String::new(),
            properties: (!props.is_empty())
                .then(|| props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()),
            delay_secs: None,
        })
        .collect();
    r.engine.put_messages(T, q, messages).await.unwrap().into_iter().map(|p| p.id).collect()
}

pub(crate) async fn each_group_reads_its_own_copy_with_its_own_leases_receipts_and_counts(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let (q, primary) = queue_with_groups(&r, 0, ConsumerGroupDetails::default()).await;
    let b = group(&r, &q, named("b", "")).await;
    let ids = r.put(&q, &["1", "2", "3"]).await;
    // Without a group the primary one reads, as it does when named.
    let from_primary = r.get(&q, 2, 30).await;
    assert_eq!(contents(&from_primary), ["1", "2"]);
    assert_eq!(contents(&get_in(&r, via(&q, &primary), 5, 30).await), ["3"]);
    let from_b = get_in(&r, via(&q, &b), 5, 10).await;
    assert_eq!(contents(&from_b), ["1", "2", "3"], "b's copy is not leased by the primary group's gets");
    assert_eq!(from_b.iter().map(|d| d.message.id).collect::<Vec<_>>(), ids, "one id in every group");
    // A receipt works in its own group only.
    let wrong = r.engine.delete_messages(T, via(&q, &b), vec![from_primary[0].receipt.clone()]).await.unwrap();
    assert!(matches!(wrong[0], Err(QueueError::ReceiptInvalid)));
    assert!(r.engine.delete_messages(T, &q, vec![from_primary[0].receipt.clone()]).await.unwrap()[0].is_ok());
    // b's leases end on their own; its delivery counts are its own.
    r.advance(11);
    let again = get_in(&r, via(&q, &b), 5, 30).await;
    assert_eq!(contents(&again), ["1", "2", "3"], "deleted by the primary group, still b's");
    assert!(again.iter().all(|d| d.message.delivery_count == 2));
    let stats = r.engine.stats(T, &q, None).await.unwrap();
    assert_eq!((stats.queue.visible, stats.queue.in_flight), (0, 2));
    let stats = r.engine.stats(T, via(&q, &b), None).await.unwrap();
    assert_eq!((stats.queue.visible, stats.queue.in_flight), (0, 3));
    let receipts = again.into_iter().map(|d| d.receipt).collect();
    assert!(r.engine.delete_messages(T, via(&q, &b), receipts).await.unwrap().iter().all(Result::is_ok));
    assert_eq!(r.engine.stats(T, via(&q, &b), None).await.unwrap().queue.in_flight, 0);
    // Fan-out is kept across a restart, each group's state with it.
    let r = r.reopen().await;
    assert!(get_in(&r, via(&q, &b), 5, 30).await.is_empty());
    r.advance(30);
    assert_eq!(contents(&r.get(&q, 5, 30).await), ["2", "3"]);
}

pub(crate) async fn a_filter_takes_only_matching_messages_and_a_message_no_group_takes_is_dropped(
    backend: Arc<dyn Backend>,
) {
    let r = rig(backend).await;
    let disabled = ConsumerGroupDetails { enabled: Some(false), ..ConsumerGroupDetails::default() };
    let (q, _) = queue_with_groups(&r, 0, disabled).await;
    let red = group(&r, &q, named("red", r#":colour = "red""#)).await;
    let big = group(&r, &q, named("big", ":size > 10 AND NOT :colour = \"blue\"")).await;
    let ids = put_with(
        &r,
        &q,
        &[
            ("r1", &[("colour", "red")]),
            ("b", &[("colour", "blue"), ("size", "99")]),
            ("plain", &[]),
            ("r2", &[("colour", "red"), ("size", "11")]),
        ],
    )
    .await;
    assert_eq!(ids.len(), 4, "every message gets an id, taken or not");
    assert_eq!(contents(&get_in(&r, via(&q, &red), 10, 30).await), ["r1", "r2"]);
    assert_eq!(contents(&get_in(&r, via(&q, &big), 10, 30).await), ["r2"]);
    assert!(r.get(&q, 10, 30).await.is_empty(), "the disabled primary group takes nothing");
    assert_eq!(r.engine.stats(T, &q, None).await.unwrap().queue.visible, 0);
    // A filter is checked when set; the primary group has none.
    let bad = r.engine.create_consumer_group(T, &q, named("bad", ":colour = "), None).await;
    assert!(matches!(bad, Err(QueueError::InvalidParameter(m)) if m.contains("filter")));
    let groups = r.engine.list_consumer_groups(T, &ConsumerGroupFilter::default(), None, None).await.unwrap();
    let primary = groups.items.iter().find(|g| g.primary).unwrap().id.clone();
    let change = ConsumerGroupChange { filter: Some(":a".into()), ..ConsumerGroupChange::default() };
    let refused = r.engine.update_consumer_group(T, &primary, None, change).await;
    assert!(matches!(refused, Err(QueueError::InvalidParameter(_))));
}

pub(crate) async fn a_group_dead_letters_by_its_own_threshold_or_its_queues(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let (q, _) = queue_with_groups(&r, 3, ConsumerGroupDetails::default()).await;
    let strict = group(&r, &q, ConsumerGroupDetails { dead_letter_after: Some(1), ..named("strict", "") }).await;
    let inherits = group(&r, &q, named("inherits", "")).await;
    r.put(&q, &["m"]).await;
    for target in [via(&q, &strict), via(&q, &inherits), Target::from(q.as_str())] {
        assert_eq!(get_in(&r, target, 1, 10).await.len(), 1);
    }
    r.advance(11);
    let dlq = |target| stats(&r, target, true);
    assert_eq!(dlq(via(&q, &strict)).await, 1, "one delivery is its limit");
    assert_eq!(dlq(via(&q, &inherits)).await, 0);
    // The queue's threshold lowered to 1: the inheriting group follows, at once.
    let change = QueueChange { dead_letter_after: Some(1), ..QueueChange::default() };
    r.engine.update_queue(T, &q, None, change).await.unwrap();
    assert_eq!(dlq(via(&q, &inherits)).await, 1);
    assert_eq!(dlq(Target::from(q.as_str())).await, 1);
    // -1 goes back to the queue's.
    let back = ConsumerGroupChange { dead_letter_after: Some(-1), ..ConsumerGroupChange::default() };
    r.engine.update_consumer_group(T, &strict, None, back).await.unwrap();
    assert_eq!(r.engine.get_consumer_group(T, &strict).await.unwrap().spec.dead_letter_after, None);
}

pub(crate) async fn a_disabled_group_gets_no_new_messages_and_a_new_group_starts_with_later_ones(
    backend: Arc<dyn Backend>,
) {
    let r = rig(backend).await;
    let (q, _) = queue_with_groups(&r, 0, ConsumerGroupDetails::default()).await;
    let g = group(&r, &q, named("g", "")).await;
    r.put(&q, &["before"]).await;
    let off = ConsumerGroupChange { enabled: Some(false), ..ConsumerGroupChange::default() };
    r.engine.update_consumer_group(T, &g, None, off).await.unwrap();
    assert_eq!(r.engine.get_consumer_group(T, &g).await.unwrap().state.as_str(), "INACTIVE");
    r.put(&q, &["while off"]).await;
    let on = ConsumerGroupChange { enabled: Some(true), ..ConsumerGroupChange::default() };
    r.engine.update_consumer_group(T, &g, None, on).await.unwrap();
    let late = group(&r, &q, named("late", "")).await;
    r.put(&q, &["after"]).await;
    assert_eq!(contents(&get_in(&r, via(&q, &g), 10, 30).await), ["before", "after"]);
    assert_eq!(contents(&get_in(&r, via(&q, &late), 10, 30).await), ["after"]);
    assert_eq!(contents(&r.get(&q, 10, 30).await), ["before", "while off", "after"]);
}

pub(crate) async fn a_deleted_group_is_gone_and_its_copies_are_reclaimed(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let (q, primary) = queue_with_groups(&r, 0, ConsumerGroupDetails::default()).await;
    let g = group(&r, &q, named("g", "")).await;
    r.put(&q, &["a", "b"]).await;
    let held = get_in(&r, via(&q, &g), 1, 30).await;
    r.engine.delete_consumer_group(T, &g, None).await.unwrap();
    let gone = r.engine.get_messages(T, via(&q, &g), GetMessages::new(None, Some(0), None, None, false).unwrap()).await;
    assert!(matches!(gone, Err(QueueError::ConsumerGroupNotFound)));
    let deleted = r.engine.delete_messages(T, &q, vec![held[0].receipt.clone()]).await.unwrap();
    assert!(matches!(deleted[0], Err(QueueError::ReceiptInvalid)), "its receipts name another stream");
    assert_eq!(groups_of(&r, &q).await, std::slice::from_ref(&primary));
    let refused = r.engine.delete_consumer_group(T, &primary, None).await;
    assert!(matches!(refused, Err(QueueError::InvalidParameter(_))), "the primary group goes with its queue only");
    while r.engine.sweep(100).await.unwrap().total() > 0 {}
    assert_eq!(contents(&r.get(&q, 10, 30).await), ["a", "b"], "the other groups keep the bodies");
    // Its name is free again; names are unique per queue regardless of case.
    group(&r, &q, named("G", "")).await;
    let taken = r.engine.create_consumer_group(T, &q, named("g", ""), None).await;
    assert!(matches!(taken, Err(QueueError::InvalidParameter(m)) if m.contains("already")));
    let other = r.queue(PolicyValues::default()).await;
    let not_grouped = r.engine.create_consumer_group(T, &other, named("x", ""), None).await;
    assert!(matches!(not_grouped, Err(QueueError::InvalidParameter(m)) if m.contains(CONSUMER_GROUPS)));
    // A group is its queue's only.
    let foreign = r.engine.stats(T, via(&other, &primary), None).await;
    assert!(matches!(foreign, Err(QueueError::ConsumerGroupNotFound)));
    assert!(matches!(
        r.engine.get_consumer_group("ocid1.tenancy.oc1..other", &primary).await,
        Err(QueueError::ConsumerGroupNotFound)
    ));
    // The capability stays once given.
    let drop_it = QueueChange { capabilities: Some(Vec::new()), ..QueueChange::default() };
    assert!(matches!(r.engine.update_queue(T, &q, None, drop_it).await, Err(QueueError::InvalidParameter(_))));
}

pub(crate) async fn purge_empties_the_primary_group_one_group_or_all(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let (q, _) = queue_with_groups(&r, 0, ConsumerGroupDetails::default()).await;
    let a = group(&r, &q, named("a", "")).await;
    let b = group(&r, &q, named("b", "")).await;
    r.put(&q, &["1", "2"]).await;
    let visible = |target| stats(&r, target, false);
    r.engine.purge_queue(T, &q, None, PurgeTarget::Normal, None, Some(&a)).await.unwrap();
    assert_eq!((visible(q.as_str().into()).await, visible(via(&q, &a)).await, visible(via(&q, &b)).await), (2, 0, 2));
    r.engine.purge_queue(T, &q, None, PurgeTarget::Normal, None, None).await.unwrap();
    assert_eq!((visible(q.as_str().into()).await, visible(via(&q, &b)).await), (0, 2));
    r.put(&q, &["3"]).await;
    r.engine.purge_queue(T, &q, None, PurgeTarget::Both, None, Some("all")).await.unwrap();
    let all = [visible(q.as_str().into()).await, visible(via(&q, &a)).await, visible(via(&q, &b)).await];
    assert_eq!(all, [0, 0, 0]);
}

/// A long poll (20 s) of group `g`, once it waits.
async fn group_poll(
    r: &Arc<Rig>,
    q: &str,
    g: &str,
) -> tokio::task::JoinHandle<Result<Vec<berth_core::engine::Delivered>, QueueError>> {
    let (r2, q, g) = (r.clone(), q.to_owned(), g.to_owned());
    let poll = tokio::spawn(async move {
        let params = GetMessages::new(Some(30), Some(20), Some(5), None, false).unwrap();
        r2.engine.get_messages(T, via(&q, &g), params).await
    });
    super::polls_waiting(&r.engine, 1).await;
    poll
}

/// What a poll answered, within 5 s.
async fn answered<T>(poll: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(5), poll).await.expect("woken").unwrap()
}

pub(crate) async fn a_long_poll_of_a_group_wakes_at_a_put_to_its_queue(backend: Arc<dyn Backend>) {
    let r = Arc::new(rig(backend).await);
    let (q, _) = queue_with_groups(&r, 0, ConsumerGroupDetails::default()).await;
    let g = group(&r, &q, named("g", "")).await;
    let poll = group_poll(&r, &q, &g).await;
    r.put(&q, &["x"]).await;
    assert_eq!(contents(&answered(poll).await.unwrap()), ["x"]);
}

pub(crate) async fn a_retried_create_replays_its_work_request_and_a_refused_one_holds_no_token(
    backend: Arc<dyn Backend>,
) {
    let r = rig(backend).await;
    let (q, _) = queue_with_groups(&r, 0, ConsumerGroupDetails::default()).await;
    let token = |t: &str, digest: &str| Some((t.to_owned(), digest.to_owned()));
    let first = r.engine.create_consumer_group(T, &q, named("g", ""), token("t1", "d1")).await.unwrap();
    let again = r.engine.create_consumer_group(T, &q, named("g", ""), token("t1", "d1")).await.unwrap();
    assert_eq!(again.id, first.id, "a retry answers with the first work request, not with the name it took");
    let other = r.engine.create_consumer_group(T, &q, named("h", ""), token("t1", "d2")).await;
    assert!(matches!(other, Err(QueueError::RetryTokenReused)));
    for _ in 0..2 {
        let taken = r.engine.create_consumer_group(T, &q, named("G", ""), token("t2", "d3")).await;
        assert!(matches!(taken, Err(QueueError::InvalidParameter(m)) if m.contains("already")));
    }
    assert_eq!(groups_of(&r, &q).await.len(), 2);
}

pub(crate) async fn the_primary_group_comes_with_the_capability_once_and_takes_its_settings(backend: Arc<dyn Backend>) {
    let r = Arc::new(rig(backend).await);
    let with_filter = ConsumerGroupDetails { filter: Some(":a".into()), ..ConsumerGroupDetails::default() };
    let values = PolicyValues::default();
    let mut spec = spec_with_defaults("bad".into(), T.into(), values.clone()).unwrap();
    spec.capabilities = vec![CONSUMER_GROUPS.into()];
    spec.primary_consumer_group = Some(with_filter);
    assert!(matches!(r.engine.create_queue(T, spec, None).await, Err(QueueError::InvalidParameter(_))));
    let filter = berth_core::model::QueueFilter {
        compartment_id: None,
        state: None,
        display_name: Some("bad".into()),
        id: None,
        sort: berth_core::model::QueueSort::TimeCreated,
        descending: false,
    };
    assert!(r.engine.list_queues(T, &filter, None, None).await.unwrap().items.is_empty(), "nothing of it is left");

    // Concurrent updates that add the capability make one primary group between them.
    let q = r.queue(values).await;
    let adds = (0..4).map(|i| {
        let (r, q) = (r.clone(), q.clone());
        tokio::spawn(async move {
            let change = QueueChange {
                capabilities: Some(vec![CONSUMER_GROUPS.into()]),
                primary_consumer_group: Some(ConsumerGroupDetails {
                    display_name: Some(format!("first {i}")),
                    dead_letter_after: Some(3),
                    ..ConsumerGroupDetails::default()
                }),
                ..QueueChange::default()
            };
            r.engine.update_queue(T, &q, None, change).await.unwrap();
        })
    });
    for add in adds.collect::<Vec<_>>() {
        add.await.unwrap();
    }
    let primary = groups_of(&r, &q).await;
    assert_eq!(primary.len(), 1, "one primary group");
    let made = r.engine.get_consumer_group(T, &primary[0]).await.unwrap();
    assert!(made.primary && made.spec.display_name.starts_with("first ") && made.spec.dead_letter_after == Some(3));

    // Later updates change it, and are checked like UpdateConsumerGroup.
    let change = |details: ConsumerGroupDetails| QueueChange {
        capabilities: Some(vec![CONSUMER_GROUPS.into()]),
        primary_consumer_group: Some(details),
        ..QueueChange::default()
    };
    r.engine.update_queue(T, &q, None, change(ConsumerGroupDetails::default())).await.unwrap();
    let resent = r.engine.get_consumer_group(T, &primary[0]).await.unwrap();
    assert_eq!(resent.version, made.version, "the capability resent as it is leaves the group's etag");
    let off = ConsumerGroupDetails {
        display_name: Some("main".into()),
        enabled: Some(false),
        ..ConsumerGroupDetails::default()
    };
    r.engine.update_queue(T, &q, None, change(off)).await.unwrap();
    let changed = r.engine.get_consumer_group(T, &primary[0]).await.unwrap();
    assert_eq!((changed.spec.display_name.as_str(), changed.state.as_str()), ("main", "INACTIVE"));
    assert_eq!(changed.spec.dead_letter_after, Some(3), "what the update leaves out stays");
    group(&r, &q, named("other", "")).await;
    let taken = ConsumerGroupDetails { display_name: Some("OTHER".into()), ..ConsumerGroupDetails::default() };
    let etag = r.engine.get_queue(T, &q).await.unwrap().version.to_string();
    let refused = r.engine.update_queue(T, &q, Some(&etag), change(taken)).await;
    assert!(matches!(refused, Err(QueueError::InvalidParameter(_))), "the name, not the etag: {refused:?}");
    let filtered = ConsumerGroupDetails { filter: Some(":a".into()), ..ConsumerGroupDetails::default() };
    assert!(matches!(r.engine.update_queue(T, &q, None, change(filtered)).await, Err(QueueError::InvalidParameter(_))));
    assert_eq!(r.engine.get_consumer_group(T, &primary[0]).await.unwrap().spec.display_name, "main");
}

pub(crate) async fn deleting_a_queue_wakes_the_long_polls_of_its_groups(backend: Arc<dyn Backend>) {
    let r = Arc::new(rig(backend).await);
    let (q, _) = queue_with_groups(&r, 0, ConsumerGroupDetails::default()).await;
    let g = group(&r, &q, named("g", "")).await;
    let poll = group_poll(&r, &q, &g).await;
    r.engine.delete_queue(T, &q, None).await.unwrap();
    let got = answered(poll).await;
    assert!(matches!(got, Err(QueueError::QueueNotFound)), "{got:?}");
}

pub(crate) async fn ids_of_a_first_put_no_group_takes_are_not_reused_after_a_restart(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let disabled = ConsumerGroupDetails { enabled: Some(false), ..ConsumerGroupDetails::default() };
    let (q, _) = queue_with_groups(&r, 0, disabled).await;
    let dropped = put_with(&r, &q, &[("nobody's", &[])]).await[0];
    let r = r.reopen().await;
    let other = r.queue(PolicyValues::default()).await;
    let next = r.put(&other, &["next"]).await[0];
    assert!(next > dropped, "id {next} reused after the dropped {dropped}");
}

pub(crate) async fn a_queue_has_at_most_its_limit_of_consumer_groups(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let (q, _) = queue_with_groups(&r, 0, ConsumerGroupDetails::default()).await;
    let mut last = String::new();
    for i in 1..berth_core::limits::MAX_CONSUMER_GROUPS {
        last = group(&r, &q, named(&format!("g{i}"), "")).await;
    }
    let one_more = r.engine.create_consumer_group(T, &q, named("one more", ""), None).await;
    assert!(matches!(one_more, Err(QueueError::LimitExceeded(_))), "{one_more:?}");
    r.engine.delete_consumer_group(T, &last, None).await.unwrap();
    group(&r, &q, named("one more", "")).await;
}

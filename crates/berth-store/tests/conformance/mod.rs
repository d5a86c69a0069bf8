//! The backend-neutral rules of the store contract, driven through the engine with a
//! manual clock: no sleeps for time, which moves only when a test says so. Every backend
//! runs the whole suite: its test file implements [`Backend`] and calls
//! `conformance_suite!(backend)`, which makes one `#[tokio::test]` per rule.

use std::sync::Arc;
use std::time::Duration;

use berth_core::delivery::Standing;
use berth_core::engine::{spec_with_defaults, GetMessages, Peek, PolicyValues, QueueChange};
use berth_core::model::{NewMessage, PurgeTarget};
use berth_core::store::{Moved, Store, StoreObserver};
use berth_core::{Engine, ManualClock, QueueError, Timestamp};
use tokio_util::sync::CancellationToken;

pub(crate) mod consumer_groups;

pub(crate) const T: &str = "ocid1.tenancy.oc1..a";

/// A store under test.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// Opens the store: a new, empty database the first time, the same database after
    /// (as a restarted server does).
    async fn open(&self) -> Arc<dyn Store>;
}

pub(crate) struct Rig {
    pub(crate) engine: Engine,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) backend: Arc<dyn Backend>,
}

pub(crate) async fn rig(backend: Arc<dyn Backend>) -> Rig {
    let store = backend.open().await;
    let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
    let engine = Engine::new(store.clone(), clock.clone(), "iad".into(), CancellationToken::new()).await.unwrap();
    Rig { engine, clock, store, backend }
}

impl Rig {
    pub(crate) async fn queue(&self, values: PolicyValues) -> String {
        self.queue_of(T, values).await
    }

    pub(crate) async fn queue_of(&self, tenancy: &str, values: PolicyValues) -> String {
        let spec = spec_with_defaults("q".into(), tenancy.into(), values).unwrap();
        let work = self.engine.create_queue(tenancy, spec, None).await.unwrap();
        work.resources[0].identifier.clone()
    }

    pub(crate) async fn put(&self, queue: &str, contents: &[&str]) -> Vec<i64> {
        self.put_in(queue, "", contents).await
    }

    pub(crate) async fn put_in(&self, queue: &str, channel: &str, contents: &[&str]) -> Vec<i64> {
        let messages = contents.iter().map(|c| message(c, channel)).collect();
        self.engine.put_messages(T, queue, messages).await.unwrap().into_iter().map(|p| p.id).collect()
    }

    /// GetMessages without waiting.
    pub(crate) async fn get(&self, queue: &str, limit: u32, visibility: u32) -> Vec<berth_core::engine::Delivered> {
        self.get_with(queue, limit, visibility, None, false).await
    }

    pub(crate) async fn get_with(
        &self,
        queue: &str,
        limit: u32,
        visibility: u32,
        channel: Option<&str>,
        dead_letter: bool,
    ) -> Vec<berth_core::engine::Delivered> {
        let params = GetMessages::new(
            Some(visibility.into()),
            Some(0),
            Some(limit.into()),
            channel.map(String::from),
            dead_letter,
        )
        .unwrap();
        self.engine.get_messages(T, queue, params).await.unwrap()
    }

    pub(crate) fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Closes the store and opens its database again, as a restart of the server does.
    pub(crate) async fn reopen(self) -> Rig {
        let Rig { engine, clock, store, backend } = self;
        store.close().await.unwrap();
        drop((engine, store));
        let store = backend.open().await;
        let engine = Engine::new(store.clone(), clock.clone(), "iad".into(), CancellationToken::new()).await.unwrap();
        Rig { engine, clock, store, backend }
    }
}

impl Rig {
    pub(crate) fn clock_now(&self) -> Timestamp {
        berth_core::Clock::now(self.clock.as_ref())
    }
}

pub(crate) fn message(content: &str, channel: &str) -> NewMessage {
    NewMessage { content: content.into(), channel: channel.into(), properties: None, delay_secs: None }
}

pub(crate) fn contents(got: &[berth_core::engine::Delivered]) -> Vec<&str> {
    got.iter().map(|d| d.message.content.as_str()).collect()
}

/// Returns once `n` long polls of the engine found nothing and wait.
pub(crate) async fn polls_waiting(engine: &Engine, n: usize) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while engine.waiting_polls() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    waited.await.unwrap_or_else(|_| panic!("{n} polls never waited ({} do)", engine.waiting_polls()));
}

/// A GetMessages waiting up to 20 s, running on its own task.
pub(crate) fn spawn_long_poll(
    r: &Arc<Rig>,
    q: &str,
) -> tokio::task::JoinHandle<Result<Vec<berth_core::engine::Delivered>, QueueError>> {
    let (r, q) = (r.clone(), q.to_owned());
    tokio::spawn(async move {
        let params = GetMessages::new(Some(30), Some(20), Some(5), None, false).unwrap();
        r.engine.get_messages(T, &q, params).await
    })
}

/// A GetMessages of at most `limit` waiting up to 20 s, optionally on one channel or the DLQ.
pub(crate) fn spawn_poll(
    r: &Arc<Rig>,
    q: &str,
    limit: i64,
    channel: Option<&str>,
    dead_letter: bool,
) -> tokio::task::JoinHandle<Vec<String>> {
    let (r, q, channel) = (r.clone(), q.to_owned(), channel.map(String::from));
    tokio::spawn(async move {
        let params = GetMessages::new(Some(30), Some(20), Some(limit), channel, dead_letter).unwrap();
        let got = r.engine.get_messages(T, &q, params).await.unwrap();
        got.into_iter().map(|d| d.message.content).collect()
    })
}

/// Waits for a poll well within its 20 s wait: it was woken, not timed out.
pub(crate) async fn woken(poll: tokio::task::JoinHandle<Vec<String>>) -> Vec<String> {
    tokio::time::timeout(Duration::from_secs(5), poll).await.expect("woken by the put").unwrap()
}

/// What the polls got together, sorted; each must have been woken.
pub(crate) async fn all_woken(polls: impl IntoIterator<Item = tokio::task::JoinHandle<Vec<String>>>) -> Vec<String> {
    let mut got = Vec::new();
    for poll in polls {
        got.extend(woken(poll).await);
    }
    got.sort();
    got
}

pub(crate) async fn listed(r: &Rig) -> usize {
    r.engine.list_work_requests(T, None, None, None, None).await.unwrap().items.len()
}

pub(crate) async fn messages_come_out_in_the_order_they_went_in(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    r.put(&q, &["1", "2", "3"]).await;
    r.put(&q, &["4", "5"]).await;
    assert_eq!(contents(&r.get(&q, 2, 30).await), ["1", "2"]);
    assert_eq!(contents(&r.get(&q, 10, 30).await), ["3", "4", "5"]);
}

pub(crate) async fn leased_message_is_invisible_until_its_lease_ends_then_redelivered_first(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    r.put(&q, &["a", "b"]).await;
    let first = r.get(&q, 1, 10).await;
    assert_eq!(contents(&first), ["a"]);
    assert_eq!(contents(&r.get(&q, 5, 10).await), ["b"]);
    assert!(r.get(&q, 5, 10).await.is_empty());
    r.advance(9);
    assert!(r.get(&q, 5, 10).await.is_empty(), "lease still running");
    r.advance(2);
    let again = r.get(&q, 1, 10).await;
    assert_eq!(contents(&again), ["a"]);
    assert_eq!(again[0].message.delivery_count, 2);
}

pub(crate) async fn messages_given_back_come_out_before_newer_ones_in_a_long_backlog(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    let numbers: Vec<String> = (1..=100).map(|n| n.to_string()).collect();
    for batch in numbers.chunks(20) {
        r.put(&q, &batch.iter().map(String::as_str).collect::<Vec<_>>()).await;
    }
    let first = r.get(&q, 20, 10).await;
    for _ in 0..2 {
        assert_eq!(r.get(&q, 20, 30).await.len(), 20);
    }
    // Given back by a zero visibility: before the 40 newer ones still waiting.
    let given_back = first[..5].iter().map(|d| (d.receipt.clone(), 0)).collect();
    for updated in r.engine.update_messages(T, &q, given_back).await.unwrap() {
        updated.unwrap();
    }
    let expected: Vec<String> = (1..=5).chain(61..=75).map(|n| n.to_string()).collect();
    assert_eq!(contents(&r.get(&q, 20, 30).await), expected);
    // Their lease ended: before the newer ones too, whether the get or a sweep ends it.
    r.advance(11);
    let expected: Vec<String> = (6..=20).chain(76..=80).map(|n| n.to_string()).collect();
    assert_eq!(contents(&r.get(&q, 20, 30).await), expected);
    let short = r.get(&q, 5, 10).await;
    assert_eq!(contents(&short), ["81", "82", "83", "84", "85"]);
    r.advance(11);
    assert_eq!(r.store.sweep(r.clock_now(), 100).await.unwrap().released, 5);
    let expected: Vec<String> = (81..=90).map(|n| n.to_string()).collect();
    assert_eq!(contents(&r.get(&q, 10, 30).await), expected);
    // One channel alike.
    let in_x: Vec<String> = (1..=40).map(|n| format!("x{n}")).collect();
    for batch in in_x.chunks(20) {
        r.put_in(&q, "x", &batch.iter().map(String::as_str).collect::<Vec<_>>()).await;
    }
    let first = r.get_with(&q, 10, 10, Some("x"), false).await;
    assert_eq!(r.get_with(&q, 10, 30, Some("x"), false).await.len(), 10);
    r.advance(11);
    let expected: Vec<String> = (1..=10).map(|n| format!("x{n}")).collect();
    assert_eq!(contents(&r.get_with(&q, 10, 30, Some("x"), false).await), expected);
    assert_eq!(first.len(), 10);
}

pub(crate) async fn a_user_name_is_taken_once_per_tenancy(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let one = r.store.ensure_tenancy("one", "ocid1.tenancy.oc1..one").await.unwrap();
    let two = r.store.ensure_tenancy("two", "ocid1.tenancy.oc1..two").await.unwrap();
    let user = |id: &str, tenancy: &berth_core::model::Tenancy| berth_core::model::User {
        id: id.into(),
        tenancy_id: tenancy.id.clone(),
        name: "admin".into(),
        fingerprint: format!("fp-{id}"),
        public_key_der: vec![1, 2, 3],
        stomp_passcode_sha256: "00".into(),
    };
    assert!(r.store.insert_user(&user("u1", &one)).await.unwrap());
    assert!(!r.store.insert_user(&user("u2", &one)).await.unwrap(), "the name is taken in tenancy one");
    assert!(r.store.insert_user(&user("u3", &two)).await.unwrap(), "but free in tenancy two");
    let kept = r.store.user_by_name("one", "admin").await.unwrap().unwrap();
    assert_eq!(kept.id, "u1", "the first one stays");
    // Listed for the admin CLI: tenancies by name, users by tenancy.
    let names: Vec<String> = r.store.tenancies().await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names.iter().filter(|n| ["one", "two"].contains(&n.as_str())).collect::<Vec<_>>(), ["one", "two"]);
    let users: Vec<(String, String)> = r
        .store
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.tenancy_id, u.id))
        .filter(|(t, _)| t.ends_with("..one") || t.ends_with("..two"))
        .collect();
    assert_eq!(users, [(one.id.clone(), "u1".to_string()), (two.id.clone(), "u3".to_string())]);
}

pub(crate) async fn receipt_from_expired_lease_is_rejected_for_update_and_delete(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    r.put(&q, &["a"]).await;
    let receipt = r.get(&q, 1, 5).await[0].receipt.clone();
    r.advance(6);
    let updated = r.engine.update_messages(T, &q, vec![(receipt.clone(), 30)]).await.unwrap();
    assert!(matches!(updated[0], Err(QueueError::ReceiptInvalid)));
    let deleted = r.engine.delete_messages(T, &q, vec![receipt]).await.unwrap();
    assert!(matches!(deleted[0], Err(QueueError::ReceiptInvalid)));
}

pub(crate) async fn receipt_of_a_superseded_lease_is_rejected_and_the_current_one_works(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    r.put(&q, &["a"]).await;
    let old = r.get(&q, 1, 5).await[0].receipt.clone();
    r.advance(6);
    let new = r.get(&q, 1, 5).await[0].receipt.clone();
    assert!(r.engine.delete_messages(T, &q, vec![old]).await.unwrap()[0].is_err());
    assert!(r.engine.delete_messages(T, &q, vec![new.clone()]).await.unwrap()[0].is_ok());
    assert!(r.engine.delete_messages(T, &q, vec![new]).await.unwrap()[0].is_err(), "deleted twice");
}

pub(crate) async fn receipt_is_bound_to_its_queue(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q1 = r.queue(PolicyValues::default()).await;
    let q2 = r.queue(PolicyValues::default()).await;
    r.put(&q1, &["a"]).await;
    let receipt = r.get(&q1, 1, 30).await[0].receipt.clone();
    assert!(matches!(
        r.engine.delete_messages(T, &q2, vec![receipt.clone()]).await.unwrap()[0],
        Err(QueueError::ReceiptInvalid)
    ));
    assert!(r.engine.delete_messages(T, &q1, vec![receipt]).await.unwrap()[0].is_ok());
}

pub(crate) async fn update_extends_the_lease_relative_to_now_and_zero_releases_it(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    r.put(&q, &["a"]).await;
    let receipt = r.get(&q, 1, 5).await[0].receipt.clone();
    r.advance(4);
    let (_, visible_after) =
        r.engine.update_messages(T, &q, vec![(receipt.clone(), 20)]).await.unwrap()[0].as_ref().map(|v| *v).unwrap();
    assert_eq!(visible_after, r.clock_now().plus_secs(20));
    r.advance(10);
    assert!(r.get(&q, 1, 5).await.is_empty(), "extended lease still running");
    r.engine.update_messages(T, &q, vec![(receipt, 0)]).await.unwrap()[0].as_ref().unwrap();
    assert_eq!(contents(&r.get(&q, 1, 5).await), ["a"], "visibility 0 makes it visible at once");
}

pub(crate) async fn delivery_count_rises_even_with_zero_visibility(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    r.put(&q, &["a"]).await;
    for expected in 1..=3 {
        let got = r.get(&q, 1, 0).await;
        assert_eq!(got[0].message.delivery_count, expected);
    }
}

pub(crate) async fn message_is_dead_lettered_after_max_deliveries_and_can_be_consumed_and_redriven(
    backend: Arc<dyn Backend>,
) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues { dead_letter_after: Some(2), ..PolicyValues::default() }).await;
    r.put(&q, &["poison", "fine"]).await;
    for _ in 0..2 {
        assert_eq!(contents(&r.get(&q, 1, 5).await), ["poison"]);
        r.advance(6);
    }
    // The poison message used its two deliveries: it is in the DLQ now.
    let stats = r.engine.stats(T, &q, None).await.unwrap();
    assert_eq!((stats.queue.visible, stats.dead_letter.visible), (1, 1));
    assert_eq!(contents(&r.get(&q, 5, 5).await), ["fine"]);
    let from_dlq = r.get_with(&q, 5, 30, None, true).await;
    assert_eq!(contents(&from_dlq), ["poison"]);
    assert_eq!(from_dlq[0].message.delivery_count, 3);
    // A DLQ receipt works on the DLQ message; let it go back and redrive.
    r.engine.update_messages(T, &q, vec![(from_dlq[0].receipt.clone(), 0)]).await.unwrap()[0].as_ref().unwrap();
    assert_eq!(r.engine.redrive(T, &q, None).await.unwrap(), 1);
    let back = r.get(&q, 5, 5).await;
    assert_eq!(contents(&back), ["poison"]);
    assert_eq!(back[0].message.delivery_count, 1, "redrive resets the delivery count");
}

pub(crate) async fn zero_max_deliveries_never_dead_letters(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    r.put(&q, &["a"]).await;
    for _ in 0..25 {
        assert_eq!(r.get(&q, 1, 1).await.len(), 1);
        r.advance(2);
    }
    assert_eq!(r.engine.stats(T, &q, None).await.unwrap().dead_letter.visible, 0);
}

pub(crate) async fn message_past_retention_is_never_delivered_and_is_swept(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues { retention: Some(10), ..PolicyValues::default() }).await;
    r.put(&q, &["old"]).await;
    r.advance(11);
    r.put(&q, &["new"]).await;
    assert_eq!(contents(&r.get(&q, 5, 30).await), ["new"]);
    let report = r.store.sweep(r.clock_now(), 100).await.unwrap();
    assert_eq!(report.expired, 1);
}

pub(crate) async fn retention_sweeps_every_channel_and_queues_that_were_empty_and_leased_messages_when_their_lease_ends(
    backend: Arc<dyn Backend>,
) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues { retention: Some(10), ..PolicyValues::default() }).await;
    // Seen empty first: the sweeper must still come back for messages put afterwards.
    assert_eq!(r.store.sweep(r.clock_now(), 100).await.unwrap().expired, 0);
    r.put(&q, &["a1", "a2"]).await;
    r.put_in(&q, "c1", &["b"]).await;
    r.put_in(&q, "c2", &["c"]).await;
    let leased = r.get_with(&q, 1, 60, Some("c2"), false).await;
    r.advance(5);
    r.put_in(&q, "c1", &["young"]).await;
    r.advance(6);
    assert_eq!(r.store.sweep(r.clock_now(), 100).await.unwrap().expired, 3);
    let outcome = r.engine.delete_messages(T, &q, vec![leased[0].receipt.clone()]).await.unwrap();
    assert!(outcome[0].is_err(), "the expired message's lease ended with it");
    let outcome = r.engine.update_messages(T, &q, vec![(leased[0].receipt.clone(), 30)]).await.unwrap();
    assert!(outcome[0].is_err(), "nor can it be extended");
    let stats = r.engine.stats(T, &q, None).await.unwrap().queue;
    assert_eq!((stats.visible, stats.in_flight), (1, 0), "only the young message counts");
    r.advance(5);
    assert_eq!(r.store.sweep(r.clock_now(), 100).await.unwrap().expired, 1);
    r.advance(50);
    assert_eq!(r.store.sweep(r.clock_now(), 100).await.unwrap().expired, 1, "gone when its lease ends");
    assert_eq!(r.engine.stats(T, &q, None).await.unwrap(), Default::default());
}

pub(crate) async fn a_sweep_expires_at_most_its_batch_and_the_next_one_goes_on(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues { retention: Some(10), ..PolicyValues::default() }).await;
    r.put(&q, &["1", "2", "3"]).await;
    r.put_in(&q, "c", &["4", "5"]).await;
    r.advance(11);
    assert_eq!(r.store.sweep(r.clock_now(), 2).await.unwrap().expired, 2);
    assert_eq!(r.store.sweep(r.clock_now(), 2).await.unwrap().expired, 2);
    assert_eq!(r.store.sweep(r.clock_now(), 2).await.unwrap().expired, 1);
    assert_eq!(r.store.sweep(r.clock_now(), 2).await.unwrap().expired, 0);
}

pub(crate) async fn put_reports_expire_after_as_creation_plus_retention(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues { retention: Some(600), ..PolicyValues::default() }).await;
    let put = r.engine.put_messages(T, &q, vec![message("a", "")]).await.unwrap();
    assert_eq!(put[0].expire_at, r.clock_now().plus_secs(600));
    let got = r.get(&q, 1, 30).await;
    assert_eq!(got[0].message.expire_at, got[0].message.created_at.plus_secs(600));
}

pub(crate) async fn delayed_message_stays_invisible_until_its_delay_ends(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    let delayed = NewMessage { delay_secs: Some(30), ..message("later", "") };
    r.engine.put_messages(T, &q, vec![delayed, message("now", "")]).await.unwrap();
    assert_eq!(contents(&r.get(&q, 5, 60).await), ["now"]);
    let stats = r.engine.stats(T, &q, None).await.unwrap();
    assert_eq!(stats.queue.delayed, 1);
    r.advance(31);
    let got = r.get(&q, 5, 60).await;
    assert_eq!(contents(&got), ["later"]);
    assert_eq!(got[0].message.delivery_count, 1);
}

pub(crate) async fn delays_and_shortened_leases_begun_after_a_get_still_end_on_time(backend: Arc<dyn Backend>) {
    // A get remembers when the queue's first lease or delay ends, to skip looking before
    // then: a later delay, or a lease moved earlier, must move that time.
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    assert!(r.get(&q, 1, 30).await.is_empty());
    let delayed = NewMessage { delay_secs: Some(5), ..message("delayed", "") };
    r.engine.put_messages(T, &q, vec![delayed]).await.unwrap();
    r.put(&q, &["leased"]).await;
    let receipt = r.get(&q, 1, 60).await[0].receipt.clone();
    r.advance(6);
    assert_eq!(contents(&r.get(&q, 1, 60).await), ["delayed"]);
    r.engine.update_messages(T, &q, vec![(receipt, 1)]).await.unwrap()[0].as_ref().unwrap();
    r.advance(2);
    assert_eq!(contents(&r.get(&q, 1, 60).await), ["leased"]);
}

pub(crate) async fn queue_default_delay_applies_when_a_message_has_none(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues { delivery_delay: Some(5), ..PolicyValues::default() }).await;
    r.put(&q, &["a"]).await;
    assert!(r.get(&q, 1, 30).await.is_empty());
    r.advance(5);
    assert_eq!(r.get(&q, 1, 30).await.len(), 1);
}

pub(crate) async fn channel_filter_serves_only_that_channel_in_order(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    r.put_in(&q, "a", &["a1", "a2"]).await;
    r.put_in(&q, "b", &["b1"]).await;
    assert_eq!(contents(&r.get_with(&q, 10, 30, Some("b"), false).await), ["b1"]);
    assert_eq!(contents(&r.get_with(&q, 10, 30, Some("a"), false).await), ["a1", "a2"]);
}

pub(crate) async fn unfiltered_gets_serve_every_busy_channel(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    let many: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    for channel in ["x", "y", "z"] {
        for chunk in refs.chunks(20) {
            r.put_in(&q, channel, chunk).await;
        }
    }
    let mut served = std::collections::BTreeMap::new();
    for _ in 0..60 {
        for d in r.get(&q, 1, 300).await {
            *served.entry(d.message.channel.clone()).or_insert(0) += 1;
        }
    }
    assert_eq!(served.len(), 3, "{served:?}");
    assert!(served.values().all(|&n| n >= 5), "a channel starved: {served:?}");
}

pub(crate) async fn list_channels_pages_through_non_empty_channels(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    for channel in ["c3", "c1", "c2"] {
        r.put_in(&q, channel, &["m"]).await;
    }
    r.put(&q, &["default channel is not listed"]).await;
    let first = r.engine.list_channels(T, &q, None, None, Some(2)).await.unwrap();
    assert_eq!(first.items, ["c1", "c2"]);
    let second = r.engine.list_channels(T, &q, None, first.next.as_deref(), Some(2)).await.unwrap();
    assert_eq!((second.items, second.next), (vec!["c3".to_string()], None));
    let prefixed = r.engine.list_channels(T, &q, Some("c2"), None, None).await.unwrap();
    assert_eq!(prefixed.items, ["c2"]);
}

pub(crate) async fn a_queue_holds_at_most_256_channels(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    for batch in 0..13 {
        let messages = (0..20)
            .map(|i| message("m", &format!("ch{:03}", batch * 20 + i)))
            .take(if batch == 12 { 16 } else { 20 })
            .collect();
        r.engine.put_messages(T, &q, messages).await.unwrap();
    }
    let err = r.engine.put_messages(T, &q, vec![message("m", "one-too-many")]).await.unwrap_err();
    assert!(matches!(err, QueueError::LimitExceeded(_)), "{err:?}");
    r.engine.put_messages(T, &q, vec![message("m", "ch000")]).await.expect("existing channel still works");
}

pub(crate) async fn put_limits_are_enforced(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    let too_many = (0..21).map(|_| message("m", "")).collect();
    assert!(matches!(r.engine.put_messages(T, &q, too_many).await, Err(QueueError::InvalidParameter(_))));
    let too_big = vec![message(&"x".repeat(128 * 1024 + 1), "")];
    assert!(matches!(r.engine.put_messages(T, &q, too_big).await, Err(QueueError::InvalidParameter(_))));
    let too_much = (0..5).map(|_| message(&"x".repeat(120 * 1024), "")).collect();
    assert!(matches!(r.engine.put_messages(T, &q, too_much).await, Err(QueueError::InvalidParameter(_))));
    assert!(r.engine.stats(T, &q, None).await.unwrap().queue.visible == 0, "nothing stored");
}

pub(crate) async fn purge_removes_the_chosen_side_and_channels(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues { dead_letter_after: Some(1), ..PolicyValues::default() }).await;
    r.put_in(&q, "a", &["a1"]).await;
    r.put_in(&q, "b", &["b1", "b2"]).await;
    r.get_with(&q, 1, 1, Some("b"), false).await;
    r.advance(2); // b1's only delivery ended undeleted: it is due for the DLQ
    let before = r.engine.stats(T, &q, None).await.unwrap();
    assert_eq!((before.queue.visible, before.dead_letter.visible), (2, 1));
    r.engine.purge_queue(T, &q, None, PurgeTarget::Normal, Some(vec!["a".into()]), None).await.unwrap();
    let after = r.engine.stats(T, &q, None).await.unwrap();
    assert_eq!((after.queue.visible, after.dead_letter.visible), (1, 1));
    r.engine.purge_queue(T, &q, None, PurgeTarget::DeadLetter, None, None).await.unwrap();
    assert_eq!(r.engine.stats(T, &q, None).await.unwrap().dead_letter.visible, 0);
    r.engine.purge_queue(T, &q, None, PurgeTarget::Both, None, None).await.unwrap();
    assert_eq!(r.engine.stats(T, &q, None).await.unwrap().queue.visible, 0);
}

pub(crate) async fn another_tenancy_cannot_see_or_touch_a_queue(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    let other = "ocid1.tenancy.oc1..b";
    assert!(matches!(r.engine.get_queue(other, &q).await, Err(QueueError::QueueNotFound)));
    assert!(matches!(r.engine.put_messages(other, &q, vec![message("m", "")]).await, Err(QueueError::QueueNotFound)));
    assert!(matches!(r.engine.delete_queue(other, &q, None).await, Err(QueueError::QueueNotFound)));
    let filter = berth_core::model::QueueFilter {
        compartment_id: None,
        state: None,
        display_name: None,
        id: None,
        sort: berth_core::model::QueueSort::TimeCreated,
        descending: true,
    };
    assert!(r.engine.list_queues(other, &filter, None, None).await.unwrap().items.is_empty());
    assert_eq!(r.engine.list_queues(T, &filter, None, None).await.unwrap().items.len(), 1);
}

pub(crate) async fn stale_if_match_is_refused_and_fresh_one_applies(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    let version = r.engine.get_queue(T, &q).await.unwrap().version.to_string();
    let change = QueueChange { visibility_secs: Some(60), ..QueueChange::default() };
    r.engine.update_queue(T, &q, Some(&version), change.clone()).await.unwrap();
    assert!(matches!(r.engine.update_queue(T, &q, Some(&version), change).await, Err(QueueError::EtagMismatch)));
    assert_eq!(r.engine.get_queue(T, &q).await.unwrap().spec.policy.visibility_secs, 60);
}

pub(crate) async fn retry_token_replays_the_same_request_and_refuses_a_different_one(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let spec = spec_with_defaults("q".into(), T.into(), PolicyValues::default()).unwrap();
    let token = Some(("tok".to_string(), "digest-1".to_string()));
    let first = r.engine.create_queue(T, spec.clone(), token.clone()).await.unwrap();
    let again = r.engine.create_queue(T, spec.clone(), token).await.unwrap();
    assert_eq!(first.id, again.id);
    let other = r.engine.create_queue(T, spec, Some(("tok".into(), "digest-2".into()))).await;
    assert!(matches!(other, Err(QueueError::RetryTokenReused)));
}

pub(crate) async fn deleted_queue_reads_as_deleted_for_a_while_then_disappears_and_its_messages_are_reclaimed(
    backend: Arc<dyn Backend>,
) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    r.put(&q, &["a", "b"]).await;
    r.engine.delete_queue(T, &q, None).await.unwrap();
    let deleted = r.engine.get_queue(T, &q).await.unwrap();
    assert_eq!(deleted.state, berth_core::model::LifecycleState::Deleted);
    assert!(matches!(r.engine.stats(T, &q, None).await, Err(QueueError::QueueNotFound)), "no data plane");
    let report = r.store.sweep(r.clock_now(), 100).await.unwrap();
    assert_eq!(report.reclaimed, 2);
    assert!(r.engine.get_queue(T, &q).await.is_ok(), "reclaimed, still readable as DELETED");

    r.clock.advance(Duration::from_millis(berth_core::limits::DELETED_QUEUE_VISIBLE_MS as u64));
    r.store.sweep(r.clock_now(), 100).await.unwrap();
    assert!(matches!(r.engine.get_queue(T, &q).await, Err(QueueError::QueueNotFound)));
}

pub(crate) async fn messages_survive_reopening_the_store(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    r.put(&q, &["kept"]).await;
    let r = r.reopen().await;
    assert_eq!(contents(&r.get(&q, 5, 30).await), ["kept"]);
}

pub(crate) async fn leases_deletes_delays_and_dead_letters_survive_reopening_the_store(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues { dead_letter_after: Some(2), ..PolicyValues::default() }).await;
    let ids = r.put(&q, &["a", "b", "c", "d"]).await;
    let got = r.get(&q, 3, 60).await;
    assert_eq!(contents(&got), ["a", "b", "c"]);
    let props = [("k".to_string(), "v".to_string())].into_iter().collect();
    let with_props = NewMessage { properties: Some(props), ..message("p", "ch") };
    r.engine.put_messages(T, &q, vec![with_props]).await.unwrap();
    let delayed = NewMessage { delay_secs: Some(30), ..message("later", "") };
    r.engine.put_messages(T, &q, vec![delayed]).await.unwrap();
    r.engine.delete_messages(T, &q, vec![got[0].receipt.clone()]).await.unwrap()[0].as_ref().unwrap();
    r.engine.update_messages(T, &q, vec![(got[1].receipt.clone(), 120)]).await.unwrap()[0].as_ref().unwrap();
    // A second queue whose only message is dead-lettered before the restart.
    let q2 = r.queue(PolicyValues { dead_letter_after: Some(1), ..PolicyValues::default() }).await;
    r.put(&q2, &["x"]).await;
    r.get(&q2, 1, 1).await;
    r.advance(2);
    assert_eq!(r.engine.sweep(100).await.unwrap().dead_lettered, 1);
    // Raising the threshold afterwards does not undo the move.
    let change = QueueChange { dead_letter_after: Some(5), ..QueueChange::default() };
    r.engine.update_queue(T, &q2, None, change).await.unwrap();
    let before = (r.engine.stats(T, &q, None).await.unwrap(), r.engine.stats(T, &q2, None).await.unwrap());

    let r = r.reopen().await;
    let after = (r.engine.stats(T, &q, None).await.unwrap(), r.engine.stats(T, &q2, None).await.unwrap());
    assert_eq!(after, before, "the counts read back from disk");
    assert_eq!((after.0.queue.visible, after.0.queue.in_flight, after.0.queue.delayed), (2, 2, 1));
    r.advance(60); // c's lease (60 s) and the delay (30 s) have ended; b's (120 s from update) has not
    let mut again = r.get(&q, 10, 60).await;
    again.sort_by_key(|d| d.message.id);
    let seen: Vec<(&str, u32)> = again.iter().map(|d| (d.message.content.as_str(), d.message.delivery_count)).collect();
    assert_eq!(seen, [("c", 2), ("d", 1), ("p", 1), ("later", 1)], "delivery counts survive");
    assert_eq!(again[2].message.properties.as_ref().unwrap()["k"], "v");
    assert_eq!(again[2].message.channel, "ch");
    let deleted = r.engine.delete_messages(T, &q, vec![got[1].receipt.clone()]).await.unwrap();
    assert!(deleted[0].is_ok(), "b's extended lease is still current after the restart");
    let deleted = r.engine.delete_messages(T, &q, vec![got[0].receipt.clone()]).await.unwrap();
    assert!(deleted[0].is_err(), "a stays deleted");
    assert_eq!(contents(&r.get_with(&q2, 1, 30, None, true).await), ["x"], "x is still a dead letter");
    let next = r.put(&q, &["e"]).await[0];
    assert!(next > ids[3] + 2, "id {next} reused");
}

pub(crate) async fn a_lease_ended_before_a_restart_is_not_judged_again_after_it(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues { dead_letter_after: Some(0), ..PolicyValues::default() }).await;
    r.put(&q, &["m"]).await;
    r.get(&q, 1, 1).await;
    r.advance(2);
    assert_eq!(r.engine.sweep(100).await.unwrap().released, 1, "back in the queue: no DLQ then");
    // With the threshold lowered afterwards, the message already released must stay released.
    let change = QueueChange { dead_letter_after: Some(1), ..QueueChange::default() };
    r.engine.update_queue(T, &q, None, change).await.unwrap();
    let r = r.reopen().await;
    let got = r.get(&q, 1, 30).await;
    assert_eq!(contents(&got), ["m"]);
    assert_eq!(got[0].message.delivery_count, 2);
}

pub(crate) async fn waiting_get_returns_the_message_a_put_brings(backend: Arc<dyn Backend>) {
    let r = Arc::new(rig(backend).await);
    let q = r.queue(PolicyValues::default()).await;
    let poll = spawn_long_poll(&r, &q);
    polls_waiting(&r.engine, 1).await;
    r.put(&q, &["wake"]).await;
    let got = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("woken").unwrap().unwrap();
    assert_eq!(contents(&got), ["wake"]);
}

pub(crate) async fn a_long_poll_wakes_at_a_put_made_through_another_engine_over_the_store(backend: Arc<dyn Backend>) {
    // As with two nodes on one store: wakeups come from the store's change feed, not from
    // the engine that made the put.
    let r = Arc::new(rig(backend).await);
    let q = r.queue(PolicyValues::default()).await;
    let other = Engine::new(r.store.clone(), r.clock.clone(), "iad".into(), CancellationToken::new()).await.unwrap();
    let other = Arc::new(other);
    let (o, oq) = (other.clone(), q.clone());
    let poll = tokio::spawn(async move {
        let params = GetMessages::new(Some(30), Some(20), Some(5), None, false).unwrap();
        o.get_messages(T, &oq, params).await.unwrap().into_iter().map(|d| d.message.content).collect::<Vec<_>>()
    });
    polls_waiting(&other, 1).await;
    r.put(&q, &["from the other engine"]).await;
    assert_eq!(woken(poll).await, ["from the other engine"]);
}

pub(crate) async fn a_put_of_two_messages_wakes_two_waiting_pollers(backend: Arc<dyn Backend>) {
    let r = Arc::new(rig(backend).await);
    let q = r.queue(PolicyValues::default()).await;
    let polls = [spawn_poll(&r, &q, 1, None, false), spawn_poll(&r, &q, 1, None, false)];
    polls_waiting(&r.engine, 2).await;
    r.put(&q, &["a", "b"]).await;
    assert_eq!(all_woken(polls).await, ["a", "b"]);
}

pub(crate) async fn a_wakeup_for_new_messages_is_not_spent_on_pollers_of_other_channels_or_the_dlq(
    backend: Arc<dyn Backend>,
) {
    let r = Arc::new(rig(backend).await);
    let q = r.queue(PolicyValues::default()).await;
    // Started first, so they would be first in line for a shared wakeup.
    let on_channel = spawn_poll(&r, &q, 1, Some("x"), false);
    let on_dlq = spawn_poll(&r, &q, 1, None, true);
    polls_waiting(&r.engine, 2).await;
    let any = spawn_poll(&r, &q, 1, None, false);
    polls_waiting(&r.engine, 3).await;
    r.put(&q, &["main"]).await;
    assert_eq!(woken(any).await, ["main"]);
    r.put_in(&q, "x", &["on x"]).await;
    assert_eq!(woken(on_channel).await, ["on x"]);
    on_dlq.abort();
}

pub(crate) async fn a_message_freed_by_an_ended_lease_does_not_use_up_the_wakeup_of_a_put(backend: Arc<dyn Backend>) {
    let r = Arc::new(rig(backend).await);
    let q = r.queue(PolicyValues::default()).await;
    r.put(&q, &["m0"]).await;
    assert_eq!(contents(&r.get(&q, 1, 15).await), ["m0"]); // a consumer that then goes away
    let polls = [spawn_poll(&r, &q, 1, None, false), spawn_poll(&r, &q, 1, None, false)];
    polls_waiting(&r.engine, 2).await; // timed for the lease's end
    r.advance(16);
    // The put wakes one poll; its lease takes m0, whose lease has ended and which comes
    // first. The other poll must still be woken for m1.
    r.put(&q, &["m1"]).await;
    assert_eq!(all_woken(polls).await, ["m0", "m1"]);
}

pub(crate) async fn a_sweep_that_ends_leases_wakes_the_waiting_polls(backend: Arc<dyn Backend>) {
    let r = Arc::new(rig(backend).await);
    let q = r.queue(PolicyValues::default()).await;
    r.put(&q, &["m0"]).await;
    assert_eq!(contents(&r.get(&q, 1, 15).await), ["m0"]);
    let poll = spawn_poll(&r, &q, 1, None, false);
    polls_waiting(&r.engine, 1).await; // timed for the lease's end
    r.advance(16);
    let report = r.engine.sweep(100).await.unwrap();
    assert_eq!(report.released, 1);
    assert_eq!(woken(poll).await, ["m0"]);
}

pub(crate) async fn message_ids_are_never_reused_after_deletes(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues::default()).await;
    let first = r.put(&q, &["a"]).await[0];
    let receipt = r.get(&q, 1, 30).await[0].receipt.clone();
    r.engine.delete_messages(T, &q, vec![receipt]).await.unwrap()[0].as_ref().unwrap();
    let second = r.put(&q, &["b"]).await[0];
    assert!(second > first, "id {second} reused after deleting {first}");
}

pub(crate) async fn redrive_leaves_dead_letter_messages_that_are_being_consumed(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let q = r.queue(PolicyValues { dead_letter_after: Some(1), ..PolicyValues::default() }).await;
    r.put(&q, &["x", "y"]).await;
    r.get(&q, 2, 1).await;
    r.advance(2); // both used their only delivery: dead-lettered
    let leased = r.get_with(&q, 1, 60, None, true).await;
    assert_eq!(contents(&leased), ["x"]);
    assert_eq!(r.engine.redrive(T, &q, None).await.unwrap(), 1, "only the DLQ message not being consumed moves");
    let deleted = r.engine.delete_messages(T, &q, vec![leased[0].receipt.clone()]).await.unwrap();
    assert!(deleted[0].is_ok(), "the DLQ consumer's lease survived the redrive");
    assert_eq!(contents(&r.get(&q, 5, 30).await), ["y"]);
}

pub(crate) async fn a_refused_put_does_not_undo_puts_committed_with_it(backend: Arc<dyn Backend>) {
    let r = Arc::new(rig(backend).await);
    let q = r.queue(PolicyValues::default()).await;
    for batch in 0..13 {
        let n = if batch == 12 { 16 } else { 20 };
        let messages = (0..n).map(|i| message("m", &format!("ch{:03}", batch * 20 + i))).collect();
        r.engine.put_messages(T, &q, messages).await.unwrap();
    }
    let before = r.engine.stats(T, &q, None).await.unwrap().queue.visible;
    // One refused put (a 257th channel) among many accepted ones, all in flight at once.
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let (r, q) = (r.clone(), q.clone());
            let channel = if i == 16 { "one-too-many".to_string() } else { "ch000".to_string() };
            tokio::spawn(async move { r.engine.put_messages(T, &q, vec![message("m", &channel)]).await })
        })
        .collect();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => {}
            Err(QueueError::LimitExceeded(_)) => refused += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(refused, 1);
    assert_eq!(r.engine.stats(T, &q, None).await.unwrap().queue.visible, before + 31);
}

pub(crate) async fn work_requests_are_kept_for_their_retention_then_swept(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let queue = r.queue(PolicyValues::default()).await;
    assert_eq!(listed(&r).await, 1, "CreateQueue's");
    r.clock.advance(Duration::from_millis(berth_core::limits::WORK_REQUEST_RETENTION_MS as u64 - 1));
    r.store.sweep(r.clock_now(), 100).await.unwrap();
    assert_eq!(listed(&r).await, 1, "still within its retention");
    r.clock.advance(Duration::from_millis(1));
    let report = r.store.sweep(r.clock_now(), 100).await.unwrap();
    assert_eq!((listed(&r).await, report.reclaimed), (0, 1));
    r.put(&queue, &["the queue itself stays"]).await;
}

pub(crate) async fn a_dead_letter_threshold_changed_through_another_engine_applies_at_once(backend: Arc<dyn Backend>) {
    // As with two nodes: the other engine still has the queue as it was in its cache, and
    // the store settles by the policy it holds.
    let r = rig(backend).await;
    let q = r.queue(PolicyValues { dead_letter_after: Some(0), ..PolicyValues::default() }).await;
    let other = Engine::new(r.store.clone(), r.clock.clone(), "iad".into(), CancellationToken::new()).await.unwrap();
    r.put(&q, &["m"]).await;
    let params = || GetMessages::new(Some(1), Some(0), Some(1), None, false).unwrap();
    assert_eq!(other.get_messages(T, &q, params()).await.unwrap().len(), 1, "leased once, through the other engine");
    let change = QueueChange { dead_letter_after: Some(1), ..QueueChange::default() };
    r.engine.update_queue(T, &q, None, change).await.unwrap();
    r.advance(2);
    assert!(other.get_messages(T, &q, params()).await.unwrap().is_empty(), "its only delivery was used");
    let stats = other.stats(T, &q, None).await.unwrap();
    assert_eq!((stats.queue.visible, stats.dead_letter.visible), (0, 1));
}

pub(crate) async fn a_queue_made_after_a_deleted_one_is_reclaimed_keeps_its_own_policy(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let old = r.queue(PolicyValues { dead_letter_after: Some(3), ..PolicyValues::default() }).await;
    r.put(&old, &["gone"]).await;
    r.engine.delete_queue(T, &old, None).await.unwrap();
    r.clock.advance(Duration::from_millis(berth_core::limits::DELETED_QUEUE_VISIBLE_MS as u64 + 1));
    for _ in 0..3 {
        r.engine.sweep(100).await.unwrap();
    }
    // A store may give the new queue the old one's internal row.
    let q = r.queue(PolicyValues { dead_letter_after: Some(1), ..PolicyValues::default() }).await;
    r.put(&q, &["m"]).await;
    assert_eq!(r.get(&q, 1, 1).await.len(), 1);
    r.advance(2);
    assert!(r.get(&q, 1, 1).await.is_empty(), "its one delivery was used: dead-lettered, not redelivered");
    assert_eq!(r.engine.stats(T, &q, None).await.unwrap().dead_letter.visible, 1);
}

pub(crate) async fn waiting_get_on_a_deleted_queue_ends_with_not_found(backend: Arc<dyn Backend>) {
    let r = Arc::new(rig(backend).await);
    let q = r.queue(PolicyValues::default()).await;
    let poll = spawn_long_poll(&r, &q);
    polls_waiting(&r.engine, 1).await;
    r.engine.delete_queue(T, &q, None).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("woken").unwrap();
    assert!(matches!(outcome, Err(QueueError::QueueNotFound)), "{outcome:?}");
}

/// A peek's page as (content, standing, delivery count), and its cursor.
async fn peeked(r: &Rig, q: &str, peek: Peek) -> (Vec<(String, Standing, u32)>, Option<String>) {
    let page = r.engine.peek(T, q, peek).await.unwrap();
    let shown = page.items.into_iter().map(|m| (m.content, m.standing, m.delivery_count)).collect();
    (shown, page.next)
}

pub(crate) async fn peek_shows_messages_where_they_stand_without_leasing_them(backend: Arc<dyn Backend>) {
    use Standing::{Delayed, InFlight, Visible};
    let v = |c: &str, n: u32| (c.to_string(), Visible, n);
    let r = rig(backend).await;
    let q = r.queue(PolicyValues { dead_letter_after: Some(2), retention: Some(100), ..PolicyValues::default() }).await;
    r.put_in(&q, "a", &["a1", "a2"]).await;
    r.put_in(&q, "b", &["b1"]).await;
    let delayed = NewMessage { delay_secs: Some(30), ..message("d", "") };
    r.engine.put_messages(T, &q, vec![delayed]).await.unwrap();
    assert_eq!(contents(&r.get_with(&q, 1, 10, Some("a"), false).await), ["a1"]);

    assert_eq!(peeked(&r, &q, Peek::default()).await, (vec![v("a2", 0), v("b1", 0)], None));
    let everything = Peek { in_flight: true, delayed: true, ..Peek::default() };
    let all = vec![("a1".into(), InFlight, 1), v("a2", 0), v("b1", 0), ("d".into(), Delayed, 0)];
    assert_eq!(peeked(&r, &q, everything.clone()).await, (all, None));
    let in_b = Peek { channel: Some("b".into()), in_flight: true, ..Peek::default() };
    assert_eq!(peeked(&r, &q, in_b).await.0, [v("b1", 0)]);
    // Pages of one: the cursor leads on, and the last page has none.
    let (first, next) = peeked(&r, &q, Peek { limit: Some(1), ..Peek::default() }).await;
    assert_eq!(first, [v("a2", 0)]);
    let (second, next) = peeked(&r, &q, Peek { limit: Some(1), page: next, ..Peek::default() }).await;
    assert_eq!((second, next), (vec![v("b1", 0)], None));

    // An ended lease stands where settling will put it: back in the queue, then (at the
    // threshold) in the DLQ; looking leases nothing and counts no delivery.
    r.advance(11);
    assert_eq!(peeked(&r, &q, Peek::default()).await.0, [v("a1", 1), v("a2", 0), v("b1", 0)]);
    let again = r.get_with(&q, 1, 10, Some("a"), false).await;
    assert_eq!((contents(&again), again[0].message.delivery_count), (vec!["a1"], 2));
    r.advance(11);
    assert_eq!(peeked(&r, &q, Peek::default()).await.0, [v("a2", 0), v("b1", 0)]);
    let dlq = Peek { dead_letter: true, ..Peek::default() };
    assert_eq!(peeked(&r, &q, dlq.clone()).await.0, [v("a1", 2)]);
    assert_eq!(r.engine.stats(T, &q, None).await.unwrap().dead_letter.visible, 1);
    let mut rest = contents(&r.get(&q, 5, 10).await).into_iter().map(String::from).collect::<Vec<_>>();
    rest.sort();
    assert_eq!(rest, ["a2", "b1"], "peeked messages are still there to get");

    r.advance(100);
    assert_eq!(peeked(&r, &q, everything).await.0, []);
    assert_eq!(peeked(&r, &q, Peek { in_flight: true, ..dlq }).await.0, [], "past retention");
    let bad = Peek { page: Some("x".into()), ..Peek::default() };
    assert!(matches!(r.engine.peek(T, &q, bad).await, Err(QueueError::InvalidParameter(_))));
    let too_many = Peek { limit: Some(101), ..Peek::default() };
    assert!(matches!(r.engine.peek(T, &q, too_many).await, Err(QueueError::InvalidParameter(_))));
}

/// What a store told its observer.
#[derive(Default)]
struct Recorded {
    commits: std::sync::atomic::AtomicUsize,
    settled: std::sync::Mutex<std::collections::HashMap<berth_core::model::QueueRow, Moved>>,
}

impl StoreObserver for Recorded {
    fn committed(&self, writes: usize, _took: Duration) {
        assert!(writes >= 1, "a commit carries a write");
        self.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn settled(&self, queue: berth_core::model::QueueRow, moved: Moved) {
        let mut settled = self.settled.lock().unwrap();
        let total = settled.entry(queue).or_default();
        total.expired += moved.expired;
        total.dead_lettered += moved.dead_lettered;
    }
}

pub(crate) async fn the_observer_hears_of_commits_dead_letters_and_expiry_per_queue(backend: Arc<dyn Backend>) {
    let r = rig(backend).await;
    let recorded = Arc::new(Recorded::default());
    r.store.observe(recorded.clone());
    let policy = PolicyValues { dead_letter_after: Some(1), retention: Some(10), ..PolicyValues::default() };
    let (q, other) = (r.queue(policy.clone()).await, r.queue(policy).await);
    let row = |id: &str| {
        let store = r.store.clone();
        let id = id.to_owned();
        async move { store.queue(T, &id).await.unwrap().unwrap().row }
    };
    let (q_row, other_row) = (row(&q).await, row(&other).await);
    r.put(&q, &["poison", "old"]).await;
    r.put(&other, &["purged"]).await;
    r.engine.purge_queue(T, &other, None, PurgeTarget::Both, None, None).await.unwrap();
    r.put(&other, &["kept"]).await;
    let commits = recorded.commits.load(std::sync::atomic::Ordering::Relaxed);
    assert!(commits >= 2, "puts commit: {commits}");
    assert_eq!(contents(&r.get(&q, 1, 1).await), ["poison"]);
    r.advance(2);
    // The next lease settles the ended one: to the DLQ.
    assert_eq!(contents(&r.get(&q, 1, 30).await), ["old"]);
    let moved = |row| recorded.settled.lock().unwrap().get(&row).copied().unwrap_or_default();
    assert_eq!(moved(q_row), Moved { expired: 0, dead_lettered: 1 });
    assert_eq!(moved(other_row), Moved::default(), "a purge is neither expiry nor dead-lettering");
    r.advance(10);
    while r.engine.sweep(100).await.unwrap().total() > 0 {}
    // Past retention: "poison" in the DLQ and "kept"; "old" once its lease ends.
    assert_eq!(moved(q_row), Moved { expired: 1, dead_lettered: 1 });
    assert_eq!(moved(other_row), Moved { expired: 1, dead_lettered: 0 });
    r.advance(30);
    while r.engine.sweep(100).await.unwrap().total() > 0 {}
    assert_eq!(moved(q_row), Moved { expired: 2, dead_lettered: 1 });
}

/// One `#[tokio::test]` per rule, each on a fresh store from `$backend` (an expression
/// giving an `Arc<dyn Backend>`).
macro_rules! conformance_suite {
    ($backend:expr) => {
        #[tokio::test]
        async fn each_group_reads_its_own_copy_with_its_own_leases_receipts_and_counts() {
            conformance::consumer_groups::each_group_reads_its_own_copy_with_its_own_leases_receipts_and_counts($backend).await
        }
        #[tokio::test]
        async fn a_filter_takes_only_matching_messages_and_a_message_no_group_takes_is_dropped() {
            conformance::consumer_groups::a_filter_takes_only_matching_messages_and_a_message_no_group_takes_is_dropped($backend).await
        }
        #[tokio::test]
        async fn a_group_dead_letters_by_its_own_threshold_or_its_queues() {
            conformance::consumer_groups::a_group_dead_letters_by_its_own_threshold_or_its_queues($backend).await
        }
        #[tokio::test]
        async fn a_disabled_group_gets_no_new_messages_and_a_new_group_starts_with_later_ones() {
            conformance::consumer_groups::a_disabled_group_gets_no_new_messages_and_a_new_group_starts_with_later_ones($backend).await
        }
        #[tokio::test]
        async fn a_deleted_group_is_gone_and_its_copies_are_reclaimed() {
            conformance::consumer_groups::a_deleted_group_is_gone_and_its_copies_are_reclaimed($backend).await
        }
        #[tokio::test]
        async fn purge_empties_the_primary_group_one_group_or_all() {
            conformance::consumer_groups::purge_empties_the_primary_group_one_group_or_all($backend).await
        }
        #[tokio::test]
        async fn a_long_poll_of_a_group_wakes_at_a_put_to_its_queue() {
            conformance::consumer_groups::a_long_poll_of_a_group_wakes_at_a_put_to_its_queue($backend).await
        }
        #[tokio::test]
        async fn a_retried_create_replays_its_work_request_and_a_refused_one_holds_no_token() {
            conformance::consumer_groups::a_retried_create_replays_its_work_request_and_a_refused_one_holds_no_token($backend).await
        }
        #[tokio::test]
        async fn the_primary_group_comes_with_the_capability_once_and_takes_its_settings() {
            conformance::consumer_groups::the_primary_group_comes_with_the_capability_once_and_takes_its_settings($backend).await
        }
        #[tokio::test]
        async fn deleting_a_queue_wakes_the_long_polls_of_its_groups() {
            conformance::consumer_groups::deleting_a_queue_wakes_the_long_polls_of_its_groups($backend).await
        }
        #[tokio::test]
        async fn ids_of_a_first_put_no_group_takes_are_not_reused_after_a_restart() {
            conformance::consumer_groups::ids_of_a_first_put_no_group_takes_are_not_reused_after_a_restart($backend).await
        }
        #[tokio::test]
        async fn a_queue_has_at_most_its_limit_of_consumer_groups() {
            conformance::consumer_groups::a_queue_has_at_most_its_limit_of_consumer_groups($backend).await
        }
        #[tokio::test]
        async fn the_observer_hears_of_commits_dead_letters_and_expiry_per_queue() {
            conformance::the_observer_hears_of_commits_dead_letters_and_expiry_per_queue($backend).await
        }
        #[tokio::test]
        async fn peek_shows_messages_where_they_stand_without_leasing_them() {
            conformance::peek_shows_messages_where_they_stand_without_leasing_them($backend).await
        }
        #[tokio::test]
        async fn a_queue_made_after_a_deleted_one_is_reclaimed_keeps_its_own_policy() {
            conformance::a_queue_made_after_a_deleted_one_is_reclaimed_keeps_its_own_policy($backend).await
        }
        #[tokio::test]
        async fn a_dead_letter_threshold_changed_through_another_engine_applies_at_once() {
            conformance::a_dead_letter_threshold_changed_through_another_engine_applies_at_once($backend).await
        }
        #[tokio::test]
        async fn waiting_get_on_a_deleted_queue_ends_with_not_found() {
            conformance::waiting_get_on_a_deleted_queue_ends_with_not_found($backend).await
        }
        #[tokio::test]
        async fn messages_come_out_in_the_order_they_went_in() {
            conformance::messages_come_out_in_the_order_they_went_in($backend).await
        }
        #[tokio::test]
        async fn leased_message_is_invisible_until_its_lease_ends_then_redelivered_first() {
            conformance::leased_message_is_invisible_until_its_lease_ends_then_redelivered_first($backend).await
        }
        #[tokio::test]
        async fn messages_given_back_come_out_before_newer_ones_in_a_long_backlog() {
            conformance::messages_given_back_come_out_before_newer_ones_in_a_long_backlog($backend).await
        }
        #[tokio::test]
        async fn a_user_name_is_taken_once_per_tenancy() {
            conformance::a_user_name_is_taken_once_per_tenancy($backend).await
        }
        #[tokio::test]
        async fn receipt_from_expired_lease_is_rejected_for_update_and_delete() {
            conformance::receipt_from_expired_lease_is_rejected_for_update_and_delete($backend).await
        }
        #[tokio::test]
        async fn receipt_of_a_superseded_lease_is_rejected_and_the_current_one_works() {
            conformance::receipt_of_a_superseded_lease_is_rejected_and_the_current_one_works($backend).await
        }
        #[tokio::test]
        async fn receipt_is_bound_to_its_queue() {
            conformance::receipt_is_bound_to_its_queue($backend).await
        }
        #[tokio::test]
        async fn update_extends_the_lease_relative_to_now_and_zero_releases_it() {
            conformance::update_extends_the_lease_relative_to_now_and_zero_releases_it($backend).await
        }
        #[tokio::test]
        async fn delivery_count_rises_even_with_zero_visibility() {
            conformance::delivery_count_rises_even_with_zero_visibility($backend).await
        }
        #[tokio::test]
        async fn message_is_dead_lettered_after_max_deliveries_and_can_be_consumed_and_redriven() {
            conformance::message_is_dead_lettered_after_max_deliveries_and_can_be_consumed_and_redriven($backend).await
        }
        #[tokio::test]
        async fn zero_max_deliveries_never_dead_letters() {
            conformance::zero_max_deliveries_never_dead_letters($backend).await
        }
        #[tokio::test]
        async fn message_past_retention_is_never_delivered_and_is_swept() {
            conformance::message_past_retention_is_never_delivered_and_is_swept($backend).await
        }
        #[tokio::test]
        async fn retention_sweeps_every_channel_and_queues_that_were_empty_and_leased_messages_when_their_lease_ends() {
            conformance::retention_sweeps_every_channel_and_queues_that_were_empty_and_leased_messages_when_their_lease_ends($backend).await
        }
        #[tokio::test]
        async fn a_sweep_expires_at_most_its_batch_and_the_next_one_goes_on() {
            conformance::a_sweep_expires_at_most_its_batch_and_the_next_one_goes_on($backend).await
        }
        #[tokio::test]
        async fn put_reports_expire_after_as_creation_plus_retention() {
            conformance::put_reports_expire_after_as_creation_plus_retention($backend).await
        }
        #[tokio::test]
        async fn delayed_message_stays_invisible_until_its_delay_ends() {
            conformance::delayed_message_stays_invisible_until_its_delay_ends($backend).await
        }
        #[tokio::test]
        async fn delays_and_shortened_leases_begun_after_a_get_still_end_on_time() {
            conformance::delays_and_shortened_leases_begun_after_a_get_still_end_on_time($backend).await
        }
        #[tokio::test]
        async fn queue_default_delay_applies_when_a_message_has_none() {
            conformance::queue_default_delay_applies_when_a_message_has_none($backend).await
        }
        #[tokio::test]
        async fn channel_filter_serves_only_that_channel_in_order() {
            conformance::channel_filter_serves_only_that_channel_in_order($backend).await
        }
        #[tokio::test]
        async fn unfiltered_gets_serve_every_busy_channel() {
            conformance::unfiltered_gets_serve_every_busy_channel($backend).await
        }
        #[tokio::test]
        async fn list_channels_pages_through_non_empty_channels() {
            conformance::list_channels_pages_through_non_empty_channels($backend).await
        }
        #[tokio::test]
        async fn a_queue_holds_at_most_256_channels() {
            conformance::a_queue_holds_at_most_256_channels($backend).await
        }
        #[tokio::test]
        async fn put_limits_are_enforced() {
            conformance::put_limits_are_enforced($backend).await
        }
        #[tokio::test]
        async fn purge_removes_the_chosen_side_and_channels() {
            conformance::purge_removes_the_chosen_side_and_channels($backend).await
        }
        #[tokio::test]
        async fn another_tenancy_cannot_see_or_touch_a_queue() {
            conformance::another_tenancy_cannot_see_or_touch_a_queue($backend).await
        }
        #[tokio::test]
        async fn stale_if_match_is_refused_and_fresh_one_applies() {
            conformance::stale_if_match_is_refused_and_fresh_one_applies($backend).await
        }
        #[tokio::test]
        async fn retry_token_replays_the_same_request_and_refuses_a_different_one() {
            conformance::retry_token_replays_the_same_request_and_refuses_a_different_one($backend).await
        }
        #[tokio::test]
        async fn deleted_queue_reads_as_deleted_for_a_while_then_disappears_and_its_messages_are_reclaimed() {
            conformance::deleted_queue_reads_as_deleted_for_a_while_then_disappears_and_its_messages_are_reclaimed($backend).await
        }
        #[tokio::test]
        async fn messages_survive_reopening_the_store() {
            conformance::messages_survive_reopening_the_store($backend).await
        }
        #[tokio::test]
        async fn leases_deletes_delays_and_dead_letters_survive_reopening_the_store() {
            conformance::leases_deletes_delays_and_dead_letters_survive_reopening_the_store($backend).await
        }
        #[tokio::test]
        async fn a_lease_ended_before_a_restart_is_not_judged_again_after_it() {
            conformance::a_lease_ended_before_a_restart_is_not_judged_again_after_it($backend).await
        }
        #[tokio::test]
        async fn waiting_get_returns_the_message_a_put_brings() {
            conformance::waiting_get_returns_the_message_a_put_brings($backend).await
        }
        #[tokio::test]
        async fn a_long_poll_wakes_at_a_put_made_through_another_engine_over_the_store() {
            conformance::a_long_poll_wakes_at_a_put_made_through_another_engine_over_the_store($backend).await
        }
        #[tokio::test]
        async fn a_put_of_two_messages_wakes_two_waiting_pollers() {
            conformance::a_put_of_two_messages_wakes_two_waiting_pollers($backend).await
        }
        #[tokio::test]
        async fn a_wakeup_for_new_messages_is_not_spent_on_pollers_of_other_channels_or_the_dlq() {
            conformance::a_wakeup_for_new_messages_is_not_spent_on_pollers_of_other_channels_or_the_dlq($backend).await
        }
        #[tokio::test]
        async fn a_message_freed_by_an_ended_lease_does_not_use_up_the_wakeup_of_a_put() {
            conformance::a_message_freed_by_an_ended_lease_does_not_use_up_the_wakeup_of_a_put($backend).await
        }
        #[tokio::test]
        async fn a_sweep_that_ends_leases_wakes_the_waiting_polls() {
            conformance::a_sweep_that_ends_leases_wakes_the_waiting_polls($backend).await
        }
        #[tokio::test]
        async fn message_ids_are_never_reused_after_deletes() {
            conformance::message_ids_are_never_reused_after_deletes($backend).await
        }
        #[tokio::test]
        async fn redrive_leaves_dead_letter_messages_that_are_being_consumed() {
            conformance::redrive_leaves_dead_letter_messages_that_are_being_consumed($backend).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_refused_put_does_not_undo_puts_committed_with_it() {
            conformance::a_refused_put_does_not_undo_puts_committed_with_it($backend).await
        }
        #[tokio::test]
        async fn work_requests_are_kept_for_their_retention_then_swept() {
            conformance::work_requests_are_kept_for_their_retention_then_swept($backend).await
        }
    };
}

//! Group commit for PostgreSQL: requests of one kind and key that arrive while a batch of
//! theirs is under way wait, and go together in the next, one transaction for all.
//!
//! W1 showed what this is for: PostgreSQL spent about 840 µs of CPU per cycle of put, get
//! and delete whatever the batch size, against 33 µs per message (docs/BENCHMARKS.md, W8).
//! A request that finds none of its key under way goes at once, so batching adds no wait
//! to a lone request. Batches run in a task of their own: a caller that gives up (its
//! client went away) does not take the others' requests with it. One batch of a key at a
//! time: two did not move more in W1, at more CPU per message (smaller batches, and two
//! picks of one queue skip each other's rows).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use berth_core::error::StoreError;
use tokio::sync::oneshot;

/// Most requests in one batch.
const MOST_PER_BATCH: usize = 64;
/// Longest a batch may take: one stuck on a dead connection or a long lock wait must not
/// hold every later request of its key (all of a node's puts, say) behind it for good.
const BATCH_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A kind of request that can be run together with others of its key.
#[async_trait]
pub(crate) trait Batch: Send + Sync + 'static {
    type Request: Send + Sync + 'static;
    type Output: Send + 'static;
    /// Requests of one key go together; each key has at most one batch under way.
    type Key: Clone + Eq + Hash + Send + 'static;

    fn key(request: &Self::Request) -> Self::Key;

    /// Runs requests of one key as one unit, committed when it returns: an output per
    /// request, in order.
    async fn run(&self, requests: &[Self::Request]) -> Result<Vec<Self::Output>, StoreError>;
}

type Waiting<B> = (<B as Batch>::Request, oneshot::Sender<Result<<B as Batch>::Output, StoreError>>);

/// The requests waiting per key; a key is here while a task runs its batches.
type Queues<B> = Arc<Mutex<HashMap<<B as Batch>::Key, Vec<Waiting<B>>>>>;

pub(crate) struct Coalescer<B: Batch> {
    batch: Arc<B>,
    queues: Queues<B>,
}

impl<B: Batch> Coalescer<B> {
    pub(crate) fn new(batch: B) -> Coalescer<B> {
        Coalescer { batch: Arc::new(batch), queues: Arc::default() }
    }

    /// Runs a request in the next batch of its key and returns its output once committed.
    pub(crate) async fn submit(&self, request: B::Request) -> Result<B::Output, StoreError> {
        let (answer, answered) = oneshot::channel();
        let key = B::key(&request);
        {
            // std Mutex: held only to push or take, never across an await.
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            match queues.get_mut(&key) {
                Some(waiting) => waiting.push((request, answer)),
                None => {
                    queues.insert(key.clone(), Vec::new());
                    tokio::spawn(serve(self.batch.clone(), self.queues.clone(), key, vec![(request, answer)]));
                }
            }
        }
        answered.await.map_err(|_| StoreError::Backend("a batch ended without an answer".into()))?
    }
}

/// Runs batches of one key until none waits.
async fn serve<B: Batch>(batch: Arc<B>, queues: Queues<B>, key: B::Key, mut next: Vec<Waiting<B>>) {
    let mut serving = Serving::<B> { queues: &queues, key: Some(key) };
    loop {
        run(&*batch, next).await;
        let mut queues = queues.lock().unwrap_or_else(|e| e.into_inner());
        let Some(key) = serving.key.as_ref() else { return };
        let Some(waiting) = queues.get_mut(key) else { return };
        if waiting.is_empty() {
            queues.remove(key);
            serving.key = None;
            return;
        }
        let take = waiting.len().min(MOST_PER_BATCH);
        next = waiting.drain(..take).collect();
    }
}

/// A key's batches being served: dropped while serving (a batch panicked), it answers the
/// key's waiting requests with an error, so that neither they nor later ones wait forever.
struct Serving<'a, B: Batch> {
    queues: &'a Queues<B>,
    key: Option<B::Key>,
}

impl<B: Batch> Drop for Serving<'_, B> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let gone = self.queues.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            drop(gone);
        }
    }
}

async fn run<B: Batch>(batch: &B, waiting: Vec<Waiting<B>>) {
    // A request whose caller went away is not run: as before batching, when dropping the
    // caller rolled its transaction back (no lease taken for nobody, no put unanswered).
    let (requests, answers): (Vec<_>, Vec<_>) = waiting.into_iter().filter(|(_, answer)| !answer.is_closed()).unzip();
    if requests.is_empty() {
        return;
    }
    match run_within(batch, &requests).await {
        Ok(outputs) => {
            for (answer, output) in answers.into_iter().zip(outputs) {
                let _ = answer.send(Ok(output));
            }
        }
        // One request's fault must not fail the others: each goes again alone. A database
        // that cannot be reached fails them all alike.
        Err(e) if requests.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
            for (request, answer) in requests.iter().zip(answers) {
                let alone = run_within(batch, std::slice::from_ref(request)).await;
                let alone = alone.and_then(|outputs| {
                    outputs.into_iter().next().ok_or_else(|| StoreError::Backend("a batch answered nothing".into()))
                });
                let _ = answer.send(alone);
            }
        }
        Err(e) => {
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
    }
}

/// Runs a batch within [`BATCH_TIME_LIMIT`], checking it answered each request.
async fn run_within<B: Batch>(batch: &B, requests: &[B::Request]) -> Result<Vec<B::Output>, StoreError> {
    let outputs = tokio::time::timeout(BATCH_TIME_LIMIT, batch.run(requests)).await.map_err(|_| {
        StoreError::Unavailable(format!("PostgreSQL did not answer within {} s", BATCH_TIME_LIMIT.as_secs()))
    })??;
    if outputs.len() != requests.len() {
        return Err(StoreError::Backend(format!("a batch of {} answered {}", requests.len(), outputs.len())));
    }
    Ok(outputs)
}

//! Group commit for PostgreSQL: requests of one kind that arrive while such a batch is
//! under way wait, and go together in the next one, one statement or transaction for all.
//!
//! W1 showed what this is for: PostgreSQL spent about 840 µs of CPU per cycle of put, get
//! and delete whatever the batch size, against 33 µs per message (docs/BENCHMARKS.md, W8).
//! A request that finds none under way goes at once, so batching adds no wait when idle.

use async_trait::async_trait;
use berth_core::error::StoreError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Most requests in one batch.
const MOST_PER_BATCH: usize = 64;

/// A kind of request that can be run together.
#[async_trait]
pub(crate) trait Batch: Send + Sync + 'static {
    type Request: Send + Sync + 'static;
    type Output: Send + 'static;

    /// Runs the requests as one unit, committed when it returns: an output per request, in order.
    async fn run(&self, requests: &[Self::Request]) -> Result<Vec<Self::Output>, StoreError>;
}

type Answer<B> = oneshot::Sender<Result<<B as Batch>::Output, StoreError>>;

/// Hands requests to the batch's task, one batch under way at a time.
pub(crate) struct Coalescer<B: Batch> {
    waiting: mpsc::UnboundedSender<(B::Request, Answer<B>)>,
}

impl<B: Batch> Coalescer<B> {
    /// Starts the batch's task, which ends with `stop`.
    pub(crate) fn start(batch: B, stop: CancellationToken) -> Coalescer<B> {
        let (waiting, received) = mpsc::unbounded_channel();
        tokio::spawn(serve(batch, received, stop));
        Coalescer { waiting }
    }

    /// Runs a request in the next batch and returns its output once committed.
    pub(crate) async fn submit(&self, request: B::Request) -> Result<B::Output, StoreError> {
        let (answer, answered) = oneshot::channel();
        let closed = || StoreError::Unavailable("the PostgreSQL store is closing".into());
        self.waiting.send((request, answer)).map_err(|_| closed())?;
        answered.await.map_err(|_| closed())?
    }
}

async fn serve<B: Batch>(
    batch: B,
    mut received: mpsc::UnboundedReceiver<(B::Request, Answer<B>)>,
    stop: CancellationToken,
) {
    let mut requests = Vec::with_capacity(MOST_PER_BATCH);
    let mut answers = Vec::with_capacity(MOST_PER_BATCH);
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            first = received.recv() => first,
        };
        let Some(first) = first else { return };
        for (request, answer) in std::iter::once(first).chain(std::iter::from_fn(|| received.try_recv().ok())) {
            requests.push(request);
            answers.push(answer);
            if requests.len() == MOST_PER_BATCH {
                break;
            }
        }
        match batch.run(&requests).await {
            Ok(outputs) => {
                for (answer, output) in answers.drain(..).zip(outputs) {
                    let _ = answer.send(Ok(output));
                }
            }
            // One request's fault must not fail the others: each goes again alone. A
            // database that is unreachable fails them all alike.
            Err(e) if requests.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
                for (request, answer) in requests.iter().zip(answers.drain(..)) {
                    let alone = batch.run(std::slice::from_ref(request)).await;
                    let output = alone.and_then(|outputs| {
                        outputs.into_iter().next().ok_or_else(|| StoreError::Backend("a batch answered nothing".into()))
                    });
                    let _ = answer.send(output);
                }
            }
            Err(e) => {
                for answer in answers.drain(..) {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
        requests.clear();
    }
}

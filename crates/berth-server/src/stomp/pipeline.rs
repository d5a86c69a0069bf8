//! A connection's frames in order: read ahead while writes are on their way to disk.
//!
//! Frames wait in a bounded [`Backlog`] in the order they were read. Consecutive SEND, ACK
//! and NACK frames leave it together as one [`Write`] run: the SENDs of one queue become one
//! store append (so they share a commit and keep their order), the ACKs and NACKs batched
//! per queue, and the run's RECEIPTs and ERROR go out in frame order once all of it is on
//! disk. Any other frame waits until the writes before it have finished.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use berth_core::model::NewMessage;
use berth_core::{limits, Engine, QueueError};
use futures_util::future::join_all;

use super::command::{self, Command, Source};
use super::session::{describe, error_frame, receipt_frame, Reply};

/// Frames read ahead at most, and the bytes they and the run in flight may hold; past
/// either the connection stops reading, so a fast client waits in its socket rather than in
/// server memory.
const MAX_FRAMES: usize = 64;
const MAX_BYTES: usize = 1 << 20;

/// A frame read and not yet carried out.
#[derive(Debug)]
pub enum Item {
    /// A valid command.
    Command(Command),
    /// A frame that ends the connection with this ERROR message (echoing the receipt).
    Refuse { message: String, receipt: Option<String> },
    /// The client closed its side.
    End,
}

/// What to do next, in frame order.
#[derive(Debug)]
pub enum Next {
    /// Consecutive SEND/ACK/NACK commands, to run together.
    Writes(Vec<command::Write>),
    /// Anything else, alone.
    Item(Item),
}

/// Frames read ahead, oldest first, with the size of each as read.
#[derive(Debug, Default)]
pub struct Backlog {
    items: VecDeque<(Item, usize)>,
    /// Bytes of the frames waiting.
    waiting: usize,
    /// Bytes of the run in flight, until [`Backlog::run_finished`].
    running: usize,
}

fn is_write(item: &(Item, usize)) -> bool {
    matches!(item.0, Item::Command(Command::Write(_)))
}

impl Backlog {
    /// Whether another frame may be read.
    pub fn has_room(&self) -> bool {
        self.items.len() < MAX_FRAMES && self.waiting + self.running < MAX_BYTES
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues a frame of `size` bytes.
    pub fn push(&mut self, item: Item, size: usize) {
        self.waiting += size;
        self.items.push_back((item, size));
    }

    /// Takes the next piece of work: all leading writes (which count as running until
    /// [`Backlog::run_finished`]), or the single item at the front.
    pub fn take_next(&mut self) -> Option<Next> {
        if !self.items.front().is_some_and(is_write) {
            let (item, size) = self.items.pop_front()?;
            self.waiting -= size;
            return Some(Next::Item(item));
        }
        let mut writes = Vec::new();
        while self.items.front().is_some_and(is_write) {
            let (item, size) = self.items.pop_front().expect("checked");
            self.waiting -= size;
            self.running += size;
            if let Item::Command(Command::Write(write)) = item {
                writes.push(write);
            }
        }
        Some(Next::Writes(writes))
    }

    /// The run taken last has finished.
    pub fn run_finished(&mut self) {
        self.running = 0;
    }
}

/// One write of a run, resolved against the session (ACK ids are already leases).
#[derive(Debug)]
pub enum Op {
    /// Append to a queue.
    Put { queue_id: String, message: NewMessage },
    /// Delete a leased message (ACK) or make it visible at once (NACK).
    Settle { source: Source, lease: String, delete: bool },
    /// A frame refused before it ran (an ACK of nothing awaiting acknowledgement).
    Refused(String),
}

/// Carries out a run of writes, each with the receipt its frame asked for, and answers them in
/// order: a RECEIPT per success up to the first failure, which gets the ERROR that closes
/// the connection.
pub async fn run(engine: Arc<Engine>, tenancy_id: String, ops: Vec<(Op, Option<String>)>) -> Reply {
    let mut receipts = Vec::with_capacity(ops.len());
    let mut outcomes: Vec<Result<(), String>> = Vec::with_capacity(ops.len());
    let mut puts: HashMap<String, (Vec<usize>, Vec<NewMessage>)> = HashMap::new();
    let mut settles: HashMap<(Source, bool), Vec<(usize, String)>> = HashMap::new();
    for (at, (op, receipt)) in ops.into_iter().enumerate() {
        receipts.push(receipt);
        outcomes.push(Ok(()));
        match op {
            Op::Put { queue_id, message } => {
                let (positions, messages) = puts.entry(queue_id).or_default();
                positions.push(at);
                messages.push(message);
            }
            Op::Settle { source, lease, delete } => settles.entry((source, delete)).or_default().push((at, lease)),
            Op::Refused(message) => outcomes[at] = Err(message),
        }
    }
    let engine = &engine;
    let tenancy_id = tenancy_id.as_str();
    let appends = puts.into_iter().map(|(queue_id, (positions, messages))| async move {
        let outcome = engine.put_gathered(tenancy_id, &queue_id, messages).await.map(|_| ()).map_err(|e| describe(&e));
        positions.into_iter().map(|at| (at, outcome.clone())).collect::<Vec<_>>()
    });
    let settlements = settles.iter().flat_map(|((source, delete), leases)| {
        leases.chunks(limits::MAX_BATCH_ENTRIES).map(move |chunk| settle(engine, tenancy_id, source, *delete, chunk))
    });
    let (appended, settled) = futures_util::join!(join_all(appends), join_all(settlements));
    for (at, outcome) in appended.into_iter().chain(settled).flatten() {
        outcomes[at] = outcome;
    }
    let mut frames = Vec::new();
    for (outcome, receipt) in outcomes.iter().zip(&receipts) {
        match outcome {
            Ok(()) => frames.extend(receipt_frame(receipt.as_deref())),
            Err(message) => {
                frames.push(error_frame(message, receipt.as_deref()));
                return Reply::Close(frames);
            }
        }
    }
    Reply::Continue(frames)
}

/// ACKs or NACKs of one queue, at most one batch; the outcome per position.
async fn settle(
    engine: &Engine,
    tenancy_id: &str,
    source: &Source,
    delete: bool,
    chunk: &[(usize, String)],
) -> Vec<(usize, Result<(), String>)> {
    let (positions, leases): (Vec<usize>, Vec<String>) = chunk.iter().cloned().unzip();
    let outcome: Result<Vec<Result<(), QueueError>>, QueueError> = if delete {
        engine.delete_messages(tenancy_id, source.target(), leases).await
    } else {
        let entries = leases.into_iter().map(|lease| (lease, 0)).collect();
        engine
            .update_messages(tenancy_id, source.target(), entries)
            .await
            .map(|results| results.into_iter().map(|r| r.map(|_| ())).collect())
    };
    match outcome {
        Ok(results) => {
            // A position the store did not answer for is not reported as done.
            let mut results = results.into_iter().map(|r| r.map_err(|e| describe(&e)));
            let missing = || describe(&QueueError::ReceiptInvalid);
            positions.into_iter().map(|at| (at, results.next().unwrap_or_else(|| Err(missing())))).collect()
        }
        Err(e) => {
            let message = describe(&e);
            positions.into_iter().map(|at| (at, Err(message.clone()))).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::command::Destination;

    fn send(body: &str) -> Item {
        let destination = Destination { queue_id: "q".into(), channel: None };
        Item::Command(Command::Write(command::Write::Send { destination, content: body.into(), receipt: None }))
    }

    fn ack(id: &str) -> Item {
        Item::Command(Command::Write(command::Write::Settle { ack_id: id.into(), ack: true, receipt: None }))
    }

    #[test]
    fn leading_writes_leave_together_and_other_frames_alone_in_order() {
        let mut backlog = Backlog::default();
        for item in [send("a"), ack("1"), send("b"), Item::Command(Command::Disconnect { receipt: None }), send("c")] {
            backlog.push(item, 10);
        }
        assert!(matches!(backlog.take_next(), Some(Next::Writes(w)) if w.len() == 3));
        assert!(matches!(backlog.take_next(), Some(Next::Item(Item::Command(Command::Disconnect { .. })))));
        assert!(matches!(backlog.take_next(), Some(Next::Writes(w)) if w.len() == 1));
        assert!(backlog.take_next().is_none() && backlog.is_empty());
    }

    #[test]
    fn room_ends_at_the_frame_count_or_the_bytes_of_waiting_and_running_frames() {
        let mut backlog = Backlog::default();
        for _ in 0..MAX_FRAMES {
            assert!(backlog.has_room());
            backlog.push(ack("x"), 1);
        }
        assert!(!backlog.has_room(), "frame count");
        backlog.take_next();
        assert!(backlog.has_room() && backlog.is_empty());
        backlog.push(ack("big"), MAX_BYTES / 2);
        backlog.take_next();
        backlog.push(ack("big"), MAX_BYTES / 2);
        assert!(!backlog.has_room(), "the run in flight counts until it finishes");
        backlog.run_finished();
        assert!(backlog.has_room());
    }
}

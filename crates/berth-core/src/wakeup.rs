//! Per-queue wakeups for long polls. A hint only: a woken poller asks the store again,
//! so a missed or extra wakeup costs a query, never a message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::model::QueueRow;

#[derive(Default)]
pub(crate) struct Wakeups {
    // std Mutex: held only to clone an Arc, never across an await.
    queues: Mutex<HashMap<QueueRow, Arc<Notify>>>,
}

impl Wakeups {
    /// The notifier of a queue; pollers call `notified()` on it before asking the store.
    pub(crate) fn of(&self, queue: QueueRow) -> Arc<Notify> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.entry(queue).or_default().clone()
    }

    /// Wakes every poller of a queue.
    pub(crate) fn wake(&self, queue: QueueRow) {
        let notify = self.queues.lock().unwrap_or_else(|e| e.into_inner()).get(&queue).cloned();
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    /// Forgets a deleted queue.
    pub(crate) fn forget(&self, queue: QueueRow) {
        if let Some(notify) = self.queues.lock().unwrap_or_else(|e| e.into_inner()).remove(&queue) {
            notify.notify_waiters();
        }
    }
}

//! A subscription is a long-polling consumer in the engine: it leases at most as many
//! messages as its prefetch window has room for and hands them to the connection.

use std::sync::Arc;

use berth_core::engine::{Delivered, GetMessages};
use berth_core::{Engine, QueueError};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::command::{Destination, Source};

/// Longest single wait of a subscription's long poll (renewed while subscribed).
const POLL_SECS: i64 = 20;
/// Most messages leased at once, the engine's GetMessages maximum.
const MAX_BATCH: usize = berth_core::limits::MAX_GET_LIMIT as usize;

/// What subscriptions tell their connection.
pub enum Event {
    /// A leased message; the permit holds its slot of the prefetch window until ACK/NACK.
    Delivery { subscription: String, source: Source, delivered: Delivered, permit: OwnedSemaphorePermit },
    /// The subscription cannot go on (e.g. its queue was deleted).
    Failed { subscription: String, error: QueueError },
}

/// Everything a consumer task needs.
pub struct Consumer {
    pub engine: Arc<Engine>,
    pub tenancy_id: String,
    pub subscription: String,
    pub destination: Destination,
    pub source: Source,
    pub visibility: Option<u32>,
    pub window: Arc<Semaphore>,
    pub events: mpsc::Sender<Event>,
    pub stop: CancellationToken,
}

impl Consumer {
    /// Runs until `stop` fires or the connection goes away.
    pub async fn run(self) {
        loop {
            let first = tokio::select! {
                permit = self.window.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
                _ = self.stop.cancelled() => return,
            };
            let mut permits = vec![first];
            while permits.len() < MAX_BATCH {
                match self.window.clone().try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            let params = GetMessages::new(
                self.visibility.map(i64::from),
                Some(POLL_SECS),
                Some(permits.len() as i64),
                self.destination.channel.clone(),
                false,
            );
            let polled = match params {
                Ok(params) => {
                    self.engine.poll_messages(&self.tenancy_id, self.source.target(), params, &self.stop).await
                }
                Err(e) => Err(e),
            };
            let delivered = match polled {
                Ok(delivered) => delivered,
                Err(error) => {
                    let _ = self.events.send(Event::Failed { subscription: self.subscription.clone(), error }).await;
                    return;
                }
            };
            let mut undelivered = Vec::new();
            for (delivered, permit) in delivered.into_iter().zip(permits.drain(..)) {
                // Reserve room first so that a stopping subscription keeps the message
                // (to release it) instead of waiting on a channel nobody reads.
                let slot = tokio::select! {
                    slot = self.events.reserve() => slot.ok(),
                    _ = self.stop.cancelled() => None,
                };
                match slot {
                    Some(slot) => slot.send(Event::Delivery {
                        subscription: self.subscription.clone(),
                        source: self.source.clone(),
                        delivered,
                        permit,
                    }),
                    None => undelivered.push(delivered),
                }
            }
            if !undelivered.is_empty() {
                // Never sent (connection gone or subscription stopping): back at once.
                let receipts = undelivered.into_iter().map(|d| (d.receipt, 0)).collect();
                let _ = self.engine.update_messages(&self.tenancy_id, self.source.target(), receipts).await;
                return;
            }
        }
    }
}

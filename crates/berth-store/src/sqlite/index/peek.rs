//! What a peek lists: messages in id order where [`standing`] places them now.

use berth_core::delivery::{standing, Held, Standing};
use berth_core::model::PeekRequest;

use super::*;

impl Index {
    /// The messages a peek shows, with where their bodies are, and where each stands.
    pub(crate) fn peek(&self, request: &PeekRequest) -> Vec<(Picked, Standing, i64)> {
        let Some(q) = self.queue(request.queue) else { return Vec::new() };
        let threshold = self.dead_letter_after(request.queue);
        let now = Timestamp(request.now.0);
        let mut shown = Vec::new();
        for (last, batch) in q.batches.range(request.after.saturating_add(1)..) {
            let mut offset = 0;
            for (at, slot) in batch.slots.iter().enumerate() {
                let id = batch.first + at as i64;
                let size = slot.size as usize;
                offset += size;
                if id <= request.after
                    || slot.phase == Phase::Gone
                    || request.channel.as_deref().is_some_and(|c| c != &*slot.channel)
                {
                    continue;
                }
                let held = Held {
                    invisible: slot.phase == Phase::Invisible,
                    visible_at: Timestamp(slot.visible_at),
                    delivery_count: slot.delivery_count,
                    in_dead_letter_queue: slot.dlq,
                    expire_at: Timestamp(batch.expire_at),
                };
                let Some((stands, dlq)) = standing(held, threshold, now) else { continue };
                if !request.shows(stands, dlq) {
                    continue;
                }
                let picked = Picked {
                    id,
                    batch: *last,
                    offset: offset - size,
                    position: at,
                    size: slot.size,
                    channel: slot.channel.clone(),
                    delivery_count: slot.delivery_count,
                    created_at: batch.created_at,
                    expire_at: batch.expire_at,
                    lease_token: slot.lease_token,
                };
                shown.push((picked, stands, slot.visible_at));
                if shown.len() >= request.limit as usize {
                    return shown;
                }
            }
        }
        shown
    }
}

//! What happens to a message whose lease (or delay) has ended without a delete: one rule
//! for every store, whether it settles the message when the lease ends, at the next lease
//! call or in a sweep, and for what GetStats counts before it is settled.

use crate::clock::Timestamp;

/// The fate of a message that becomes visible again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLease {
    /// Past its retention: removed (before any dead-lettering).
    Expire,
    /// Back to the head of its channel, delivery count kept.
    Redeliver,
    /// Moved to its channel's dead letter queue.
    DeadLetter,
}

/// A message whose lease or delay ended.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    /// Deliveries so far (0 for a delay that ended).
    pub delivery_count: u32,
    /// Whether it is in the dead letter queue.
    pub in_dead_letter_queue: bool,
    /// When retention removes it.
    pub expire_at: Timestamp,
}

/// Decides the fate of a message whose lease ended undeleted, as of `now`.
///
/// `max_deliveries` is the queue's `deadLetterQueueDeliveryCount` (0 = no DLQ).
/// A message already in the DLQ stays there: the DLQ has no DLQ of its own.
pub fn after_lease(message: Ended, max_deliveries: u32, now: Timestamp) -> AfterLease {
    if message.expire_at <= now {
        AfterLease::Expire
    } else if !message.in_dead_letter_queue && max_deliveries > 0 && message.delivery_count >= max_deliveries {
        AfterLease::DeadLetter
    } else {
        AfterLease::Redeliver
    }
}

/// Where a message stands now, as GetStats counts it and a peek shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Deliverable now.
    Visible,
    /// Leased, until its lease ends.
    InFlight,
    /// Not delivered yet: its delivery delay has not ended.
    Delayed,
}

/// A message as a store holds it, settled or not.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// Whether it is invisible (leased or delayed) until `visible_at`.
    pub invisible: bool,
    /// When it becomes (or became) visible.
    pub visible_at: Timestamp,
    /// Deliveries so far.
    pub delivery_count: u32,
    /// Whether it is in the dead letter queue.
    pub in_dead_letter_queue: bool,
    /// When retention removes it.
    pub expire_at: Timestamp,
}

/// Where a held message stands as of `now`, and whether on the DLQ side: an ended lease
/// stands where settling it will put it; `None` once retention has removed it.
pub fn standing(message: Held, max_deliveries: u32, now: Timestamp) -> Option<(Standing, bool)> {
    if message.expire_at <= now {
        return None;
    }
    let dlq = message.in_dead_letter_queue;
    if !message.invisible {
        return Some((Standing::Visible, dlq));
    }
    if message.visible_at > now {
        let standing = if message.delivery_count == 0 { Standing::Delayed } else { Standing::InFlight };
        return Some((standing, dlq));
    }
    let ended =
        Ended { delivery_count: message.delivery_count, in_dead_letter_queue: dlq, expire_at: message.expire_at };
    match after_lease(ended, max_deliveries, now) {
        AfterLease::Expire => None,
        AfterLease::Redeliver => Some((Standing::Visible, dlq)),
        AfterLease::DeadLetter => Some((Standing::Visible, true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(invisible: bool, visible_at: i64, delivery_count: u32, dlq: bool) -> Held {
        Held {
            invisible,
            visible_at: Timestamp(visible_at),
            delivery_count,
            in_dead_letter_queue: dlq,
            expire_at: Timestamp(2_000),
        }
    }

    #[test]
    fn a_message_stands_where_settling_would_put_it() {
        assert_eq!(standing(held(false, 0, 1, false), 3, NOW), Some((Standing::Visible, false)));
        assert_eq!(standing(held(true, 1_500, 1, false), 3, NOW), Some((Standing::InFlight, false)));
        assert_eq!(standing(held(true, 1_500, 0, false), 3, NOW), Some((Standing::Delayed, false)));
        assert_eq!(standing(held(true, 900, 1, false), 3, NOW), Some((Standing::Visible, false)), "lease ended");
        assert_eq!(standing(held(true, 900, 3, false), 3, NOW), Some((Standing::Visible, true)), "due for the DLQ");
        assert_eq!(standing(held(true, 900, 3, true), 3, NOW), Some((Standing::Visible, true)));
        let past_retention = Held { expire_at: NOW, ..held(false, 0, 0, false) };
        assert_eq!(standing(past_retention, 3, NOW), None);
    }

    const NOW: Timestamp = Timestamp(1_000);

    fn ended(delivery_count: u32, in_dead_letter_queue: bool) -> Ended {
        Ended { delivery_count, in_dead_letter_queue, expire_at: Timestamp(2_000) }
    }

    #[test]
    fn message_below_max_deliveries_is_redelivered() {
        assert_eq!(after_lease(ended(2, false), 3, NOW), AfterLease::Redeliver);
    }

    #[test]
    fn message_that_reached_max_deliveries_is_dead_lettered() {
        assert_eq!(after_lease(ended(3, false), 3, NOW), AfterLease::DeadLetter);
        assert_eq!(after_lease(ended(7, false), 3, NOW), AfterLease::DeadLetter);
    }

    #[test]
    fn zero_max_deliveries_disables_the_dead_letter_queue() {
        assert_eq!(after_lease(ended(1000, false), 0, NOW), AfterLease::Redeliver);
    }

    #[test]
    fn message_in_dead_letter_queue_stays_there() {
        assert_eq!(after_lease(ended(50, true), 3, NOW), AfterLease::Redeliver);
    }

    #[test]
    fn delayed_message_never_delivered_is_not_dead_lettered() {
        assert_eq!(after_lease(ended(0, false), 1, NOW), AfterLease::Redeliver);
    }

    #[test]
    fn retention_comes_before_dead_lettering() {
        let past = Ended { expire_at: NOW, ..ended(3, false) };
        assert_eq!(after_lease(past, 3, NOW), AfterLease::Expire);
        assert_eq!(after_lease(Ended { in_dead_letter_queue: true, ..past }, 3, NOW), AfterLease::Expire);
    }
}

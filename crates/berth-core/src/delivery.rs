//! What happens to a message whose lease (or delay) has ended without a delete.

/// The fate of a message that becomes visible again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLease {
    /// Back to the head of its channel, delivery count kept.
    Redeliver,
    /// Moved to its channel's dead letter queue.
    DeadLetter,
}

/// Decides the fate of a message whose lease ended undeleted.
///
/// `max_deliveries` is the queue's `deadLetterQueueDeliveryCount` (0 = no DLQ).
/// A message already in the DLQ stays there: the DLQ has no DLQ of its own.
pub fn after_lease(delivery_count: u32, max_deliveries: u32, in_dead_letter_queue: bool) -> AfterLease {
    if !in_dead_letter_queue && max_deliveries > 0 && delivery_count >= max_deliveries {
        AfterLease::DeadLetter
    } else {
        AfterLease::Redeliver
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_below_max_deliveries_is_redelivered() {
        assert_eq!(after_lease(2, 3, false), AfterLease::Redeliver);
    }

    #[test]
    fn message_that_reached_max_deliveries_is_dead_lettered() {
        assert_eq!(after_lease(3, 3, false), AfterLease::DeadLetter);
        assert_eq!(after_lease(7, 3, false), AfterLease::DeadLetter);
    }

    #[test]
    fn zero_max_deliveries_disables_the_dead_letter_queue() {
        assert_eq!(after_lease(1000, 0, false), AfterLease::Redeliver);
    }

    #[test]
    fn message_in_dead_letter_queue_stays_there() {
        assert_eq!(after_lease(50, 3, true), AfterLease::Redeliver);
    }

    #[test]
    fn delayed_message_never_delivered_is_not_dead_lettered() {
        assert_eq!(after_lease(0, 1, false), AfterLease::Redeliver);
    }
}

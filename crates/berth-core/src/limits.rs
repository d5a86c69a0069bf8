//! OCI Queue limits (reference section 6) and validation of every client-supplied value.
//! Messages name the offending field so the client can fix its request.

use crate::error::QueueError;

/// Largest message content, in bytes.
pub const MAX_CONTENT_BYTES: usize = 128 * 1024;
/// Most messages in one PutMessages.
pub const MAX_PUT_MESSAGES: usize = 20;
/// Most content bytes in one PutMessages.
pub const MAX_PUT_BYTES: usize = 512 * 1024;
/// Most messages one GetMessages returns (Berth allows more than OCI's 20).
pub const MAX_GET_LIMIT: u32 = 32;
/// Most bytes of content one GetMessages returns (always at least one message).
pub const MAX_GET_BYTES: usize = 2 * 1024 * 1024;
/// Most entries in UpdateMessages / DeleteMessages.
pub const MAX_BATCH_ENTRIES: usize = 20;
/// Longest visibility timeout, in seconds (12 h).
pub const MAX_VISIBILITY_SECS: u32 = 43_200;
/// Longest long-poll wait, in seconds.
pub const MAX_TIMEOUT_SECS: u32 = 30;
/// Shortest and longest retention, in seconds (10 s .. 7 days).
pub const RETENTION_SECS: (u32, u32) = (10, 604_800);
/// Most delivery attempts before dead-lettering.
pub const MAX_DEAD_LETTER_AFTER: u32 = 20;
/// Most non-empty channels per queue.
pub const MAX_CHANNELS: u32 = 256;
/// Consumer groups a queue has at most, the primary one included (Berth's own limit: a
/// put's cost grows with the groups it fans out to).
pub const MAX_CONSUMER_GROUPS: usize = 32;
/// Longest channel id, in bytes.
pub const MAX_CHANNEL_ID_BYTES: usize = 255;
/// Most custom properties per message, and the longest key and value.
pub const MAX_PROPERTIES: usize = 32;
/// Longest custom property key, in bytes.
pub const MAX_PROPERTY_KEY_BYTES: usize = 128;
/// Longest custom property value, in bytes.
pub const MAX_PROPERTY_VALUE_BYTES: usize = 1024;
/// Longest display name, in bytes.
pub const MAX_DISPLAY_NAME_BYTES: usize = 255;
/// How long GetQueue still answers a deleted queue, as `DELETED`, before `404`: SDK waiters
/// for `DELETED` poll every few seconds and must see it.
pub const DELETED_QUEUE_VISIBLE_MS: i64 = 10 * 60_000;
/// How long work requests stay listed after they were accepted (7 days): long enough for
/// any waiter, short enough that queues made and deleted all day do not grow the store.
pub const WORK_REQUEST_RETENTION_MS: i64 = 7 * 86_400_000;

/// Checks that `value` of `field` lies in `min..=max`.
pub fn in_range(field: &str, value: i64, min: i64, max: i64) -> Result<u32, QueueError> {
    if value < min || value > max {
        return Err(QueueError::invalid(format!("{field} must be between {min} and {max}, got {value}")));
    }
    Ok(value as u32)
}

/// Checks a message's content size.
pub fn content(content: &str) -> Result<(), QueueError> {
    let len = content.len();
    if len == 0 {
        return Err(QueueError::invalid("message content must not be empty"));
    }
    if len > MAX_CONTENT_BYTES {
        return Err(QueueError::invalid(format!(
            "message content is {len} bytes; the limit is {MAX_CONTENT_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Checks a channel id: non-empty, bounded, printable.
pub fn channel_id(channel: &str) -> Result<(), QueueError> {
    if channel.is_empty() || channel.len() > MAX_CHANNEL_ID_BYTES {
        return Err(QueueError::invalid(format!("channelId must be 1 to {MAX_CHANNEL_ID_BYTES} bytes long")));
    }
    if channel.chars().any(char::is_control) {
        return Err(QueueError::invalid("channelId must not contain control characters"));
    }
    Ok(())
}

/// Checks a display name.
pub fn display_name(name: &str) -> Result<(), QueueError> {
    if name.trim().is_empty() || name.len() > MAX_DISPLAY_NAME_BYTES {
        return Err(QueueError::invalid(format!(
            "displayName must be 1 to {MAX_DISPLAY_NAME_BYTES} bytes and not blank"
        )));
    }
    Ok(())
}

/// Checks custom properties' count and sizes.
pub fn properties<'a>(props: impl ExactSizeIterator<Item = (&'a String, &'a String)>) -> Result<(), QueueError> {
    if props.len() > MAX_PROPERTIES {
        return Err(QueueError::invalid(format!("at most {MAX_PROPERTIES} customProperties per message")));
    }
    for (key, value) in props {
        if key.is_empty() || key.len() > MAX_PROPERTY_KEY_BYTES {
            return Err(QueueError::invalid(format!(
                "customProperties keys must be 1 to {MAX_PROPERTY_KEY_BYTES} bytes"
            )));
        }
        if value.len() > MAX_PROPERTY_VALUE_BYTES {
            return Err(QueueError::invalid(format!(
                "customProperties values must be at most {MAX_PROPERTY_VALUE_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_of_exactly_the_limit_is_accepted_and_one_more_byte_is_not() {
        assert!(content(&"x".repeat(MAX_CONTENT_BYTES)).is_ok());
        assert!(content(&"x".repeat(MAX_CONTENT_BYTES + 1)).is_err());
        assert!(content("").is_err());
    }

    #[test]
    fn out_of_range_value_names_its_field() {
        let err = in_range("limit", 33, 1, 32).unwrap_err().to_string();
        assert!(err.contains("limit") && err.contains("33"), "{err}");
        assert_eq!(in_range("limit", 32, 1, 32).unwrap(), 32);
    }

    #[test]
    fn channel_ids_must_be_printable_and_bounded() {
        assert!(channel_id("orders/eu").is_ok());
        assert!(channel_id("").is_err());
        assert!(channel_id("a\nb").is_err());
        assert!(channel_id(&"c".repeat(256)).is_err());
    }
}

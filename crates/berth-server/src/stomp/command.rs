//! Client frames checked and turned into typed commands before anything runs.

use berth_core::engine::Target;
use berth_core::limits;

use super::frame::{Frame, Version};

/// Where a SEND goes or a SUBSCRIBE reads: a queue, optionally one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Queue OCID.
    pub queue_id: String,
    /// Channel id.
    pub channel: Option<String>,
}

impl Destination {
    /// Parses `<queueOCID>` or `<queueOCID>/<channelId>` (OCIDs contain no `/`).
    ///
    /// # Errors
    /// A message for the client.
    pub fn parse(value: &str) -> Result<Self, String> {
        let (queue_id, channel) = match value.split_once('/') {
            Some((queue, channel)) => (queue, Some(channel.to_owned())),
            None => (value, None),
        };
        if queue_id.trim().is_empty() {
            return Err("destination must name a queue OCID".into());
        }
        if let Some(channel) = &channel {
            limits::channel_id(channel).map_err(|e| format!("destination channel: {e}"))?;
        }
        Ok(Destination { queue_id: queue_id.to_owned(), channel })
    }

    /// The wire form.
    pub fn render(&self) -> String {
        match &self.channel {
            Some(channel) => format!("{}/{channel}", self.queue_id),
            None => self.queue_id.clone(),
        }
    }
}

/// What a subscription reads, and so where its messages' receipts belong: a queue, or
/// one of its consumer groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    /// Queue OCID.
    pub queue_id: String,
    /// Consumer group OCID (the `consumer-group-id` header of SUBSCRIBE).
    pub consumer_group_id: Option<String>,
}

impl Source {
    /// As the engine names it.
    pub fn target(&self) -> Target<'_> {
        Target { queue_id: &self.queue_id, consumer_group_id: self.consumer_group_id.as_deref() }
    }
}

/// A validated client command (CONNECT is handled by the session's handshake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A write, which may run together with the writes next to it.
    Write(Write),
    /// Start consuming.
    Subscribe {
        id: String,
        destination: Destination,
        consumer_group_id: Option<String>,
        visibility: Option<u32>,
        prefetch: u32,
        receipt: Option<String>,
    },
    /// Stop consuming.
    Unsubscribe { id: String, receipt: Option<String> },
    /// Leave.
    Disconnect { receipt: Option<String> },
}

/// A command that changes stored messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Publish one message.
    Send { destination: Destination, content: String, receipt: Option<String> },
    /// Delete a delivered message (`ack`) or release it at once (NACK).
    Settle { ack_id: String, ack: bool, receipt: Option<String> },
}

/// Default and largest unacknowledged messages per subscription.
pub const PREFETCH: (u32, u32) = (20, 1000);

fn required<'a>(frame: &'a Frame, name: &str) -> Result<&'a str, String> {
    frame.get(name).ok_or_else(|| format!("{} frame requires the {name} header", frame.command))
}

fn number(frame: &Frame, name: &str, min: u32, max: u32) -> Result<Option<u32>, String> {
    frame
        .get(name)
        .map(|v| match v.trim().parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!("{name} must be a whole number from {min} to {max}, got {v:?}")),
        })
        .transpose()
}

impl Command {
    /// Checks a frame and builds the command.
    ///
    /// # Errors
    /// A message for the ERROR frame.
    pub fn from_frame(frame: Frame, version: Version) -> Result<Command, String> {
        if frame.get("transaction").is_some() {
            return Err("transactions are not supported (transaction header)".into());
        }
        let receipt = frame.get("receipt").map(str::to_owned);
        match frame.command.as_str() {
            "SEND" => {
                let destination = Destination::parse(required(&frame, "destination")?)?;
                let content = String::from_utf8(frame.body.to_vec())
                    .map_err(|_| "message content must be UTF-8 text".to_string())?;
                limits::content(&content).map_err(|e| e.to_string())?;
                Ok(Command::Write(Write::Send { destination, content, receipt }))
            }
            "SUBSCRIBE" => {
                let id = required(&frame, "id")?.to_owned();
                let destination = Destination::parse(required(&frame, "destination")?)?;
                match frame.get("ack") {
                    Some("client-individual") => {}
                    other => {
                        return Err(format!(
                            "only ack:client-individual is supported, got {}",
                            other.map_or("no ack header (auto)".into(), |v| format!("{v:?}"))
                        ))
                    }
                }
                // At least 1 s: a zero lease would end before the client could ACK.
                let visibility = number(&frame, "visibility", 1, limits::MAX_VISIBILITY_SECS)?;
                // `prefetch-count` is what RabbitMQ and many clients send; `prefetch` wins if both are.
                let prefetch = match number(&frame, "prefetch", 1, PREFETCH.1)? {
                    Some(prefetch) => prefetch,
                    None => number(&frame, "prefetch-count", 1, PREFETCH.1)?.unwrap_or(PREFETCH.0),
                };
                let consumer_group_id = frame.get("consumer-group-id").map(str::to_owned);
                Ok(Command::Subscribe { id, destination, consumer_group_id, visibility, prefetch, receipt })
            }
            "UNSUBSCRIBE" => Ok(Command::Unsubscribe { id: required(&frame, "id")?.to_owned(), receipt }),
            "ACK" | "NACK" => {
                // 1.2 acknowledges by the MESSAGE's `ack` value in `id`; 1.0 and 1.1 by `message-id`.
                let ack_id = match version {
                    Version::V1_2 => frame.get("id").or_else(|| frame.get("message-id")),
                    Version::V1_0 | Version::V1_1 => frame.get("message-id").or_else(|| frame.get("id")),
                }
                .ok_or_else(|| {
                    format!("{} frame requires the id header (1.2) or message-id (1.0, 1.1)", frame.command)
                })?
                .to_owned();
                Ok(Command::Write(Write::Settle { ack_id, ack: frame.command == "ACK", receipt }))
            }
            "DISCONNECT" => Ok(Command::Disconnect { receipt }),
            "BEGIN" | "COMMIT" | "ABORT" => Err(format!("transactions are not supported ({})", frame.command)),
            "CONNECT" | "STOMP" => Err("already connected".into()),
            other => Err(format!("unknown command {:?}", other.chars().take(32).collect::<String>())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_destination_splits_at_the_first_slash() {
        let d = Destination::parse("ocid1.queue.oc1.iad.x/orders/eu").unwrap();
        assert_eq!((d.queue_id.as_str(), d.channel.as_deref()), ("ocid1.queue.oc1.iad.x", Some("orders/eu")));
        assert_eq!(d.render(), "ocid1.queue.oc1.iad.x/orders/eu");
        assert!(Destination::parse("/ch").is_err());
    }

    #[test]
    fn subscribe_needs_client_individual_ack_and_bounded_prefetch() {
        let base = Frame::new("SUBSCRIBE").header("id", "1").header("destination", "q");
        assert!(Command::from_frame(base.clone(), Version::V1_2).is_err(), "no ack header");
        let ok = base.clone().header("ack", "client-individual");
        assert!(matches!(Command::from_frame(ok.clone(), Version::V1_2), Ok(Command::Subscribe { prefetch: 20, .. })));
        assert!(Command::from_frame(ok.clone().header("prefetch", "0"), Version::V1_2).is_err());
        assert!(Command::from_frame(ok.header("visibility", "0"), Version::V1_2).is_err());
        assert!(Command::from_frame(base.header("ack", "auto"), Version::V1_2).is_err());
    }

    #[test]
    fn prefetch_count_is_read_as_prefetch_and_prefetch_wins() {
        let ok =
            Frame::new("SUBSCRIBE").header("id", "1").header("destination", "q").header("ack", "client-individual");
        let prefetch = |frame: Frame| match Command::from_frame(frame, Version::V1_2) {
            Ok(Command::Subscribe { prefetch, .. }) => Ok(prefetch),
            Ok(_) => unreachable!("a SUBSCRIBE"),
            Err(e) => Err(e),
        };
        assert_eq!(prefetch(ok.clone().header("prefetch-count", "5")), Ok(5));
        assert_eq!(prefetch(ok.clone().header("prefetch-count", "5").header("prefetch", "7")), Ok(7));
        assert!(prefetch(ok.header("prefetch-count", "0")).is_err());
    }

    #[test]
    fn ack_id_comes_from_the_version_s_header() {
        let frame = Frame::new("ACK").header("id", "receipt-12").header("message-id", "receipt-10");
        let ack = |v| match Command::from_frame(frame.clone(), v).unwrap() {
            Command::Write(Write::Settle { ack_id, ack: true, .. }) => ack_id,
            other => panic!("{other:?}"),
        };
        assert_eq!(ack(Version::V1_2), "receipt-12");
        assert_eq!(ack(Version::V1_1), "receipt-10");
    }

    #[test]
    fn transactions_and_unknown_commands_are_refused() {
        for frame in [
            Frame::new("BEGIN").header("transaction", "t"),
            Frame::new("SEND").header("destination", "q").header("transaction", "t").body("x"),
            Frame::new("FLY"),
        ] {
            assert!(Command::from_frame(frame, Version::V1_2).is_err());
        }
    }

    #[test]
    fn send_body_must_be_utf8_and_within_limits() {
        let send = Frame::new("SEND").header("destination", "q");
        assert!(Command::from_frame(send.clone().body(vec![0xff, 0xfe]), Version::V1_2).is_err());
        assert!(Command::from_frame(send.clone().body(""), Version::V1_2).is_err());
        assert!(Command::from_frame(send.body("hi"), Version::V1_2).is_ok());
    }
}

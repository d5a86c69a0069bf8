//! STOMP frames and their codec: bytes in, [`Inbound`] out; [`Frame`] in, bytes out.
//! Pure: no I/O. Limits are enforced while bytes arrive, before anything is allocated
//! for them, and a client-declared `content-length` is checked before it is trusted.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Protocol versions, which differ in header escaping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// STOMP 1.0: no escaping.
    V1_0,
    /// STOMP 1.1: `\n`, `\c`, `\\` escaped.
    V1_1,
    /// STOMP 1.2: as 1.1 plus `\r`.
    V1_2,
}

impl Version {
    /// The wire name, e.g. `1.2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses a wire name.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }
}

/// A STOMP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command, e.g. `SEND`.
    pub command: String,
    /// Headers in order; on repeats the first one counts.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl Frame {
    /// Bytes the frame holds in memory: command, headers and body.
    pub fn size(&self) -> usize {
        self.command.len()
            + self.headers.iter().map(|(name, value)| name.len() + value.len()).sum::<usize>()
            + self.body.len()
    }

    /// A frame with no headers and no body.
    pub fn new(command: &str) -> Self {
        Frame { command: command.to_owned(), headers: Vec::new(), body: Bytes::new() }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A heart-beat (a lone end-of-line).
    Heartbeat,
    /// A frame.
    Frame(Frame),
}

/// Why bytes could not be decoded. Each is answered with an ERROR frame, then a close.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The frame is larger than allowed.
    #[error("frame exceeds the limit of {0} bytes")]
    TooLarge(usize),
    /// The body is larger than allowed.
    #[error("body exceeds the limit of {0} bytes")]
    BodyTooLarge(usize),
    /// Too many headers.
    #[error("frame has more than {0} headers")]
    TooManyHeaders(usize),
    /// The command or a header is not UTF-8.
    #[error("frame command and headers must be UTF-8")]
    NotUtf8,
    /// A header line has no colon or a bad escape.
    #[error("malformed header: {0}")]
    BadHeader(String),
    /// `content-length` is not a number.
    #[error("content-length is not a number")]
    BadContentLength,
    /// The body is not followed by NUL.
    #[error("frame body is not terminated by NUL")]
    MissingNul,
    /// The connection failed.
    #[error("i/o: {0}")]
    Io(String),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e.to_string())
    }
}

/// Limits of one connection's inbound frames.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Whole frame, headers included.
    pub max_frame_bytes: usize,
    /// Headers per frame.
    pub max_headers: usize,
    /// Body bytes.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_frame_bytes: 1024 * 1024, max_headers: 64, max_body_bytes: 128 * 1024 }
    }
}

/// Decodes client frames and encodes server frames for one connection.
#[derive(Debug)]
pub struct FrameCodec {
    limits: Limits,
    /// Negotiated version; headers of CONNECT, STOMP and CONNECTED are never escaped.
    pub version: Version,
}

impl FrameCodec {
    /// A codec before negotiation (1.0 rules until CONNECTED).
    pub fn new(limits: Limits) -> Self {
        FrameCodec { limits, version: Version::V1_0 }
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

fn unescape(raw: &str, version: Version) -> Result<String, FrameError> {
    if version == Version::V1_0 || !raw.contains('\\') {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some('r') if version == Version::V1_2 => out.push('\r'),
            other => return Err(FrameError::BadHeader(format!("undefined escape \\{}", other.unwrap_or(' ')))),
        }
    }
    Ok(out)
}

fn escape(value: &str, version: Version, out: &mut BytesMut) {
    if version == Version::V1_0 {
        out.put_slice(value.as_bytes());
        return;
    }
    for c in value.chars() {
        match c {
            '\n' => out.put_slice(b"\\n"),
            ':' => out.put_slice(b"\\c"),
            '\\' => out.put_slice(b"\\\\"),
            '\r' if version == Version::V1_2 => out.put_slice(b"\\r"),
            c => {
                let mut buf = [0u8; 4];
                out.put_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// Commands whose headers are never escaped.
fn raw_headers(command: &str) -> bool {
    matches!(command, "CONNECT" | "STOMP" | "CONNECTED")
}

impl Decoder for FrameCodec {
    type Item = Inbound;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, FrameError> {
        // Heart-beats: end-of-lines between frames.
        if src.starts_with(b"\r\n") {
            src.advance(2);
            return Ok(Some(Inbound::Heartbeat));
        }
        if src.starts_with(b"\n") {
            src.advance(1);
            return Ok(Some(Inbound::Heartbeat));
        }
        if src.as_ref() == b"\r" {
            return Ok(None);
        }
        let limit = self.limits.max_frame_bytes;
        // End of the header block: the first empty line.
        let Some(nl) =
            find(src, b"\n\n", 0).map(|p| (p, 2)).into_iter().chain(find(src, b"\n\r\n", 0).map(|p| (p, 3))).min()
        else {
            if src.len() > limit {
                return Err(FrameError::TooLarge(limit));
            }
            return Ok(None);
        };
        let (head_end, sep) = nl;
        if head_end > limit {
            return Err(FrameError::TooLarge(limit));
        }
        let head = std::str::from_utf8(&src[..head_end]).map_err(|_| FrameError::NotUtf8)?;
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let command = lines.next().unwrap_or_default().to_owned();
        let version = if raw_headers(&command) { Version::V1_0 } else { self.version };
        let mut headers = Vec::new();
        for line in lines {
            if headers.len() == self.limits.max_headers {
                return Err(FrameError::TooManyHeaders(self.limits.max_headers));
            }
            let (name, value) =
                line.split_once(':').ok_or_else(|| FrameError::BadHeader(line.chars().take(64).collect()))?;
            headers.push((unescape(name, version)?, unescape(value, version)?));
        }
        let body_start = head_end + sep;
        let declared = headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.trim());
        let (body_len, frame_end) = match declared {
            Some(len) => {
                let len: usize = len.parse().map_err(|_| FrameError::BadContentLength)?;
                if len > self.limits.max_body_bytes {
                    return Err(FrameError::BodyTooLarge(self.limits.max_body_bytes));
                }
                if body_start + len + 1 > limit {
                    return Err(FrameError::TooLarge(limit));
                }
                if src.len() < body_start + len + 1 {
                    return Ok(None);
                }
                if src[body_start + len] != 0 {
                    return Err(FrameError::MissingNul);
                }
                (len, body_start + len + 1)
            }
            None => match find(src, b"\0", body_start) {
                Some(nul) => (nul - body_start, nul + 1),
                None => {
                    let waiting = src.len() - body_start;
                    if waiting > self.limits.max_body_bytes {
                        return Err(FrameError::BodyTooLarge(self.limits.max_body_bytes));
                    }
                    if src.len() > limit {
                        return Err(FrameError::TooLarge(limit));
                    }
                    return Ok(None);
                }
            },
        };
        if body_len > self.limits.max_body_bytes {
            return Err(FrameError::BodyTooLarge(self.limits.max_body_bytes));
        }
        let mut frame_bytes = src.split_to(frame_end);
        frame_bytes.advance(body_start);
        frame_bytes.truncate(body_len);
        Ok(Some(Inbound::Frame(Frame { command, headers, body: frame_bytes.freeze() })))
    }
}

/// What the server writes: a frame or a heart-beat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A heart-beat.
    Heartbeat,
    /// A frame.
    Frame(Frame),
}

impl Encoder<Outbound> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Outbound, dst: &mut BytesMut) -> Result<(), FrameError> {
        let frame = match item {
            Outbound::Heartbeat => {
                dst.put_u8(b'\n');
                return Ok(());
            }
            Outbound::Frame(frame) => frame,
        };
        let version = if raw_headers(&frame.command) { Version::V1_0 } else { self.version };
        dst.reserve(frame.command.len() + frame.body.len() + 64 * (frame.headers.len() + 1));
        dst.put_slice(frame.command.as_bytes());
        dst.put_u8(b'\n');
        for (name, value) in &frame.headers {
            escape(name, version, dst);
            dst.put_u8(b':');
            escape(value, version, dst);
            dst.put_u8(b'\n');
        }
        if !frame.body.is_empty() && frame.get("content-length").is_none() {
            dst.put_slice(format!("content-length:{}\n", frame.body.len()).as_bytes());
        }
        dst.put_u8(b'\n');
        dst.put_slice(&frame.body);
        dst.put_u8(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(codec: &mut FrameCodec, bytes: &[u8]) -> Result<Vec<Inbound>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(item) = codec.decode(&mut buf)? {
            out.push(item);
        }
        Ok(out)
    }

    #[test]
    fn send_frame_with_content_length_decodes() {
        let mut codec = FrameCodec::new(Limits::default());
        let got = decode_all(&mut codec, b"SEND\ndestination:q\ncontent-length:3\n\na\0b\0\n").unwrap();
        let Inbound::Frame(frame) = &got[0] else { panic!("{got:?}") };
        assert_eq!(frame.command, "SEND");
        assert_eq!(frame.get("destination"), Some("q"));
        assert_eq!(frame.body.as_ref(), b"a\0b");
        assert_eq!(got[1], Inbound::Heartbeat);
    }

    #[test]
    fn frame_split_across_reads_waits_for_the_rest() {
        let mut codec = FrameCodec::new(Limits::default());
        let mut buf = BytesMut::from(&b"SEND\ndestination:q\n\nhel"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"lo\0");
        let Some(Inbound::Frame(frame)) = codec.decode(&mut buf).unwrap() else { panic!() };
        assert_eq!(frame.body.as_ref(), b"hello");
    }

    #[test]
    fn version_1_2_unescapes_headers_but_connect_does_not() {
        let mut codec = FrameCodec::new(Limits::default());
        codec.version = Version::V1_2;
        let got = decode_all(&mut codec, b"SEND\nk\\c1:a\\nb\\r\\\\\n\n\0CONNECT\nlogin:a\\cb\n\n\0").unwrap();
        let Inbound::Frame(send) = &got[0] else { panic!() };
        assert_eq!(send.headers[0], ("k:1".to_string(), "a\nb\r\\".to_string()));
        let Inbound::Frame(connect) = &got[1] else { panic!() };
        assert_eq!(connect.get("login"), Some("a\\cb"));
    }

    #[test]
    fn limits_are_enforced_before_the_frame_is_complete() {
        let limits = Limits { max_frame_bytes: 100, max_headers: 2, max_body_bytes: 10 };
        let mut codec = FrameCodec::new(limits);
        assert_eq!(decode_all(&mut codec, &[b'A'; 101]), Err(FrameError::TooLarge(100)));
        let declared = b"SEND\ncontent-length:999999999\n\n";
        assert_eq!(decode_all(&mut FrameCodec::new(limits), declared), Err(FrameError::BodyTooLarge(10)));
        let headers = b"SEND\na:1\nb:2\nc:3\n\n\0";
        assert_eq!(decode_all(&mut FrameCodec::new(limits), headers), Err(FrameError::TooManyHeaders(2)));
        let body = b"SEND\n\n0123456789AB";
        assert_eq!(decode_all(&mut FrameCodec::new(limits), body), Err(FrameError::BodyTooLarge(10)));
        assert_eq!(decode_all(&mut FrameCodec::new(limits), b"SEND\nk:\xff\n\n\0"), Err(FrameError::NotUtf8));
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        let text = "[a-zA-Z0-9:\\\\\n\r é-]{0,12}";
        (
            "[A-Z]{1,12}",
            proptest::collection::vec(("[a-z][a-z0-9:\\\\\n-]{0,8}", text), 0..6),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(command, headers, body)| {
                // Encoding adds content-length to non-empty bodies; include it so the
                // round trip compares like with like.
                let mut headers: Vec<(String, String)> =
                    headers.into_iter().filter(|(n, _)| n != "content-length").collect();
                headers.push(("content-length".into(), body.len().to_string()));
                Frame { command, headers, body: Bytes::from(body) }
            })
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_identity_for_escaping_versions(frame in any_frame(), v12 in any::<bool>()) {
            prop_assume!(!raw_headers(&frame.command));
            let mut codec = FrameCodec::new(Limits::default());
            codec.version = if v12 { Version::V1_2 } else { Version::V1_1 };
            prop_assume!(v12 || !frame.headers.iter().any(|(n, v)| n.contains('\r') || v.contains('\r')));
            let mut bytes = BytesMut::new();
            codec.encode(Outbound::Frame(frame.clone()), &mut bytes).unwrap();
            let decoded = codec.decode(&mut bytes).unwrap();
            prop_assert_eq!(decoded, Some(Inbound::Frame(frame)));
            prop_assert!(bytes.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), v in 0u8..3) {
            let limits = Limits { max_frame_bytes: 512, max_headers: 8, max_body_bytes: 128 };
            let mut codec = FrameCodec::new(limits);
            codec.version = [Version::V1_0, Version::V1_1, Version::V1_2][v as usize];
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }
    }
}

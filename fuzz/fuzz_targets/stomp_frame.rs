//! Feeds arbitrary bytes, in arbitrary chunks, to the STOMP decoder under small limits:
//! it must never panic and never hold more than the frame limit plus one chunk.
#![no_main]

use berth_server::stomp::frame::{FrameCodec, Limits, Version};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else { return };
    let limits = Limits { max_frame_bytes: 4096, max_headers: 16, max_body_bytes: 1024 };
    let mut codec = FrameCodec::new(limits);
    codec.version = [Version::V1_0, Version::V1_1, Version::V1_2][usize::from(control % 3)];
    let chunk = usize::from(control / 3).max(1);
    let mut buf = BytesMut::new();
    for piece in bytes.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= limits.max_frame_bytes + chunk);
    }
});

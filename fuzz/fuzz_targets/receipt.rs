//! The receipt decoder: arbitrary text never panics and never opens without the key's MAC;
//! a receipt issued for a lease opens to that lease.
#![no_main]

use berth_core::model::LeaseRef;
use berth_core::receipt::ReceiptKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ReceiptKey::new(b"fuzzing secret");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(lease) = key.open(text) {
            // Only a receipt this key issued opens; it must be that lease's receipt.
            assert_eq!(key.open(&key.issue(&lease)).ok(), Some(lease));
        }
    }
    if data.len() >= 25 {
        let int = |at: usize| i64::from_be_bytes(data[at..at + 8].try_into().unwrap());
        let lease =
            LeaseRef { queue: int(0), message_id: int(8), lease_token: int(16), dead_letter: data[24] & 1 == 1 };
        assert_eq!(key.open(&key.issue(&lease)).ok(), Some(lease));
        assert!(ReceiptKey::new(b"another secret").open(&key.issue(&lease)).is_err());
    }
});

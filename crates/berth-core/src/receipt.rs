//! Receipts: opaque tokens naming one lease of one message, signed with a server secret.
//! A receipt cannot be forged, moved to another queue, or reused once its lease is replaced;
//! whether the lease is still current is the store's call, not the receipt's.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

use crate::error::QueueError;
use crate::model::LeaseRef;

const VERSION: u8 = 1;
const BODY_LEN: usize = 1 + 8 + 8 + 8 + 1;
const MAC_LEN: usize = 32;

/// The key receipts are signed with; every node sharing a store must use the same one.
pub struct ReceiptKey(hmac::Key);

impl ReceiptKey {
    /// A key from the secret kept in the store.
    pub fn new(secret: &[u8]) -> Self {
        ReceiptKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The receipt for `lease`: base64url, no padding.
    pub fn issue(&self, lease: &LeaseRef) -> String {
        let mut bytes = Vec::with_capacity(BODY_LEN + MAC_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(&lease.queue.to_be_bytes());
        bytes.extend_from_slice(&lease.message_id.to_be_bytes());
        bytes.extend_from_slice(&lease.lease_token.to_be_bytes());
        bytes.push(lease.dead_letter as u8);
        let tag = hmac::sign(&self.0, &bytes);
        bytes.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The lease a receipt names, if this server issued it.
    ///
    /// # Errors
    /// [`QueueError::ReceiptInvalid`] for anything that is not an untampered receipt of ours.
    pub fn open(&self, receipt: &str) -> Result<LeaseRef, QueueError> {
        let bytes = URL_SAFE_NO_PAD.decode(receipt.trim_end_matches('=')).map_err(|_| QueueError::ReceiptInvalid)?;
        if bytes.len() != BODY_LEN + MAC_LEN || bytes[0] != VERSION {
            return Err(QueueError::ReceiptInvalid);
        }
        let (body, mac) = bytes.split_at(BODY_LEN);
        // Constant-time check of the tag.
        hmac::verify(&self.0, body, mac).map_err(|_| QueueError::ReceiptInvalid)?;
        let int = |at: usize| i64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        Ok(LeaseRef { queue: int(1), message_id: int(9), lease_token: int(17), dead_letter: body[25] == 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> LeaseRef {
        LeaseRef { queue: 7, message_id: 42, lease_token: -99, dead_letter: true }
    }

    #[test]
    fn issued_receipt_opens_to_the_same_lease() {
        let key = ReceiptKey::new(b"secret");
        let receipt = key.issue(&lease());
        assert!(receipt.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(key.open(&receipt).unwrap(), lease());
    }

    #[test]
    fn tampered_receipt_is_rejected() {
        let key = ReceiptKey::new(b"secret");
        let mut bytes = URL_SAFE_NO_PAD.decode(key.issue(&lease())).unwrap();
        bytes[10] ^= 1; // another message id
        assert!(matches!(key.open(&URL_SAFE_NO_PAD.encode(bytes)), Err(QueueError::ReceiptInvalid)));
    }

    #[test]
    fn receipt_from_another_server_secret_is_rejected() {
        let receipt = ReceiptKey::new(b"other").issue(&lease());
        assert!(ReceiptKey::new(b"secret").open(&receipt).is_err());
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        let key = ReceiptKey::new(b"secret");
        for junk in ["", "!!!", "AAAA", &"A".repeat(78), &"A".repeat(5000)] {
            assert!(key.open(junk).is_err(), "{junk}");
        }
    }
}

//! OCIDs in the form the real service uses: `ocid1.<type>.oc1.<region>.<unique>`.

use rand::Rng;

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A new random OCID of `resource_type` (e.g. `queue`) in `region` (empty for global resources).
pub fn new(resource_type: &str, region: &str, prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let unique: String = (0..60 - prefix.len()).map(|_| BASE32[rng.gen_range(0..32)] as char).collect();
    format!("ocid1.{resource_type}.oc1.{region}.{prefix}{unique}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn queue_ocids_look_like_oci_ones_and_differ() {
        let a = super::new("queue", "iad", "amaaaaaa");
        let b = super::new("queue", "iad", "amaaaaaa");
        assert!(a.starts_with("ocid1.queue.oc1.iad.amaaaaaa"), "{a}");
        assert_eq!(a.rsplit('.').next().unwrap().len(), 60);
        assert_ne!(a, b);
    }
}

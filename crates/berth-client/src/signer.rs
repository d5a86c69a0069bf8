//! OCI request signing (draft-cavage HTTP signatures, RSA-SHA256), as the SDKs do it.

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::Credentials;

/// Signs requests with one user's API key.
pub(crate) struct Signer {
    key: RsaKeyPair,
    key_id: String,
    rng: SystemRandom,
}

impl Signer {
    /// The signer of these credentials (their key: PKCS#8 or PKCS#1 PEM).
    ///
    /// # Errors
    /// The key cannot be read or is not an RSA key.
    pub(crate) fn load(credentials: &Credentials) -> anyhow::Result<Self> {
        let path = &credentials.key_file;
        let der = PrivateKeyDer::from_pem_file(path).with_context(|| format!("cannot read key {}", path.display()))?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(pkcs8) => RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(pkcs1) => RsaKeyPair::from_der(pkcs1.secret_pkcs1_der()),
            _ => anyhow::bail!("{} is not an RSA key", path.display()),
        }
        .map_err(|e| anyhow::anyhow!("bad RSA key {}: {e}", path.display()))?;
        let key_id = format!("{}/{}/{}", credentials.tenancy_id, credentials.user_id, credentials.fingerprint);
        Ok(Signer { key, key_id, rng: SystemRandom::new() })
    }

    /// The headers that sign a request: `target` is its path and query as sent.
    ///
    /// # Errors
    /// Signing failed (it does not with a valid key).
    pub(crate) fn headers(
        &self,
        method: &str,
        target: &str,
        host: &str,
        body: &[u8],
    ) -> anyhow::Result<Vec<(&'static str, String)>> {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut lines = vec![format!("date: {date}"), format!("(request-target): {} {target}", method.to_lowercase())];
        lines.push(format!("host: {host}"));
        let mut headers = vec![("date", date)];
        let mut names = "date (request-target) host".to_string();
        if method == "POST" || method == "PUT" {
            let digest = STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, body));
            lines.push(format!("content-length: {}", body.len()));
            lines.push("content-type: application/json".into());
            lines.push(format!("x-content-sha256: {digest}"));
            names.push_str(" content-length content-type x-content-sha256");
            headers.push(("x-content-sha256", digest));
        }
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, lines.join("\n").as_bytes(), &mut signature)
            .map_err(|e| anyhow::anyhow!("signing failed: {e}"))?;
        headers.push((
            "authorization",
            format!(
                r#"Signature version="1",keyId="{}",algorithm="rsa-sha256",headers="{names}",signature="{}""#,
                self.key_id,
                STANDARD.encode(signature)
            ),
        ));
        Ok(headers)
    }
}

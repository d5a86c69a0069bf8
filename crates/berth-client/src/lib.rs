//! A REST client for Berth's own tools: requests signed as the OCI SDKs sign them, with
//! the credentials Berth writes (`credentials/<user>.json`) or an OCI config file.

mod credentials;
mod signer;

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
pub use credentials::Credentials;
use serde_json::Value;
use signer::Signer;

/// What the server answered.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body (`Null` when empty).
    pub body: Value,
}

impl Answer {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An OCI error answer: status, `code` and `message`, and the request id to quote.
#[derive(Debug)]
pub struct OciError {
    /// HTTP status.
    pub status: u16,
    /// OCI's error code, e.g. `NotAuthorizedOrNotFound`.
    pub code: String,
    /// What the server said.
    pub message: String,
    /// `opc-request-id`, for the server's logs.
    pub request_id: String,
}

impl std::fmt::Display for OciError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {} (opc-request-id {})", self.status, self.code, self.message, self.request_id)
    }
}

impl std::error::Error for OciError {}

/// A signed client of one Berth server.
pub struct Client {
    http: reqwest::Client,
    /// `http(s)://host:port`, no trailing slash.
    endpoint: String,
    host: String,
    signer: Option<Signer>,
}

impl Client {
    /// A client of `endpoint` signing with `credentials` (`None`: unsigned, for a server run
    /// with `--insecure-no-auth`); `ca_file` is the CA to trust for `https` (PEM), in place of
    /// none: Berth's own certificates are usually self-made.
    ///
    /// # Errors
    /// An unreadable key or CA file.
    pub fn new(endpoint: &str, credentials: Option<&Credentials>, ca_file: Option<&Path>) -> anyhow::Result<Self> {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let host = endpoint.split_once("://").map_or(endpoint.as_str(), |(_, rest)| rest).to_owned();
        let signer = credentials.map(Signer::load).transpose()?;
        Ok(Client { http: http_client(&endpoint, ca_file)?, endpoint, host, signer })
    }

    /// One request to `path` (from `/20210201` on, or `/health`) with query pairs and a JSON
    /// body; an OCI error answer comes back as an [`OciError`].
    ///
    /// # Errors
    /// The server cannot be reached, answers an error, or with a body that is not JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut target = path.to_owned();
        for (i, (key, value)) in query.iter().enumerate() {
            let value = percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC);
            target.push_str(&format!("{}{key}={value}", if i == 0 { '?' } else { '&' }));
        }
        let body = body.map(serde_json::to_vec).transpose()?.unwrap_or_default();
        let response = self.send(method, &target, body).await?;
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let bytes = response.bytes().await?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        if status >= 300 {
            let text = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
            let request_id = headers.get("opc-request-id").and_then(|v| v.to_str().ok()).unwrap_or("none").to_owned();
            let message = if body.is_string() { body.as_str().unwrap_or_default().to_owned() } else { text("message") };
            bail!(OciError { status, code: text("code"), message, request_id });
        }
        Ok(Answer { status, headers, body })
    }

    /// Sends one signed request to `target` (path and query string) with a JSON body, and
    /// hands back the response whatever its status.
    ///
    /// # Errors
    /// The server cannot be reached.
    pub async fn send(&self, method: &str, target: &str, body: Vec<u8>) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{target}", self.endpoint);
        let mut request = self
            .http
            .request(method.parse()?, &url)
            .header("content-type", "application/json")
            .header("accept", "application/json");
        if let Some(signer) = &self.signer {
            for (name, value) in signer.headers(method, target, &self.host, &body)? {
                request = request.header(name, value);
            }
        }
        if method == "POST" || method == "PUT" {
            request = request.body(body);
        }
        request.send().await.with_context(|| format!("cannot reach {}", self.endpoint))
    }
}

/// An HTTP client for `endpoint`, TLS by rustls with ring (reqwest is built without a
/// crypto provider of its own), trusting only `ca_file` for `https`.
///
/// # Errors
/// An `https` endpoint without a readable CA file.
fn http_client(endpoint: &str, ca_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let tls = if endpoint.starts_with("https://") {
        tls_config(ca_file)?
    } else {
        tls_config_with(rustls::RootCertStore::empty())
    };
    Ok(reqwest::Client::builder().pool_max_idle_per_host(64).tls_backend_preconfigured(tls).build()?)
}

/// rustls (ring) trusting only the CA file: Berth's certificates are usually self-made, and
/// no public roots ship with this client.
fn tls_config(ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let Some(ca_file) = ca_file else {
        bail!("an https endpoint needs --ca-file (the PEM of the CA that signed the server's certificate)")
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("cannot read {}", ca_file.display()))?
    {
        roots.add(cert.with_context(|| format!("bad PEM in {}", ca_file.display()))?)?;
    }
    Ok(tls_config_with(roots))
}

fn tls_config_with(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

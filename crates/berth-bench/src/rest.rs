//! A REST client that signs requests the way the OCI SDK does (RSA-SHA256 over the
//! signing string), so the server does exactly the work it does for real clients.

use std::path::Path;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The JSON Berth writes for each user (`credentials/admin.json`).
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Credentials {
    pub(crate) tenancy_id: String,
    pub(crate) user_id: String,
    pub(crate) fingerprint: String,
    pub(crate) key_file: String,
    pub(crate) stomp_login: String,
    pub(crate) stomp_passcode: String,
    pub(crate) endpoint: String,
}

impl Credentials {
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a Berth credentials file", path.display()))
    }
}

struct Signer {
    key: RsaKeyPair,
    key_id: String,
    rng: SystemRandom,
}

impl Signer {
    fn load(creds: &Credentials) -> anyhow::Result<Self> {
        let der = PrivatePkcs8KeyDer::from_pem_file(&creds.key_file)
            .with_context(|| format!("cannot read PKCS#8 key {}", creds.key_file))?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| anyhow::anyhow!("bad RSA key: {e}"))?;
        let key_id = format!("{}/{}/{}", creds.tenancy_id, creds.user_id, creds.fingerprint);
        Ok(Signer { key, key_id, rng: SystemRandom::new() })
    }

    /// The headers of a signed request (reference section 5).
    fn headers(
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

/// A message as GetMessages returns it.
#[derive(Deserialize)]
pub(crate) struct Got {
    pub(crate) content: String,
    pub(crate) receipt: String,
}

// The data plane's bodies as typed structs, as an SDK parses them: a `Value` tree per
// message cost the load generator more CPU than the server spent on it.
#[derive(Serialize)]
struct PutBody<'a> {
    messages: Vec<Content<'a>>,
}

#[derive(Serialize)]
struct Content<'a> {
    content: &'a str,
}

#[derive(Deserialize)]
struct GetBody {
    messages: Vec<Got>,
}

#[derive(Serialize)]
struct DeleteBody<'a> {
    entries: Vec<Receipt<'a>>,
}

#[derive(Serialize)]
struct Receipt<'a> {
    receipt: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteResult {
    client_failures: u64,
    server_failures: u64,
}

/// OCI Queue REST client.
pub(crate) struct RestClient {
    http: reqwest::Client,
    base: String,
    host: String,
    signer: Option<Signer>,
}

impl RestClient {
    /// `signed = false` sends unsigned requests (for `serve --insecure-no-auth`).
    pub(crate) fn new(creds: &Credentials, endpoint: &str, signed: bool) -> anyhow::Result<Self> {
        let host = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest).trim_end_matches('/').to_owned();
        let signer = if signed { Some(Signer::load(creds)?) } else { None };
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
        Ok(RestClient { http, base: format!("{}/20210201", endpoint.trim_end_matches('/')), host, signer })
    }

    async fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<R> {
        let body = body.map(serde_json::to_vec).transpose()?.unwrap_or_default();
        let target = format!("/20210201{path}");
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.parse()?, url)
            .header("content-type", "application/json")
            .header("accept", "application/json");
        if let Some(signer) = &self.signer {
            for (name, value) in signer.headers(method, &target, &self.host, &body)? {
                request = request.header(name, value);
            }
        }
        if method == "POST" || method == "PUT" {
            request = request.body(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status} {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(if bytes.is_empty() { b"null" } else { &bytes })?)
    }

    async fn get_json<R: DeserializeOwned>(&self, path: &str) -> anyhow::Result<R> {
        self.call("GET", path, None::<&()>).await
    }

    /// The id of the queue with this display name, created if absent.
    pub(crate) async fn ensure_queue(&self, compartment: &str, name: &str, visibility: u32) -> anyhow::Result<String> {
        let list = format!("/queues?displayName={name}&limit=1");
        let found: Value = self.get_json(&list).await?;
        if let Some(id) = found["items"][0]["id"].as_str() {
            return Ok(id.to_owned());
        }
        let create = json!({"displayName": name, "compartmentId": compartment, "visibilityInSeconds": visibility});
        let _: IgnoredAny = self.call("POST", "/queues", Some(&create)).await?;
        let found: Value = self.get_json(&list).await?;
        found["items"][0]["id"].as_str().map(str::to_owned).context("created queue not listed")
    }

    pub(crate) async fn put(&self, queue: &str, contents: &[String]) -> anyhow::Result<()> {
        let body = PutBody { messages: contents.iter().map(|c| Content { content: c }).collect() };
        let _: IgnoredAny = self.call("POST", &format!("/queues/{queue}/messages"), Some(&body)).await?;
        Ok(())
    }

    pub(crate) async fn get(&self, queue: &str, limit: u32, visibility: u32, timeout: u32) -> anyhow::Result<Vec<Got>> {
        let path = format!(
            "/queues/{queue}/messages?limit={limit}&visibilityInSeconds={visibility}&timeoutInSeconds={timeout}"
        );
        let body: GetBody = self.get_json(&path).await?;
        Ok(body.messages)
    }

    /// Messages still in the queue (visible, in flight or delayed).
    pub(crate) async fn messages_left(&self, queue: &str) -> anyhow::Result<u64> {
        let stats: Value = self.get_json(&format!("/queues/{queue}/stats")).await?;
        let q = &stats["queue"];
        Ok(["visibleMessages", "inFlightMessages", "delayedMessages"].iter().filter_map(|k| q[k].as_u64()).sum())
    }

    /// DeleteMessages of what a get returned; returns how many entries failed.
    pub(crate) async fn delete(&self, queue: &str, got: &[Got]) -> anyhow::Result<u64> {
        let body = DeleteBody { entries: got.iter().map(|g| Receipt { receipt: &g.receipt }).collect() };
        let path = format!("/queues/{queue}/messages/actions/deleteMessages");
        let result: DeleteResult = self.call("POST", &path, Some(&body)).await?;
        Ok(result.client_failures + result.server_failures)
    }
}

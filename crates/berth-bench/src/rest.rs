//! A REST client that signs requests the way the OCI SDK does (RSA-SHA256 over the
//! signing string), so the server does exactly the work it does for real clients.

use std::path::Path;

use anyhow::{bail, Context};
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

    fn signing(&self) -> berth_client::Credentials {
        berth_client::Credentials {
            tenancy_id: self.tenancy_id.clone(),
            user_id: self.user_id.clone(),
            fingerprint: self.fingerprint.clone(),
            key_file: self.key_file.clone().into(),
            endpoint: Some(self.endpoint.clone()),
        }
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
    client: berth_client::Client,
}

impl RestClient {
    /// `signed = false` sends unsigned requests (for `serve --insecure-no-auth`).
    pub(crate) fn new(creds: &Credentials, endpoint: &str, signed: bool) -> anyhow::Result<Self> {
        let signing = signed.then(|| creds.signing());
        Ok(RestClient { client: berth_client::Client::new(endpoint, signing.as_ref(), None)? })
    }

    async fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<R> {
        let body = body.map(serde_json::to_vec).transpose()?.unwrap_or_default();
        let response = self.client.send(method, &format!("/20210201{path}"), body).await?;
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

    /// The id of the queue with this display name, created if absent (with the
    /// CONSUMER_GROUPS capability if `consumer_groups`).
    pub(crate) async fn ensure_queue(
        &self,
        compartment: &str,
        name: &str,
        visibility: u32,
        consumer_groups: bool,
    ) -> anyhow::Result<String> {
        let list = format!("/queues?displayName={name}&limit=1");
        let found: Value = self.get_json(&list).await?;
        if let Some(id) = found["items"][0]["id"].as_str() {
            return Ok(id.to_owned());
        }
        let capabilities: &[Value] = if consumer_groups { &[json!({"type": "CONSUMER_GROUPS"})] } else { &[] };
        let create = json!({"displayName": name, "compartmentId": compartment, "visibilityInSeconds": visibility,
                            "capabilities": capabilities});
        let _: IgnoredAny = self.call("POST", "/queues", Some(&create)).await?;
        let found: Value = self.get_json(&list).await?;
        found["items"][0]["id"].as_str().map(str::to_owned).context("created queue not listed")
    }

    /// The id of the queue's consumer group with this display name, created if absent.
    pub(crate) async fn ensure_group(&self, queue: &str, name: &str) -> anyhow::Result<String> {
        let list = format!("/consumerGroups?queueId={queue}&displayName={name}&limit=1");
        let found: Value = self.get_json(&list).await?;
        if let Some(id) = found["items"][0]["id"].as_str() {
            return Ok(id.to_owned());
        }
        let create = json!({"displayName": name, "queueId": queue});
        let _: IgnoredAny = self.call("POST", "/consumerGroups", Some(&create)).await?;
        let found: Value = self.get_json(&list).await?;
        found["items"][0]["id"].as_str().map(str::to_owned).context("created consumer group not listed")
    }

    pub(crate) async fn put(&self, queue: &str, contents: &[String]) -> anyhow::Result<()> {
        let body = PutBody { messages: contents.iter().map(|c| Content { content: c }).collect() };
        let _: IgnoredAny = self.call("POST", &format!("/queues/{queue}/messages"), Some(&body)).await?;
        Ok(())
    }

    pub(crate) async fn get(
        &self,
        queue: &str,
        group: Option<&str>,
        limit: u32,
        visibility: u32,
        timeout: u32,
    ) -> anyhow::Result<Vec<Got>> {
        let path = format!(
            "/queues/{queue}/messages?limit={limit}&visibilityInSeconds={visibility}&timeoutInSeconds={timeout}{}",
            in_group(group, '&')
        );
        let body: GetBody = self.get_json(&path).await?;
        Ok(body.messages)
    }

    /// Messages still in the queue or group (visible, in flight or delayed).
    pub(crate) async fn messages_left(&self, queue: &str, group: Option<&str>) -> anyhow::Result<u64> {
        let stats: Value = self.get_json(&format!("/queues/{queue}/stats{}", in_group(group, '?'))).await?;
        let q = &stats["queue"];
        Ok(["visibleMessages", "inFlightMessages", "delayedMessages"].iter().filter_map(|k| q[k].as_u64()).sum())
    }

    /// DeleteMessages of what a get returned; returns how many entries failed.
    pub(crate) async fn delete(&self, queue: &str, group: Option<&str>, got: &[Got]) -> anyhow::Result<u64> {
        let body = DeleteBody { entries: got.iter().map(|g| Receipt { receipt: &g.receipt }).collect() };
        let path = format!("/queues/{queue}/messages/actions/deleteMessages{}", in_group(group, '?'));
        let result: DeleteResult = self.call("POST", &path, Some(&body)).await?;
        Ok(result.client_failures + result.server_failures)
    }
}

/// The query parameter naming a consumer group, after `separator`; nothing without one.
fn in_group(group: Option<&str>, separator: char) -> String {
    group.map(|id| format!("{separator}consumerGroupId={id}")).unwrap_or_default()
}

//! `berth queue ...` over the REST API.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_client::{Client, Credentials};
use berth_core::limits;
use serde_json::{json, Map, Value};

use super::args::{ClientArgs, QueueArgs, QueueCommand};
use super::table::{self, clip};

const API: &str = "/20210201";
/// Longest a command waits for its work request (create, delete, purge).
const WORK_WAIT: Duration = Duration::from_secs(60);
/// Characters of a message body a table shows.
const CONTENT_WIDTH: usize = 60;

struct Admin {
    client: Client,
    /// From the credentials; `None` for `--unsigned` without any.
    tenancy_id: Option<String>,
    json: bool,
}

/// Runs one `berth queue` command.
///
/// # Errors
/// The server cannot be reached or refuses (its OCI error, with the request id), or the
/// credentials cannot be read.
pub async fn run(args: QueueArgs) -> anyhow::Result<()> {
    let admin = connect(&args.client)?;
    match args.command {
        QueueCommand::List { compartment_id } => admin.list(compartment_id).await,
        QueueCommand::Create {
            name,
            compartment_id,
            retention,
            visibility,
            timeout,
            dead_letter_after,
            delivery_delay,
        } => {
            let mut body = Map::new();
            body.insert("displayName".into(), json!(name));
            let compartment_id = match compartment_id {
                Some(id) => id,
                None => admin.tenancy()?.to_owned(),
            };
            body.insert("compartmentId".into(), json!(compartment_id));
            for (key, value) in [
                ("retentionInSeconds", retention),
                ("visibilityInSeconds", visibility),
                ("timeoutInSeconds", timeout),
                ("deadLetterQueueDeliveryCount", dead_letter_after),
                ("deliveryDelayInSeconds", delivery_delay),
            ] {
                if let Some(value) = value {
                    body.insert(key.into(), json!(value));
                }
            }
            admin.create(Value::Object(body)).await
        }
        QueueCommand::Get { queue } => admin.get(&admin.resolve(&queue).await?).await,
        QueueCommand::Stats { queue, channel, consumer_group } => {
            let id = admin.resolve(&queue).await?;
            let mut query: Vec<_> = channel.map(|c| ("channelId", c)).into_iter().collect();
            query.extend(admin.group(&id, consumer_group).await?);
            let answer = admin.call("GET", &format!("/queues/{id}/stats"), &query, None).await?;
            admin.print(&answer.body, || {
                let rows: Vec<Vec<String>> = [("queue", &answer.body["queue"]), ("dlq", &answer.body["dlq"])]
                    .iter()
                    .map(|(side, c)| {
                        let n = |key: &str| c[key].as_u64().unwrap_or(0).to_string();
                        vec![
                            side.to_string(),
                            n("visibleMessages"),
                            n("inFlightMessages"),
                            n("delayedMessages"),
                            n("sizeInBytes"),
                        ]
                    })
                    .collect();
                table::print(&["SIDE", "VISIBLE", "IN_FLIGHT", "DELAYED", "BYTES"], &rows);
            });
            Ok(())
        }
        QueueCommand::Peek { queue, dlq, channel, in_flight, delayed, limit, page, consumer_group } => {
            let id = admin.resolve(&queue).await?;
            let mut query = vec![("limit", limit.to_string())];
            query.extend(admin.group(&id, consumer_group).await?);
            for (key, on) in [("deadLetterQueue", dlq), ("includeInFlight", in_flight), ("includeDelayed", delayed)] {
                if on {
                    query.push((key, "true".into()));
                }
            }
            query.extend(channel.map(|c| ("channelId", c)));
            query.extend(page.map(|p| ("page", p)));
            let answer = admin.call("GET", &format!("/queues/{id}/peek"), &query, None).await?;
            admin.print(&answer.body, || {
                let rows: Vec<Vec<String>> = messages(&answer.body)
                    .map(|m| {
                        vec![
                            m["id"].to_string(),
                            text(&m["state"]),
                            m["deliveryCount"].to_string(),
                            text(&m["metadata"]["channelId"]),
                            clip(&text(&m["content"]), CONTENT_WIDTH),
                        ]
                    })
                    .collect();
                table::print(&["ID", "STATE", "DELIVERIES", "CHANNEL", "CONTENT"], &rows);
            });
            if let Some(next) = answer.header("opc-next-page") {
                eprintln!("more: --page {next}");
            }
            Ok(())
        }
        QueueCommand::Put { queue, messages: contents, channel, delay } => {
            let entries: Vec<Value> = contents
                .iter()
                .map(|content| {
                    let mut entry = json!({"content": content});
                    if let Some(channel) = &channel {
                        entry["metadata"] = json!({"channelId": channel});
                    }
                    if let Some(delay) = delay {
                        entry["delayInSeconds"] = json!(delay);
                    }
                    entry
                })
                .collect();
            let path = format!("/queues/{}/messages", admin.resolve(&queue).await?);
            let mut put = Vec::new();
            let mut failed = None;
            for batch in put_batches(&contents) {
                match admin.call("POST", &path, &[], Some(&json!({"messages": &entries[batch]}))).await {
                    Ok(answer) => put.extend(messages(&answer.body).cloned()),
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
            // What was put is shown even when a later batch failed.
            let body = json!({"messages": put});
            admin.print(&body, || {
                let rows: Vec<Vec<String>> =
                    messages(&body).map(|m| vec![m["id"].to_string(), text(&m["expireAfter"])]).collect();
                table::print(&["ID", "EXPIRE_AFTER"], &rows);
            });
            match failed {
                Some(error) => Err(error.context(format!("{} of {} messages were put", put.len(), contents.len()))),
                None => Ok(()),
            }
        }
        QueueCommand::GetMessages { queue, limit, visibility, timeout, dlq, channel, delete, consumer_group } => {
            let id = admin.resolve(&queue).await?;
            let group: Vec<_> = admin.group(&id, consumer_group).await?.into_iter().collect();
            let mut query = vec![("limit", limit.to_string()), ("timeoutInSeconds", timeout.to_string())];
            query.extend(group.iter().cloned());
            query.extend(visibility.map(|v| ("visibilityInSeconds", v.to_string())));
            query.extend(channel.map(|c| ("channelFilter", c)));
            if dlq {
                query.push(("deadLetterQueue", "true".into()));
            }
            let got = admin.call("GET", &format!("/queues/{id}/messages"), &query, None).await?;
            admin.print(&got.body, || {
                let rows: Vec<Vec<String>> = messages(&got.body)
                    .map(|m| {
                        vec![
                            m["id"].to_string(),
                            m["deliveryCount"].to_string(),
                            text(&m["metadata"]["channelId"]),
                            clip(&text(&m["content"]), CONTENT_WIDTH),
                        ]
                    })
                    .collect();
                table::print(&["ID", "DELIVERIES", "CHANNEL", "CONTENT"], &rows);
            });
            if delete {
                let receipts: Vec<Value> = messages(&got.body).map(|m| json!({"receipt": m["receipt"]})).collect();
                let path = format!("/queues/{id}/messages/actions/deleteMessages");
                for entries in receipts.chunks(limits::MAX_BATCH_ENTRIES) {
                    let deleted = admin.call("POST", &path, &group, Some(&json!({"entries": entries}))).await?;
                    let failures = deleted.body["clientFailures"].as_u64().unwrap_or(0)
                        + deleted.body["serverFailures"].as_u64().unwrap_or(0);
                    if failures > 0 {
                        bail!("{failures} of the messages above were not deleted: {}", deleted.body);
                    }
                }
            }
            Ok(())
        }
        QueueCommand::Purge { queue, r#type, consumer_group } => {
            let id = admin.resolve(&queue).await?;
            let mut body = json!({"purgeType": r#type.wire()});
            match consumer_group.as_deref() {
                Some(all) if all.eq_ignore_ascii_case("all") => body["consumerGroupId"] = json!("all"),
                _ => {
                    if let Some((_, group)) = admin.group(&id, consumer_group).await? {
                        body["consumerGroupId"] = json!(group);
                    }
                }
            }
            let path = format!("/queues/{id}/actions/purge");
            let answer = admin.call("POST", &path, &[], Some(&body)).await?;
            let work = admin.wait(&answer).await?;
            admin.print(&work, || println!("purged ({})", r#type.wire()));
            Ok(())
        }
        QueueCommand::Redrive { queue, channel, consumer_group } => {
            let id = admin.resolve(&queue).await?;
            let group: Vec<_> = admin.group(&id, consumer_group).await?.into_iter().collect();
            let body = if channel.is_empty() { json!({}) } else { json!({"channelIds": channel}) };
            let answer = admin.call("POST", &format!("/queues/{id}/actions/redrive"), &group, Some(&body)).await?;
            let moved = answer.body["messagesMoved"].as_u64().unwrap_or(0);
            let noun = if moved == 1 { "message" } else { "messages" };
            admin.print(&answer.body, || println!("moved {moved} {noun} back"));
            Ok(())
        }
        QueueCommand::Groups { queue } => {
            let id = admin.resolve(&queue).await?;
            // In full: the list's summaries leave out the thresholds.
            let mut groups = Vec::new();
            for summary in admin.groups(&id).await? {
                let path = format!("/consumerGroups/{}", text(&summary["id"]));
                groups.push(admin.call("GET", &path, &[], None).await?.body);
            }
            admin.print(&json!({"items": groups}), || {
                let rows: Vec<Vec<String>> = groups
                    .iter()
                    .map(|g| {
                        let dlq = match &g["deadLetterQueueDeliveryCount"] {
                            Value::Null => "queue's".to_owned(),
                            count => count.to_string(),
                        };
                        vec![
                            text(&g["id"]),
                            text(&g["displayName"]),
                            text(&g["lifecycleState"]),
                            dlq,
                            text(&g["filter"]),
                        ]
                    })
                    .collect();
                table::print(&["ID", "NAME", "STATE", "DLQ_AFTER", "FILTER"], &rows);
            });
            Ok(())
        }
        QueueCommand::Delete { queue } => {
            let id = admin.resolve(&queue).await?;
            let answer = admin.call("DELETE", &format!("/queues/{id}"), &[], None).await?;
            let work = admin.wait(&answer).await?;
            admin.print(&work, || println!("deleted {id}"));
            Ok(())
        }
    }
}

/// Index ranges of `contents` that each fit one PutMessages request (OCI's limits on
/// messages and bytes per request).
fn put_batches(contents: &[String]) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, content) in contents.iter().enumerate() {
        if i > start && (i - start == limits::MAX_PUT_MESSAGES || bytes + content.len() > limits::MAX_PUT_BYTES) {
            batches.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += content.len();
    }
    if start < contents.len() {
        batches.push(start..contents.len());
    }
    batches
}

fn connect(args: &ClientArgs) -> anyhow::Result<Admin> {
    let credentials = match &args.config {
        Some(config) => Some(Credentials::from_oci_config(config, &args.profile)?),
        None => {
            let path = args.data_dir.join("credentials").join("admin.json");
            match Credentials::from_berth_file(&path) {
                Ok(credentials) => Some(credentials),
                // A server without auth needs no key; the tenancy then comes from the flags.
                Err(_) if args.unsigned => None,
                Err(error) => {
                    return Err(error.context(format!(
                        "no admin credentials in {} (give --data-dir or --config)",
                        args.data_dir.display()
                    )))
                }
            }
        }
    };
    let endpoint = args.endpoint.clone().or_else(|| credentials.as_ref().and_then(|c| c.endpoint.clone()));
    let endpoint = endpoint.unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let signer = credentials.as_ref().filter(|_| !args.unsigned);
    let client = Client::new(&endpoint, signer, args.ca_file.as_deref())?;
    Ok(Admin { client, tenancy_id: credentials.map(|c| c.tenancy_id), json: args.json })
}

impl Admin {
    /// The tenancy: the default compartment, and where display names are looked up.
    fn tenancy(&self) -> anyhow::Result<&str> {
        self.tenancy_id.as_deref().context("no credentials name the tenancy: give --compartment-id or a queue's OCID")
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<berth_client::Answer> {
        self.client.call(method, &format!("{API}{path}"), query, body).await
    }

    /// The JSON as the server sent it, or the table.
    fn print(&self, body: &Value, table: impl FnOnce()) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
        } else {
            table();
        }
    }

    /// Every queue of the compartment (all pages), optionally of one display name.
    async fn queues(&self, compartment_id: &str, name: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let mut query = vec![("compartmentId", compartment_id.to_owned())];
        query.extend(name.map(|n| ("displayName", n.to_owned())));
        self.all_pages("/queues", query).await
    }

    /// The items of every page of a list.
    async fn all_pages(&self, path: &str, mut query: Vec<(&str, String)>) -> anyhow::Result<Vec<Value>> {
        query.push(("limit", "100".to_owned()));
        let mut items = Vec::new();
        loop {
            let answer = self.call("GET", path, &query, None).await?;
            items.extend(answer.body["items"].as_array().cloned().unwrap_or_default());
            match answer.header("opc-next-page") {
                Some(next) => {
                    query.retain(|(key, _)| *key != "page");
                    query.push(("page", next.to_owned()));
                }
                None => return Ok(items),
            }
        }
    }

    /// A queue's OCID: the argument itself, or the one live queue of that display name.
    async fn resolve(&self, queue: &str) -> anyhow::Result<String> {
        if queue.starts_with("ocid1.queue.") {
            return Ok(queue.to_owned());
        }
        let named = self.queues(self.tenancy()?, Some(queue)).await?;
        let live: Vec<&Value> = named.iter().filter(|q| q["lifecycleState"] != "DELETED").collect();
        match live.as_slice() {
            [one] => Ok(text(&one["id"])),
            [] => bail!("no queue named {queue:?} in the tenancy (give its OCID if it is in another compartment)"),
            many => bail!("{} queues are named {queue:?}; give the OCID of one", many.len()),
        }
    }

    /// The consumer groups of a queue as ListConsumerGroups sums them up (all pages), oldest
    /// (the primary group) first.
    async fn groups(&self, queue_id: &str) -> anyhow::Result<Vec<Value>> {
        self.all_pages("/consumerGroups", vec![("queueId", queue_id.to_owned()), ("sortOrder", "ASC".to_owned())]).await
    }

    /// The `consumerGroupId` parameter naming `group` (an OCID, or a display name of the
    /// queue's groups), if one is given.
    async fn group(&self, queue_id: &str, group: Option<String>) -> anyhow::Result<Option<(&'static str, String)>> {
        let Some(group) = group else { return Ok(None) };
        if group.starts_with("ocid1.queueconsumergroup.") {
            return Ok(Some(("consumerGroupId", group)));
        }
        // Names are unique regardless of case; the list's filter is exact.
        let wanted = group.to_lowercase();
        let all = self.groups(queue_id).await?;
        match all.iter().find(|g| text(&g["displayName"]).to_lowercase() == wanted) {
            Some(one) => Ok(Some(("consumerGroupId", text(&one["id"])))),
            None => bail!("the queue has no consumer group named {group:?}"),
        }
    }

    async fn list(&self, compartment_id: Option<String>) -> anyhow::Result<()> {
        let compartment_id = match &compartment_id {
            Some(id) => id,
            None => self.tenancy()?,
        };
        let items = self.queues(compartment_id, None).await?;
        self.print(&json!({"items": items}), || {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|q| {
                    vec![text(&q["id"]), text(&q["displayName"]), text(&q["lifecycleState"]), text(&q["timeCreated"])]
                })
                .collect();
            table::print(&["ID", "NAME", "STATE", "CREATED"], &rows);
        });
        Ok(())
    }

    async fn create(&self, body: Value) -> anyhow::Result<()> {
        let answer = self.call("POST", "/queues", &[], Some(&body)).await?;
        let work = self.wait(&answer).await?;
        let id = text(&work["resources"][0]["identifier"]);
        if self.json {
            return self.get(&id).await;
        }
        println!("{id}");
        Ok(())
    }

    async fn get(&self, id: &str) -> anyhow::Result<()> {
        let answer = self.call("GET", &format!("/queues/{id}"), &[], None).await?;
        self.print(&answer.body, || {
            let rows: Vec<Vec<String>> = answer
                .body
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| !v.is_object() && !v.is_array())
                .map(|(k, v)| vec![k.clone(), text(v)])
                .collect();
            table::print(&["FIELD", "VALUE"], &rows);
        });
        Ok(())
    }

    /// Waits for the work request an answer names to end; its last state, or its error.
    async fn wait(&self, answer: &berth_client::Answer) -> anyhow::Result<Value> {
        let id = answer.header("opc-work-request-id").context("the server named no work request")?.to_owned();
        let started = Instant::now();
        loop {
            let work = self.call("GET", &format!("/workRequests/{id}"), &[], None).await?.body;
            match work["status"].as_str() {
                Some("SUCCEEDED") => return Ok(work),
                Some("FAILED" | "CANCELED") => {
                    let errors = self.call("GET", &format!("/workRequests/{id}/errors"), &[], None).await?.body;
                    bail!("work request {id} {}: {}", text(&work["status"]), errors);
                }
                _ if started.elapsed() > WORK_WAIT => {
                    bail!("work request {id} still {} after {WORK_WAIT:?}", text(&work["status"]))
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// The messages of a GetMessages, PutMessages or peek answer.
fn messages(body: &Value) -> impl Iterator<Item = &Value> {
    body["messages"].as_array().into_iter().flatten()
}

/// A JSON value as a table cell: strings without quotes, absent as empty.
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_are_split_by_count_and_by_bytes() {
        let small: Vec<String> = (0..45).map(|i| i.to_string()).collect();
        assert_eq!(put_batches(&small), [0..20, 20..40, 40..45]);
        let big = vec!["x".repeat(200 * 1024); 5];
        assert_eq!(put_batches(&big), [0..2, 2..4, 4..5], "512 KiB per request");
        assert!(put_batches(&[]).is_empty());
    }
}

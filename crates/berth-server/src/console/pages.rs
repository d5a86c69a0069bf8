//! The pages.

use std::fmt::Write;

use berth_core::consumer_group::ConsumerGroupFilter;
use berth_core::delivery::Standing;
use berth_core::engine::Target;
use berth_core::model::{QueueFilter, QueueSort, QueueStats};
use berth_core::{Engine, QueueError};

use super::history::History;
use super::html::{csrf, esc, number, page};
use super::session::Session;
use super::{chart, who, PeekQuery};

/// Most queues the list shows.
const LISTED: i64 = 1000;

pub(crate) fn login(failed: Option<&str>, csrf_token: &str) -> String {
    let flash = failed.map(|text| (true, text.to_owned()));
    let body = format!(
        r#"<h1>Log in</h1>
<form method="post" action="/console/login" class="stack">{}
<label>Login (tenancy/user) <input name="login" autocomplete="username" required placeholder="default/admin"></label>
<label>Passcode <input name="passcode" type="password" autocomplete="current-password" required></label>
<button>Log in</button></form>
<p class="muted">The STOMP login and passcode of a user: <code>stompLogin</code> and <code>stompPasscode</code> in <code>credentials/&lt;user&gt;.json</code> of the server's data dir.</p>"#,
        csrf(csrf_token)
    );
    page("Log in", None, flash.as_ref(), &body)
}

pub(crate) fn unavailable(reason: &str) -> String {
    page("Unavailable", None, Some(&(true, format!("The store cannot be read: {reason}"))), "")
}

pub(crate) fn frame_error(session: &Session, error: &QueueError) -> String {
    page("Error", who(session), Some(&(true, error.to_string())), r#"<p><a href="/console">Back to the queues</a></p>"#)
}

fn counts_cells(stats: &QueueStats) -> String {
    let q = &stats.queue;
    format!(
        r#"<td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td>"#,
        q.visible,
        q.in_flight,
        q.delayed,
        stats.dead_letter.visible + stats.dead_letter.in_flight
    )
}

pub(crate) async fn queues(engine: &Engine, history: &History, session: &Session) -> Result<String, QueueError> {
    let filter = QueueFilter {
        compartment_id: None,
        state: None,
        display_name: None,
        id: None,
        sort: QueueSort::DisplayName,
        descending: false,
    };
    let listed = engine.list_queues(&session.tenancy_id, &filter, None, Some(LISTED)).await?;
    let mut rows = String::new();
    for queue in listed.items.iter().filter(|q| q.state != berth_core::model::LifecycleState::Deleted) {
        let stats = match engine.stats(&session.tenancy_id, &queue.id, None).await {
            Ok(stats) => stats,
            // Deleted since it was listed.
            Err(QueueError::QueueNotFound) => continue,
            Err(e) => return Err(e),
        };
        let rates = history.latest_rates(&queue.id).unwrap_or_default();
        let _ = write!(
            rows,
            r#"<tr><td><a href="/console/queues/{id}">{name}</a></td><td>{state}</td>{counts}<td class="num">{put:.1}</td><td class="num">{delivered:.1}</td></tr>"#,
            id = esc(&queue.id),
            name = esc(&queue.spec.display_name),
            state = esc(queue.state.as_str()),
            counts = counts_cells(&stats),
            put = rates.put,
            delivered = rates.delivered,
        );
    }
    if rows.is_empty() {
        rows = r#"<tr><td colspan="8" class="muted">No queues yet.</td></tr>"#.into();
    }
    let body = format!(
        r#"<h1>Queues</h1>
<table><thead><tr><th>Name</th><th>State</th><th class="num">Visible</th><th class="num">In flight</th><th class="num">Delayed</th><th class="num">DLQ</th><th class="num">Put/s</th><th class="num">Delivered/s</th></tr></thead>
<tbody>{rows}</tbody></table>
<p class="muted">Rates are this node's, over the last {every} s.</p>
<h2>Create a queue</h2>
<form method="post" action="/console/queues" class="grid">{csrf}
<label>Name <input name="name" required></label>
{retention}{visibility}{timeout}{dlq}{delay}
<label class="check"><input type="checkbox" name="consumer_groups"> consumer groups</label>
<button>Create</button></form>"#,
        every = super::history::EVERY.as_secs(),
        csrf = csrf(&session.csrf),
        retention = number("retention", "Retention (s)", None),
        visibility = number("visibility", "Visibility (s)", None),
        timeout = number("timeout", "Long-poll wait (s)", None),
        dlq = number("dead_letter_after", "Deliveries before the DLQ (0: none)", None),
        delay = number("delivery_delay", "Delivery delay (s)", None),
    );
    Ok(page("Queues", who(session), session.flash.as_ref(), &body))
}

/// A queue's consumer groups with their counts, the one shown below marked, and a form to
/// add one.
async fn groups_section(
    engine: &Engine,
    session: &Session,
    queue_id: &str,
    shown: Option<&str>,
) -> Result<String, QueueError> {
    let tenancy = &session.tenancy_id;
    let filter = ConsumerGroupFilter { queue_id: Some(queue_id.to_owned()), ..ConsumerGroupFilter::default() };
    let groups = engine.list_consumer_groups(tenancy, &filter, None, Some(LISTED)).await?;
    let eid = esc(queue_id);
    let mut rows = String::new();
    let mut shown_name = String::new();
    for g in &groups.items {
        let stats = engine.stats(tenancy, Target { queue_id, consumer_group_id: Some(&g.id) }, None).await?;
        let is_shown = shown == Some(g.id.as_str()) || (shown.is_none() && g.primary);
        if is_shown {
            shown_name = g.spec.display_name.clone();
        }
        let current = if is_shown { " class=\"current\"" } else { "" };
        let _ = write!(
            rows,
            r#"<tr{current}><td><a href="/console/queues/{eid}?group={gid}">{name}</a></td><td>{state}</td><td><code>{filter}</code></td>{counts}</tr>"#,
            gid = esc(&g.id),
            name = esc(&g.spec.display_name),
            state = esc(g.state.as_str()),
            filter = esc(&g.spec.filter),
            counts = counts_cells(&stats),
        );
    }
    Ok(format!(
        r#"<h2>Consumer groups</h2>
<table class="groups"><thead><tr><th>Name</th><th>State</th><th>Filter</th><th class="num">Visible</th><th class="num">In flight</th><th class="num">Delayed</th><th class="num">DLQ</th></tr></thead><tbody>{rows}</tbody></table>
<form method="post" action="/console/queues/{eid}/groups" class="inline">{token}
<input name="name" aria-label="Group name" placeholder="name" required>
<input name="filter" aria-label="Group filter" placeholder='filter, e.g. :kind = "audit"'>
<button>Add group</button></form>
<p class="muted">Below: the messages of {shown}.</p>"#,
        token = csrf(&session.csrf),
        shown = esc(&shown_name),
    ))
}

fn stats_table(stats: &QueueStats) -> String {
    let row = |side: &str, c: &berth_core::model::MessageCounts| {
        format!(
            r#"<tr><td>{side}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            c.visible, c.in_flight, c.delayed, c.size_bytes
        )
    };
    format!(
        r#"<table class="stats"><thead><tr><th></th><th class="num">Visible</th><th class="num">In flight</th><th class="num">Delayed</th><th class="num">Bytes</th></tr></thead><tbody>{}{}</tbody></table>"#,
        row("Queue", &stats.queue),
        row("DLQ", &stats.dead_letter)
    )
}

pub(crate) async fn queue(
    engine: &Engine,
    history: &History,
    session: &Session,
    id: &str,
    q: &PeekQuery,
) -> Result<String, QueueError> {
    let tenancy = &session.tenancy_id;
    let queue = engine.get_queue(tenancy, id).await?;
    if queue.state == berth_core::model::LifecycleState::Deleted {
        return Err(QueueError::QueueNotFound);
    }
    // Counts, channels, messages, purge and redrive are of the group asked for (else the
    // primary's); charts, sending, settings and deletion are the queue's.
    let group = q.group();
    let target = Target { queue_id: id, consumer_group_id: group };
    let stats = engine.stats(tenancy, target, None).await?;
    let channels = engine.list_channels(tenancy, target, None, None, Some(100)).await?;
    let peek = q.peek();
    let dlq = peek.dead_letter;
    let peeked = engine.peek(tenancy, target, peek.clone()).await?;
    let groups = if queue.spec.has_consumer_groups() {
        groups_section(engine, session, id, group).await?
    } else {
        String::new()
    };
    let in_group = group.map(|g| format!("&group={}", esc(g))).unwrap_or_default();
    let p = &queue.spec.policy;
    let eid = esc(id);
    let token = csrf(&session.csrf);

    let mut messages = String::new();
    for m in &peeked.items {
        let state = match m.standing {
            Standing::Visible => "visible",
            Standing::InFlight => "in flight",
            Standing::Delayed => "delayed",
        };
        let _ = write!(
            messages,
            r#"<tr><td class="num">{}</td><td>{state}</td><td class="num">{}</td><td>{}</td><td><pre class="body">{}</pre></td></tr>"#,
            m.id,
            m.delivery_count,
            esc(&m.channel),
            esc(&m.content)
        );
    }
    if messages.is_empty() {
        messages = r#"<tr><td colspan="5" class="muted">No messages to show.</td></tr>"#.into();
    }
    let checked = |on: bool| if on { " checked" } else { "" };
    let side_value = if dlq { "dlq" } else { "queue" };
    let next = peeked.next.as_ref().map_or_else(String::new, |next| {
        let mut link = format!("/console/queues/{eid}?side={side_value}{in_group}&page={}", esc(next));
        if peek.in_flight {
            link.push_str("&in_flight=on");
        }
        if peek.delayed {
            link.push_str("&delayed=on");
        }
        format!(r#"<p><a href="{link}" class="next">Next page</a></p>"#)
    });
    let channel_list = if channels.items.is_empty() {
        r#"<p class="muted">Only the default channel.</p>"#.to_owned()
    } else {
        let items: String = channels.items.iter().map(|c| format!("<li>{}</li>", esc(c))).collect();
        format!(r#"<ul class="channels">{items}</ul>"#)
    };
    let tab = |side: &str, label: &str| {
        let class = if side == side_value { " class=\"current\"" } else { "" };
        format!(r#"<a href="/console/queues/{eid}?side={side}{in_group}"{class}>{label}</a>"#)
    };
    let group_input =
        group.map(|g| format!(r#"<input type="hidden" name="group" value="{}">"#, esc(g))).unwrap_or_default();
    let body = format!(
        r#"<p><a href="/console">← Queues</a></p>
<h1>{name}</h1><p class="muted">{eid} · {state}</p>
{groups}{stats}
<h2>Last minutes</h2><div class="charts" id="charts" data-src="/console/queues/{eid}/charts">{charts}</div>
<h2>Messages</h2>
<nav class="tabs">{tab_queue}{tab_dlq}</nav>
<form method="get" action="/console/queues/{eid}" class="inline"><input type="hidden" name="side" value="{side_value}">{group_input}
<label class="check"><input type="checkbox" name="in_flight"{in_flight}> in flight</label>
<label class="check"><input type="checkbox" name="delayed"{delayed}> delayed</label><button>Show</button></form>
<table class="messages"><thead><tr><th class="num">Id</th><th>State</th><th class="num">Deliveries</th><th>Channel</th><th>Body</th></tr></thead><tbody>{messages}</tbody></table>
{next}
<h2>Send a message</h2>
<form method="post" action="/console/queues/{eid}/messages" class="stack">{token}
<label>Body <textarea name="content" rows="3" required></textarea></label>
<label>Channel (empty: the default) <input name="channel"></label>
{delay}<button>Send</button></form>
<h2>Channels</h2>{channel_list}
<h2>Settings</h2>
<form method="post" action="/console/queues/{eid}/settings" class="grid">{token}
<label>Name <input name="name" value="{name}"></label>
{visibility}{timeout}{dlq_after}{delivery_delay}
<label>Retention (s) <input value="{retention}" disabled></label>
<button>Save</button></form>
<h2>Actions</h2>
<section class="actions">
<form method="post" action="/console/queues/{eid}/purge" class="inline">{token}{group_input}
<select name="target" aria-label="What to purge"><option value="NORMAL">Queue</option><option value="DLQ">DLQ</option><option value="BOTH">Both</option></select>
<button class="danger">Purge</button></form>
<form method="post" action="/console/queues/{eid}/redrive" class="inline">{token}{group_input}<button>Redrive the DLQ</button></form>
<form method="post" action="/console/queues/{eid}/delete" class="inline">{token}
<label class="check"><input type="checkbox" name="confirm" required> yes, delete it</label><button class="danger">Delete queue</button></form>
</section>
<script src="/console/app.js"></script>"#,
        name = esc(&queue.spec.display_name),
        state = esc(queue.state.as_str()),
        stats = stats_table(&stats),
        charts = chart::queue_charts(&history.of(id)),
        tab_queue = tab("queue", "Queue"),
        tab_dlq = tab("dlq", "Dead letter queue"),
        in_flight = checked(peek.in_flight),
        delayed = checked(peek.delayed),
        delay = number("delay", "Delay (s)", None),
        visibility = number("visibility", "Visibility (s)", Some(p.visibility_secs.into())),
        timeout = number("timeout", "Long-poll wait (s)", Some(p.timeout_secs.into())),
        dlq_after =
            number("dead_letter_after", "Deliveries before the DLQ (0: none)", Some(p.dead_letter_after.into())),
        delivery_delay = number("delivery_delay", "Delivery delay (s)", Some(p.delivery_delay_secs.into())),
        retention = p.retention_secs,
    );
    Ok(page(&queue.spec.display_name, who(session), session.flash.as_ref(), &body))
}

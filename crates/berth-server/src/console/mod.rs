//! The web console at `/console`: server-rendered pages over the engine, as REST and STOMP
//! are, for one tenancy's user logged in with their STOMP login and passcode. Every form
//! posts with the session's CSRF token and answers with a redirect (a reload repeats
//! nothing); errors are shown on the next page.

mod chart;
mod history;
mod html;
mod pages;
mod session;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use berth_core::consumer_group::{ConsumerGroupDetails, CONSUMER_GROUPS};
use berth_core::engine::{spec_with_defaults, Peek, PolicyValues, QueueChange, Target};
use berth_core::model::{NewMessage, PurgeTarget};
use berth_core::{Engine, QueueError};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::login_throttle::{Attempter, LoginThrottle};
use history::History;
use session::{Session, Sessions, COOKIE, LOGIN_COOKIE};

/// The console's own state: sessions and the charts' history.
pub struct Console {
    sessions: Sessions,
    history: History,
    /// Whether cookies must be `Secure` (the browser speaks HTTPS).
    secure_cookie: bool,
    /// Failed logins, shared with STOMP.
    logins: Arc<LoginThrottle>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

impl Console {
    /// A console; `https`: whether browsers reach it by HTTPS (cookies are then `Secure`);
    /// `logins`: the failed logins to count and slow down.
    pub fn new(https: bool, logins: Arc<LoginThrottle>) -> Self {
        Console { sessions: Sessions::default(), history: History::default(), secure_cookie: https, logins }
    }

    /// A `Set-Cookie` value for the console's cookies (`None` to remove it).
    fn cookie(&self, name: &str, path: &str, value: Option<&str>) -> HeaderValue {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        let cookie = match value {
            Some(value) => format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict{secure}"),
            None => format!("{name}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
        };
        // Names, paths and tokens are ASCII without control characters.
        HeaderValue::from_str(&cookie).expect("a valid cookie")
    }

    /// Samples the queues for the charts until `stop`.
    pub async fn sample(self: Arc<Self>, engine: Arc<Engine>, stop: CancellationToken) {
        self.history.sample(&engine, stop).await;
    }
}

/// The console's routes (merged into the HTTP application).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(queues_page))
        .route("/console/style.css", get(style))
        .route("/console/app.js", get(script))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/queues", post(create_queue))
        .route("/console/queues/{id}", get(queue_page))
        .route("/console/queues/{id}/charts", get(charts))
        .route("/console/queues/{id}/settings", post(update_settings))
        .route("/console/queues/{id}/messages", post(send_message))
        .route("/console/queues/{id}/groups", post(create_group))
        .route("/console/queues/{id}/purge", post(purge))
        .route("/console/queues/{id}/redrive", post(redrive))
        .route("/console/queues/{id}/delete", post(delete_queue))
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("style.css"))
}

async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("app.js"))
}

fn html(body: String) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        // Only this page's own style and script; never framed (clickjacking).
        (header::CONTENT_SECURITY_POLICY, "default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    (headers, body).into_response()
}

fn to_login() -> Response {
    Redirect::to("/console/login").into_response()
}

/// After a form: back to `to`, with the outcome shown there.
fn after(app: &AppState, headers: &HeaderMap, to: &str, outcome: Result<String, QueueError>) -> Response {
    match outcome {
        Ok(done) => app.console.sessions.flash(headers, false, done),
        Err(e) => app.console.sessions.flash(headers, true, e.to_string()),
    }
    Redirect::to(to).into_response()
}

async fn login_page(State(app): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    // The login form's own CSRF token, in a cookie and in the form (a cross-site post
    // cannot log a browser into someone else's session).
    let token = session::token();
    let failed = match q.failed.as_deref() {
        Some("busy") => Some("Too many failed logins: wait a few seconds and try again"),
        Some(_) => Some("Login failed: check the login (tenancy/user) and passcode"),
        None => None,
    };
    let mut response = html(pages::login(failed, &token));
    response.headers_mut().insert(header::SET_COOKIE, app.console.cookie(LOGIN_COOKIE, "/console/login", Some(&token)));
    response
}

#[derive(Deserialize)]
struct LoginQuery {
    failed: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    passcode: String,
}

async fn login(
    State(app): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !session::login_token_matches(&headers, &form.csrf) {
        return Redirect::to("/console/login").into_response();
    }
    let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(ConnectInfo(addr))| addr.ip());
    let attempter = Attempter::new(ip, &form.login);
    if app.console.logins.wait_turn(&attempter).await.is_err() {
        tracing::warn!(%ip, login = form.login, "console login refused: too many failed logins");
        return Redirect::to("/console/login?failed=busy").into_response();
    }
    let found = match form.login.split_once('/') {
        Some((tenancy, user)) => app.auth.stomp_user(tenancy, user, &form.passcode).await,
        None => Ok(None),
    };
    match found {
        Ok(Some(user)) => {
            app.console.logins.succeeded(&attempter);
            let token = app.console.sessions.start(user.tenancy_id, form.login.clone());
            let mut response = Redirect::to("/console").into_response();
            let cookies = response.headers_mut();
            cookies.append(header::SET_COOKIE, app.console.cookie(COOKIE, "/console", Some(&token)));
            cookies.append(header::SET_COOKIE, app.console.cookie(LOGIN_COOKIE, "/console/login", None));
            response
        }
        Ok(None) => {
            let failures = app.console.logins.failed(&attempter);
            tracing::warn!(%ip, login = form.login, failures, "console login failed");
            Redirect::to("/console/login?failed=1").into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, html(pages::unavailable(&e.to_string()))).into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(app): State<AppState>, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    if app.console.sessions.of_form(&headers, &form.csrf).is_some() {
        app.console.sessions.end(&headers);
    }
    let mut response = to_login();
    response.headers_mut().insert(header::SET_COOKIE, app.console.cookie(COOKIE, "/console", None));
    response
}

async fn queues_page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some(session) = app.console.sessions.of(&headers) else { return to_login() };
    match pages::queues(&app.engine, &app.console.history, &session).await {
        Ok(body) => html(body),
        Err(e) => html(pages::frame_error(&session, &e)),
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct PeekQuery {
    side: Option<String>,
    in_flight: Option<String>,
    delayed: Option<String>,
    page: Option<String>,
    /// A consumer group's copy instead of the primary group's.
    group: Option<String>,
}

impl PeekQuery {
    /// The consumer group asked for, if any.
    fn group(&self) -> Option<&str> {
        chosen(self.group.as_deref().unwrap_or_default())
    }

    fn peek(&self) -> Peek {
        Peek {
            dead_letter: self.side.as_deref() == Some("dlq"),
            in_flight: self.in_flight.is_some(),
            delayed: self.delayed.is_some(),
            page: self.page.clone().filter(|p| !p.is_empty()),
            limit: Some(20),
            ..Peek::default()
        }
    }
}

async fn queue_page(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PeekQuery>,
) -> Response {
    let Some(session) = app.console.sessions.of(&headers) else { return to_login() };
    match pages::queue(&app.engine, &app.console.history, &session, &id, &q).await {
        Ok(body) => html(body),
        Err(QueueError::QueueNotFound) => {
            app.console.sessions.flash(&headers, true, format!("No queue {id}"));
            Redirect::to("/console").into_response()
        }
        // Deleted meanwhile, or of another queue: the queue's own page.
        Err(QueueError::ConsumerGroupNotFound) => {
            app.console.sessions.flash(&headers, true, "No such consumer group of this queue".to_owned());
            Redirect::to(&format!("/console/queues/{id}")).into_response()
        }
        Err(e) => html(pages::frame_error(&session, &e)),
    }
}

async fn charts(State(app): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    // A background fetch: the flash stays for the next page.
    let Some(session) = app.console.sessions.peek(&headers) else { return StatusCode::UNAUTHORIZED.into_response() };
    // Only a queue of the session's tenancy.
    if app.engine.get_queue(&session.tenancy_id, &id).await.is_err() {
        return StatusCode::NOT_FOUND.into_response();
    }
    html(chart::queue_charts(&app.console.history.of(&id)))
}

/// A number field: empty is "not given".
fn field(name: &str, value: &str) -> Result<Option<i64>, QueueError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| QueueError::InvalidParameter(format!("{name} must be a whole number")))
}

#[derive(Deserialize)]
struct QueueForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    retention: String,
    #[serde(default)]
    visibility: String,
    #[serde(default)]
    timeout: String,
    #[serde(default)]
    dead_letter_after: String,
    #[serde(default)]
    delivery_delay: String,
    /// The CONSUMER_GROUPS capability (a ticked box).
    consumer_groups: Option<String>,
}

impl QueueForm {
    fn values(&self) -> Result<PolicyValues, QueueError> {
        Ok(PolicyValues {
            retention: field("retention", &self.retention)?,
            visibility: field("visibility", &self.visibility)?,
            timeout: field("timeout", &self.timeout)?,
            dead_letter_after: field("dead-letter after", &self.dead_letter_after)?,
            delivery_delay: field("delivery delay", &self.delivery_delay)?,
            channel_consumption_limit: None,
        })
    }
}

async fn create_queue(State(app): State<AppState>, headers: HeaderMap, Form(form): Form<QueueForm>) -> Response {
    let Some(session) = app.console.sessions.of_form(&headers, &form.csrf) else { return to_login() };
    let created = async {
        let mut spec = spec_with_defaults(form.name.trim().to_owned(), session.tenancy_id.clone(), form.values()?)?;
        if form.consumer_groups.is_some() {
            spec.capabilities.push(CONSUMER_GROUPS.into());
        }
        let work = app.engine.create_queue(&session.tenancy_id, spec, None).await?;
        Ok::<_, QueueError>(work.resources.first().map(|r| r.identifier.clone()).unwrap_or_default())
    };
    match created.await {
        Ok(id) => {
            after(&app, &headers, &format!("/console/queues/{id}"), Ok(format!("Created queue {}", form.name.trim())))
        }
        Err(e) => after(&app, &headers, "/console", Err(e)),
    }
}

async fn update_settings(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<QueueForm>,
) -> Response {
    let Some(session) = app.console.sessions.of_form(&headers, &form.csrf) else { return to_login() };
    let updated = async {
        let values = form.values()?;
        let change = QueueChange {
            display_name: Some(form.name.trim().to_owned()).filter(|n| !n.is_empty()),
            visibility_secs: values.visibility,
            timeout_secs: values.timeout,
            dead_letter_after: values.dead_letter_after,
            delivery_delay_secs: values.delivery_delay,
            ..QueueChange::default()
        };
        app.engine.update_queue(&session.tenancy_id, &id, None, change).await?;
        Ok("Settings saved".to_owned())
    };
    after(&app, &headers, &format!("/console/queues/{id}"), updated.await)
}

#[derive(Deserialize)]
struct MessageForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    delay: String,
}

async fn send_message(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<MessageForm>,
) -> Response {
    let Some(session) = app.console.sessions.of_form(&headers, &form.csrf) else { return to_login() };
    let sent = async {
        let delay = field("delay", &form.delay)?
            .map(|d| u32::try_from(d).map_err(|_| QueueError::InvalidParameter("delay is out of range".into())))
            .transpose()?;
        let message = NewMessage {
            content: form.content,
            channel: form.channel.trim().to_owned(),
            properties: None,
            delay_secs: delay,
        };
        let put = app.engine.put_messages(&session.tenancy_id, &id, vec![message]).await?;
        Ok(format!("Sent message {}", put.first().map_or(0, |p| p.id)))
    };
    after(&app, &headers, &format!("/console/queues/{id}"), sent.await)
}

#[derive(Deserialize)]
struct GroupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    filter: String,
}

async fn create_group(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<GroupForm>,
) -> Response {
    let Some(session) = app.console.sessions.of_form(&headers, &form.csrf) else { return to_login() };
    let name = form.name.trim().to_owned();
    let details = ConsumerGroupDetails {
        display_name: Some(name.clone()),
        filter: Some(form.filter.trim().to_owned()),
        ..ConsumerGroupDetails::default()
    };
    let created = app.engine.create_consumer_group(&session.tenancy_id, &id, details, None).await;
    after(&app, &headers, &format!("/console/queues/{id}"), created.map(|_| format!("Created consumer group {name}")))
}

#[derive(Deserialize)]
struct PurgeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    target: String,
    /// The consumer group shown (empty: the primary one).
    #[serde(default)]
    group: String,
}

/// The consumer group a form names (`""`: none, the primary one).
fn chosen(group: &str) -> Option<&str> {
    Some(group).filter(|g| !g.is_empty())
}

/// A queue's page, showing this consumer group's messages (`""`: the primary group's).
fn queue_path(id: &str, group: &str) -> String {
    match group {
        "" => format!("/console/queues/{id}"),
        // An OCID's characters only: they need no escaping in a query.
        group => {
            let ocid: String =
                group.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')).collect();
            format!("/console/queues/{id}?group={ocid}")
        }
    }
}

async fn purge(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<PurgeForm>,
) -> Response {
    let Some(session) = app.console.sessions.of_form(&headers, &form.csrf) else { return to_login() };
    let purged = async {
        let target = match form.target.as_str() {
            "NORMAL" => PurgeTarget::Normal,
            "DLQ" => PurgeTarget::DeadLetter,
            "BOTH" => PurgeTarget::Both,
            other => return Err(QueueError::InvalidParameter(format!("no purge type {other:?}"))),
        };
        app.engine.purge_queue(&session.tenancy_id, &id, None, target, None, chosen(&form.group)).await?;
        Ok(format!("Purged ({})", form.target))
    };
    after(&app, &headers, &queue_path(&id, &form.group), purged.await)
}

#[derive(Deserialize)]
struct RedriveForm {
    #[serde(default)]
    csrf: String,
    /// The consumer group shown (empty: the primary one).
    #[serde(default)]
    group: String,
}

async fn redrive(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RedriveForm>,
) -> Response {
    let Some(session) = app.console.sessions.of_form(&headers, &form.csrf) else { return to_login() };
    let target = Target { queue_id: &id, consumer_group_id: chosen(&form.group) };
    let moved = app.engine.redrive(&session.tenancy_id, target, None).await;
    let outcome = moved.map(|n| format!("Moved {n} {} back from the DLQ", if n == 1 { "message" } else { "messages" }));
    after(&app, &headers, &queue_path(&id, &form.group), outcome)
}

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    csrf: String,
    confirm: Option<String>,
}

async fn delete_queue(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<DeleteForm>,
) -> Response {
    let Some(session) = app.console.sessions.of_form(&headers, &form.csrf) else { return to_login() };
    if form.confirm.is_none() {
        let refused = Err(QueueError::InvalidParameter("tick the box to confirm the deletion".into()));
        return after(&app, &headers, &format!("/console/queues/{id}"), refused);
    }
    match app.engine.delete_queue(&session.tenancy_id, &id, None).await {
        Ok(_) => after(&app, &headers, "/console", Ok(format!("Deleted queue {id}"))),
        Err(e) => after(&app, &headers, &format!("/console/queues/{id}"), Err(e)),
    }
}

/// Who the page is for, for its frame.
fn who(session: &Session) -> Option<(&str, &str)> {
    Some((session.login.as_str(), session.csrf.as_str()))
}

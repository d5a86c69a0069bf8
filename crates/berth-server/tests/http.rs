//! The HTTP edge without a socket: error shapes, request ids and signature checks,
//! through `router().oneshot()`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use berth_core::model::User;
use berth_core::store::Store;
use berth_core::{Clock, Engine, SystemClock};
use berth_server::app::AppState;
use berth_server::auth::{Authenticator, Principal};
use berth_server::rest::router;
use berth_store::SqliteStore;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs1v15::SigningKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const TENANCY: &str = "ocid1.tenancy.oc1..test";
const USER: &str = "ocid1.user.oc1..test";
const FINGERPRINT: &str = "aa:bb";

struct Rig {
    app: axum::Router,
    key: rsa::RsaPrivateKey,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn rig(insecure: bool) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let user = User {
        id: USER.into(),
        tenancy_id: TENANCY.into(),
        name: "u".into(),
        fingerprint: FINGERPRINT.into(),
        public_key_der: key.to_public_key().to_pkcs1_der().unwrap().as_bytes().to_vec(),
        stomp_passcode_sha256: String::new(),
    };
    store.insert_user(&user).await.unwrap();
    let engine = Engine::new(store.clone(), clock.clone(), "iad".into(), CancellationToken::new()).await.unwrap();
    let auth = if insecure {
        let principal = Principal { tenancy_id: TENANCY.into(), user_id: USER.into() };
        Authenticator::insecure(store.clone(), clock, principal)
    } else {
        Authenticator::new(store.clone(), clock)
    };
    let metrics = Arc::new(berth_server::metrics::Metrics::default());
    let state = AppState {
        engine: Arc::new(engine),
        auth: Arc::new(auth),
        public_url: "http://test".into(),
        metrics,
        metrics_on_http: true,
        console: Arc::new(berth_server::console::Console::new(false, Default::default())),
        console_on: false,
    };
    Rig { app: router(state), key, store, _dir: dir }
}

/// A request signed as the OCI SDK signs it, with `date` and `body_digest_of` adjustable
/// to build forged variants.
fn signed(
    key: &rsa::RsaPrivateKey,
    method: &str,
    target: &str,
    body: &str,
    date: &str,
    body_digest_of: &str,
) -> Request<Body> {
    let host = "127.0.0.1:8080";
    let digest = STANDARD.encode(ring::digest::digest(&ring::digest::SHA256, body_digest_of.as_bytes()));
    let with_body = method == "POST" || method == "PUT";
    let mut lines = vec![
        format!("date: {date}"),
        format!("(request-target): {} {target}", method.to_lowercase()),
        format!("host: {host}"),
    ];
    let mut names = "date (request-target) host".to_string();
    if with_body {
        lines.push(format!("content-length: {}", body.len()));
        lines.push("content-type: application/json".into());
        lines.push(format!("x-content-sha256: {digest}"));
        names.push_str(" content-length content-type x-content-sha256");
    }
    let signature = SigningKey::<Sha256>::new(key.clone()).sign(lines.join("\n").as_bytes());
    let authorization = format!(
        r#"Signature algorithm="rsa-sha256",headers="{names}",keyId="{TENANCY}/{USER}/{FINGERPRINT}",signature="{}",version="1""#,
        STANDARD.encode(signature.to_bytes())
    );
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .header("host", host)
        .header("date", date)
        .header("authorization", authorization)
        .header("content-type", "application/json");
    if with_body {
        builder = builder.header("content-length", body.len()).header("x-content-sha256", digest);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

fn now_http() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}

async fn call(app: &axum::Router, request: Request<Body>) -> (StatusCode, Option<String>, serde_json::Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let request_id = response.headers().get("opc-request-id").map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, request_id, body)
}

fn plain(method: &str, uri: &str, body: &str) -> Request<Body> {
    Request::builder().method(method).uri(uri).body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn correctly_signed_request_is_served() {
    let r = rig(false).await;
    let date = now_http();
    let (status, _, body) = call(&r.app, signed(&r.key, "GET", "/20210201/queues?limit=5", "", &date, "")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"], serde_json::json!([]));
}

#[tokio::test]
async fn signed_create_with_matching_digest_is_accepted() {
    let r = rig(false).await;
    let body = format!(r#"{{"displayName":"q","compartmentId":"{TENANCY}"}}"#);
    let (status, _, _) = call(&r.app, signed(&r.key, "POST", "/20210201/queues", &body, &now_http(), &body)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn unsigned_forged_stale_and_tampered_requests_get_401_in_oci_shape() {
    let r = rig(false).await;
    let body = format!(r#"{{"displayName":"q","compartmentId":"{TENANCY}"}}"#);
    let stale = httpdate::fmt_http_date(std::time::SystemTime::now() - std::time::Duration::from_secs(600));
    let other_key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let cases = [
        ("unsigned", plain("GET", "/20210201/queues", "")),
        ("stale date", signed(&r.key, "GET", "/20210201/queues", "", &stale, "")),
        ("wrong key", signed(&other_key, "GET", "/20210201/queues", "", &now_http(), "")),
        ("tampered body", signed(&r.key, "POST", "/20210201/queues", &body, &now_http(), "{}")),
        ("stale signed date with a fresh unsigned x-date", {
            let mut replay = signed(&r.key, "GET", "/20210201/queues", "", &stale, "");
            replay.headers_mut().insert("x-date", now_http().parse().unwrap());
            replay
        }),
    ];
    for (case, request) in cases {
        let (status, request_id, body) = call(&r.app, request).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(body["code"], "NotAuthenticated", "{case}");
        assert!(request_id.is_some(), "{case}: opc-request-id missing");
    }
}

#[tokio::test]
async fn signature_over_another_path_does_not_verify() {
    let r = rig(false).await;
    let mut request = signed(&r.key, "GET", "/20210201/queues?limit=5", "", &now_http(), "");
    *request.uri_mut() = "/20210201/queues?limit=6".parse().unwrap();
    assert_eq!(call(&r.app, request).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_bodies_get_the_matching_oci_error_code() {
    let r = rig(true).await;
    let cases = [
        ("{not json", StatusCode::BAD_REQUEST, "CannotParseRequest"),
        (r#"{"compartmentId":"c"}"#, StatusCode::BAD_REQUEST, "MissingParameter"),
        (
            r#"{"displayName":"q","compartmentId":"c","retentionInSeconds":"long"}"#,
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
        (
            r#"{"displayName":"q","compartmentId":"c","retentionInSeconds":5}"#,
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
        ),
    ];
    for (body, status, code) in cases {
        let (got, request_id, json) = call(&r.app, plain("POST", "/20210201/queues", body)).await;
        assert_eq!((got, json["code"].as_str().unwrap()), (status, code), "{body}: {json}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(request_id.is_some());
    }
}

#[tokio::test]
async fn unknown_paths_queues_and_methods_are_refused_in_oci_shape() {
    let r = rig(true).await;
    let (status, _, body) = call(&r.app, plain("GET", "/20210201/nothing", "")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")));
    let (status, _, body) = call(&r.app, plain("GET", "/20210201/queues/ocid1.queue.oc1.iad.nope", "")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("NotAuthorizedOrNotFound")));
    let (status, _, body) = call(&r.app, plain("PATCH", "/20210201/queues", "")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("MethodNotAllowed")));
    let (status, _, body) = call(&r.app, plain("GET", "/20210201/queues/q/messages?limit=lots", "")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("InvalidParameter")));
}

#[tokio::test]
async fn client_request_id_is_echoed_and_health_needs_no_auth() {
    let r = rig(false).await;
    let request = Request::builder().uri("/health").header("opc-request-id", "ABC123").body(Body::empty()).unwrap();
    let response = r.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["opc-request-id"], "ABC123");
}

#[tokio::test]
async fn health_answers_503_in_oci_shape_when_the_store_cannot_write() {
    let r = rig(false).await;
    let (status, _, _) = call(&r.app, plain("GET", "/health", "")).await;
    assert_eq!(status, StatusCode::OK);
    r.store.close().await.unwrap();
    let (status, request_id, body) = call(&r.app, plain("GET", "/health", "")).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("ServiceUnavailable")));
    assert!(request_id.is_some());
}

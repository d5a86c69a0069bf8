//! Authentication: turns a signed request into a [`Principal`], or refuses it with 401.
//! Handlers take the `Principal` from the request extensions, so none can run without one.

pub mod signature;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use berth_core::error::{QueueError, StoreError};
use berth_core::model::User;
use berth_core::store::Store;
use berth_core::Clock;
use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

use crate::app::AppState;
use crate::rest::error::ApiError;
use signature::SignatureError;

/// Largest request body read (a full PutMessages with JSON escaping fits several times).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Largest accepted difference between the `date` header and the server clock.
const MAX_SKEW_MS: i64 = 5 * 60 * 1000;
/// Cached keys; the cache is cleared when it grows past this.
const MAX_CACHED_KEYS: usize = 10_000;

/// Who is calling: the tenancy scopes everything the request can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Tenancy OCID.
    pub tenancy_id: String,
    /// User OCID.
    pub user_id: String,
}

/// Verifies requests against the users' registered keys.
pub struct Authenticator {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// `Some` when verification is off: every request acts as this principal.
    insecure_principal: Option<Principal>,
    // Keys never change once registered, so a found key can be kept; a miss goes to the
    // store each time, which is how keys added by another process are picked up.
    keys: Mutex<HashMap<String, Arc<User>>>,
}

impl Authenticator {
    /// Verifies signatures against the store's users.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Authenticator { store, clock, insecure_principal: None, keys: Mutex::default() }
    }

    /// Accepts every request as `principal` (`--insecure-no-auth`).
    pub fn insecure(store: Arc<dyn Store>, clock: Arc<dyn Clock>, principal: Principal) -> Self {
        Authenticator { insecure_principal: Some(principal), ..Authenticator::new(store, clock) }
    }

    /// The user a STOMP login names (tenancy and user by name), if `passcode` is theirs.
    /// STOMP logins are checked even with `--insecure-no-auth`.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn stomp_user(&self, tenancy: &str, user: &str, passcode: &str) -> Result<Option<User>, StoreError> {
        let Some(user) = self.store.user_by_name(tenancy, user).await? else { return Ok(None) };
        Ok((crate::credentials::passcode_sha256(passcode) == user.stomp_passcode_sha256).then_some(user))
    }

    async fn user(&self, tenancy_id: &str, user_id: &str, fingerprint: &str) -> Result<Arc<User>, ApiError> {
        let key_id = format!("{tenancy_id}/{user_id}/{fingerprint}");
        if let Some(user) = self.keys.lock().unwrap_or_else(|e| e.into_inner()).get(&key_id) {
            return Ok(user.clone());
        }
        let user = self
            .store
            .user_by_key(tenancy_id, user_id, fingerprint)
            .await
            .map_err(|e| ApiError::Queue(QueueError::Store(e)))?
            .ok_or(ApiError::NotAuthenticated)?;
        let user = Arc::new(user);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(key_id, user.clone());
        Ok(user)
    }

    /// Checks a request's signature, date and body digest.
    async fn verify(&self, parts: &Parts, body: &Bytes) -> Result<Principal, ApiError> {
        if let Some(principal) = &self.insecure_principal {
            return Ok(principal.clone());
        }
        let refuse = |reason: SignatureError| {
            tracing::debug!(%reason, method = %parts.method, path = %parts.uri.path(), "authentication refused");
            ApiError::NotAuthenticated
        };
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let authorization = header("authorization").ok_or(SignatureError::Missing).map_err(refuse)?;
        let signed = signature::parse(authorization).map_err(refuse)?;

        let method = parts.method.as_str();
        let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let request_target = format!("{} {}", method.to_ascii_lowercase(), path_and_query);
        let signing_string =
            signature::signing_string(&signed.headers, method, &request_target, header).map_err(refuse)?;

        // Only a signed date counts: an unsigned x-date must not refresh a replayed request.
        let date_header = if signed.headers.iter().any(|h| h == "x-date") { "x-date" } else { "date" };
        let date = header(date_header).ok_or(SignatureError::Unsigned(date_header.into())).map_err(refuse)?;
        let sent = httpdate::parse_http_date(date).map_err(|_| refuse(SignatureError::Malformed("bad date")))?;
        let sent_ms = sent.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        if (self.clock.now().0 - sent_ms).abs() > MAX_SKEW_MS {
            return Err(refuse(SignatureError::Skew));
        }
        if signed.headers.iter().any(|h| h == "x-content-sha256") {
            let digest = ring::digest::digest(&ring::digest::SHA256, body);
            if header("x-content-sha256") != Some(STANDARD.encode(digest.as_ref()).as_str()) {
                return Err(refuse(SignatureError::BodyMismatch));
            }
        }
        if signed.headers.iter().any(|h| h == "content-length")
            && header("content-length").and_then(|v| v.parse::<usize>().ok()) != Some(body.len())
        {
            return Err(refuse(SignatureError::BodyMismatch));
        }

        let user = match self.user(&signed.tenancy_id, &signed.user_id, &signed.fingerprint).await {
            Err(ApiError::NotAuthenticated) => return Err(refuse(SignatureError::UnknownKey)),
            other => other?,
        };
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &user.public_key_der)
            .verify(signing_string.as_bytes(), &signed.signature)
            .map_err(|_| refuse(SignatureError::BadSignature))?;
        Ok(Principal { tenancy_id: user.tenancy_id.clone(), user_id: user.id.clone() })
    }
}

/// Middleware: reads the body (bounded), verifies the request, attaches the [`Principal`].
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => return crate::rest::extract::body_error(&e).into_response(),
    };
    match state.auth.verify(&parts, &bytes).await {
        Ok(principal) => {
            let mut request = Request::from_parts(parts, Body::from(bytes));
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

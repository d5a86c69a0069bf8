//! Console sessions: a random token in an HttpOnly, SameSite=Strict cookie names a session
//! held in memory (a restart logs everyone out), with the user's tenancy, a CSRF token every
//! form must carry, and one message to show on the next page.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "berth_console";
/// The login form's CSRF cookie (before there is a session).
pub(crate) const LOGIN_COOKIE: &str = "berth_console_login";
/// How long a session lasts from its login.
const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Most sessions held; the oldest go first.
const MOST: usize = 10_000;

/// Who is logged in.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) tenancy_id: String,
    /// `tenancy/user`, as logged in.
    pub(crate) login: String,
    pub(crate) csrf: String,
    /// Shown once on the next page: (is it an error, the text).
    pub(crate) flash: Option<(bool, String)>,
    started: Instant,
}

#[derive(Default)]
pub(crate) struct Sessions {
    // std Mutex: held only to look up or change an entry, never across an await.
    by_token: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes, hex.
pub(crate) fn token() -> String {
    rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// A new session; its token (for the cookie).
    pub(crate) fn start(&self, tenancy_id: String, login: String) -> String {
        let mut sessions = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.started.elapsed() < LIFETIME);
        if sessions.len() >= MOST {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.started).map(|(t, _)| t.clone()) {
                sessions.remove(&oldest);
            }
        }
        let key = token();
        let session = Session { tenancy_id, login, csrf: token(), flash: None, started: Instant::now() };
        sessions.insert(key.clone(), session);
        key
    }

    /// The request's session, if its cookie names a live one; its flash is taken (a page
    /// shows it).
    pub(crate) fn of(&self, headers: &HeaderMap) -> Option<Session> {
        self.lookup(headers, true)
    }

    /// The request's session, its flash left for the next page (a background fetch).
    pub(crate) fn peek(&self, headers: &HeaderMap) -> Option<Session> {
        self.lookup(headers, false)
    }

    fn lookup(&self, headers: &HeaderMap, take_flash: bool) -> Option<Session> {
        let token = cookie(headers, COOKIE)?;
        let mut sessions = self.by_token.lock().unwrap_or_else(|e| e.into_inner());
        let session = sessions.get_mut(&token)?;
        if session.started.elapsed() >= LIFETIME {
            sessions.remove(&token);
            return None;
        }
        let seen = session.clone();
        if take_flash {
            session.flash = None;
        }
        Some(seen)
    }

    /// The session of a form post, if its CSRF token matches.
    pub(crate) fn of_form(&self, headers: &HeaderMap, csrf: &str) -> Option<Session> {
        let session = self.of(headers)?;
        same_token(&session.csrf, csrf).then_some(session)
    }

    /// Leaves a message for the session's next page.
    pub(crate) fn flash(&self, headers: &HeaderMap, error: bool, text: String) {
        let Some(token) = cookie(headers, COOKIE) else { return };
        if let Some(session) = self.by_token.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&token) {
            session.flash = Some((error, text));
        }
    }

    pub(crate) fn end(&self, headers: &HeaderMap) {
        if let Some(token) = cookie(headers, COOKIE) {
            self.by_token.lock().unwrap_or_else(|e| e.into_inner()).remove(&token);
        }
    }
}

/// Whether a login post carries the token its form was given (in the login cookie).
pub(crate) fn login_token_matches(headers: &HeaderMap, form_token: &str) -> bool {
    cookie(headers, LOGIN_COOKIE).is_some_and(|token| same_token(&token, form_token))
}

/// Compares secrets in time independent of where they differ.
fn same_token(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0, |d, (x, y)| d | (x ^ y)) == 0
}

/// The value of the request's cookie `name`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_session_needs_its_cookie_and_a_form_its_csrf_token() {
        let sessions = Sessions::default();
        let token = sessions.start("t".into(), "t/u".into());
        let headers = with_cookie(&format!("other=1; {COOKIE}={token}"));
        let session = sessions.of(&headers).expect("logged in");
        assert!(sessions.of_form(&headers, &session.csrf).is_some());
        assert!(sessions.of_form(&headers, "forged").is_none());
        assert!(sessions.of(&with_cookie(&format!("{COOKIE}=guess"))).is_none());
        sessions.flash(&headers, true, "bad".into());
        assert_eq!(sessions.peek(&headers).unwrap().flash, Some((true, "bad".into())), "a peek leaves it");
        assert_eq!(sessions.of(&headers).unwrap().flash, Some((true, "bad".into())));
        assert_eq!(sessions.of(&headers).unwrap().flash, None, "shown once");
        sessions.end(&headers);
        assert!(sessions.of(&headers).is_none());
    }

    #[test]
    fn a_login_post_needs_the_token_of_its_form() {
        let with_login_cookie = with_cookie(&format!("{LOGIN_COOKIE}=abc123"));
        assert!(login_token_matches(&with_login_cookie, "abc123"));
        assert!(!login_token_matches(&with_login_cookie, "abc124"));
        assert!(!login_token_matches(&with_login_cookie, ""));
        assert!(!login_token_matches(&HeaderMap::new(), ""), "no cookie: a cross-site post");
    }
}

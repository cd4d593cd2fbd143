//! Who may read the serving layer, and how long a request may take.
//!
//! With a token (`serve.token`), every route but `/healthz` and the login page asks for it:
//! as `Authorization: Bearer <token>` (scripts, Prometheus' `authorization` setting), or as
//! the session cookie the login page sets (the dashboard in a browser: HttpOnly, so the page's
//! scripts never see it; SameSite=Strict, so no other site's page sends it). Without a token
//! everything is open, for a dashboard on loopback.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::AppState;

/// The login page's path.
pub const LOGIN: &str = "/login";

/// The session cookie's name.
const COOKIE: &str = "brewline_session";

/// How long a login lasts, in seconds.
const SESSION_SECONDS: u64 = 12 * 3600;

/// Routes that answer without a token: health checks and the way in.
const OPEN: [&str; 2] = ["/healthz", LOGIN];

/// The route that streams for as long as the dashboard is open: no request timeout.
const STREAM: &str = "/api/live";

/// What the serving layer asks of a request.
#[derive(Clone, Default)]
pub struct Access {
    /// The token, if one is needed; with it, the session cookie's value.
    token: Option<Arc<(String, String)>>,
    /// The longest a request (but the live stream) may take; `None`: no limit.
    timeout: Option<Duration>,
    /// Whether the session cookie is sent over TLS only (`Secure`).
    secure_cookie: bool,
}

impl Access {
    /// Asks for `token` (none: open) and answers 503 past `timeout`.
    pub fn new(token: Option<&str>, timeout: Option<Duration>, secure_cookie: bool) -> Access {
        Access {
            token: token
                .filter(|t| !t.is_empty())
                .map(|t| Arc::new((t.to_string(), session_of(t)))),
            timeout,
            secure_cookie,
        }
    }

    /// Whether a token is needed.
    pub fn closed(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `headers` carry the token or the session.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let (token, session) = token.as_ref();
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|given| same(given.trim().as_bytes(), token.as_bytes()));
        bearer || cookie(headers, COOKIE).is_some_and(|c| same(c.as_bytes(), session.as_bytes()))
    }

    /// Whether `given` is the token.
    fn is_token(&self, given: &str) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| same(given.as_bytes(), t.0.as_bytes()))
    }
}

/// The session cookie's value for `token`: a digest, so the cookie is not the token itself
/// (and is the same on every instance serving with the token).
fn session_of(token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"brewline session\0")
        .chain_update(token.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Lets a request through when it may read and answers it in time: a browser without a
/// session is sent to the login page, anyone else gets 401 saying how to authenticate, and
/// a request still unanswered after the timeout gets 503.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let access = &state.access;
    let path = request.uri().path();
    if !OPEN.contains(&path) && !access.admits(request.headers()) {
        if path == "/" {
            return Redirect::to(LOGIN).into_response();
        }
        let mut answer = (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({
                "error": "this server asks for a token: send `Authorization: Bearer <serve.token>`, or log in at /login"
            })),
        )
            .into_response();
        answer.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"brewline\""),
        );
        return answer;
    }
    match access.timeout.filter(|_| path != STREAM) {
        None => next.run(request).await,
        Some(limit) => match tokio::time::timeout(limit, next.run(request)).await {
            Ok(response) => response,
            Err(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({
                    "error": format!("no answer within {} ms (serve.request_timeout_ms); try again", limit.as_millis())
                })),
            )
                .into_response(),
        },
    }
}

/// The login page.
const LOGIN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>brewline: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;display:grid;place-items:center;min-height:90vh;background:#f6f1eb;color:#3b2a1e}
form{background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px #0002;display:grid;gap:.8rem;min-width:18rem}
input,button{font:inherit;padding:.5rem}p.error{color:#a00;margin:0}</style></head>
<body><form method="post" action="/login"><h1>brewline</h1>{message}
<label>Token <input id="token" name="token" type="password" autocomplete="current-password" autofocus required></label>
<button id="log-in" type="submit">Log in</button></form></body></html>
"#;

/// `GET /login`: the form.
pub async fn login_page() -> Html<String> {
    Html(LOGIN_PAGE.replace("{message}", ""))
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
}

/// `POST /login`: with the right token, sets the session cookie and goes to the dashboard;
/// else the form again, saying so.
pub async fn log_in(State(state): State<AppState>, Form(login): Form<Login>) -> Response {
    let access = &state.access;
    if !access.closed() {
        return Redirect::to("/").into_response();
    }
    if !access.is_token(&login.token) {
        tracing::warn!("a login with a wrong token");
        let page = LOGIN_PAGE.replace("{message}", r#"<p class="error">Wrong token.</p>"#);
        return (StatusCode::UNAUTHORIZED, Html(page)).into_response();
    }
    let session = access.token.as_ref().map_or("", |t| t.1.as_str());
    let secure = if access.secure_cookie { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECONDS}{secure}"
    );
    let mut answer = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        answer.headers_mut().insert(header::SET_COOKIE, value);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_token_or_its_session_is_asked_for_when_there_is_one() {
        let open = Access::new(None, None, false);
        assert!(open.admits(&HeaderMap::new()));
        assert!(
            Access::new(Some(""), None, false).admits(&HeaderMap::new()),
            "an empty token is none"
        );

        let closed = Access::new(Some("s3cret"), None, false);
        let session = session_of("s3cret");
        assert!(!closed.admits(&HeaderMap::new()));
        assert!(closed.admits(&headers(&[(header::AUTHORIZATION, "Bearer s3cret")])));
        assert!(!closed.admits(&headers(&[(header::AUTHORIZATION, "Bearer s3cre")])));
        assert!(!closed.admits(&headers(&[(header::AUTHORIZATION, "Basic s3cret")])));
        let with_cookie = format!("theme=dark; {COOKIE}={session}");
        assert!(closed.admits(&headers(&[(header::COOKIE, &with_cookie)])));
        assert!(
            !closed.admits(&headers(&[(header::COOKIE, "brewline_session=s3cret")])),
            "the cookie is not the token"
        );
        assert_ne!(session, session_of("other"));
        assert!(closed.is_token("s3cret") && !closed.is_token("s3cret "));
    }
}

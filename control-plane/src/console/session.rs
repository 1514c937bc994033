//! Who is looking at the console: sign-in and sign-out, the session cookie,
//! and the CSRF token every form carries.
//!
//! A console session is the same session the JSON API's
//! `POST /api/v1/auth/login` starts (an opaque token, only its hash
//! stored, idle and absolute expiry, revocable); the console keeps it in an
//! `HttpOnly`, `SameSite=Lax` cookie (`Secure` behind TLS). Every form
//! posts a CSRF token derived from the session's secret, which a page of
//! another origin can neither read nor compute.

use std::sync::Arc;

use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::Core;
use crate::identity::{Principal, sso, users};
use crate::store::Tenant;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "dibop_session";
/// The cookie that binds the sign-in form to the browser that loaded it.
const SIGN_IN_COOKIE: &str = "dibop_sign_in";
/// The state of a single sign-on under way, binding the provider's answer
/// to the browser that started it.
const SSO_COOKIE: &str = "dibop_sso";

/// A signed-in person looking at the console.
pub(crate) struct Visitor {
    /// Who they are to the domain services.
    pub principal: Principal,
    /// Their enterprise.
    pub tenant: Tenant,
    /// Their email.
    pub email: String,
    /// The token their forms must carry.
    pub csrf: String,
}

impl Visitor {
    /// The refusal of a form whose CSRF token is not this session's.
    pub fn forged(&self, token: &str) -> Option<Response> {
        if !token.is_empty() && constant_time_eq(token.as_bytes(), self.csrf.as_bytes()) {
            None
        } else {
            Some(super::pages::problem(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from this console. Reload the page and try again.",
            ))
        }
    }
}

/// The CSRF token of a session secret.
fn csrf_of(secret: &str) -> String {
    crate::support::ids::hash_secret(&format!("console-csrf\0{secret}"))[..32].to_owned()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie's value from the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser reached us over TLS (directly, or through a proxy
/// that says so).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value; `max_age` 0 deletes it.
fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age: i64) -> String {
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// Where to send someone who is not signed in, coming back to `path`.
fn to_sign_in(path: &str) -> Response {
    let next = if path == "/" || !path.starts_with('/') || path.starts_with("//") {
        String::new()
    } else {
        format!("?next={}", urlencoding(path))
    };
    Redirect::to(&format!("/sign-in{next}")).into_response()
}

/// Percent-encodes all but unreserved characters and `/` (a path stays
/// readable in the address bar).
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl FromRequestParts<Arc<Core>> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, core: &Arc<Core>) -> Result<Self, Response> {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let Some(secret) = cookie(&parts.headers, COOKIE).map(str::to_owned) else {
            return Err(to_sign_in(&path));
        };
        let (principal, tenant) = match crate::identity::tokens::authenticate(core, &secret).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!("console session refused: {e}");
                return Err(to_sign_in(&path));
            }
        };
        let Some(user_id) = principal.user_id.clone() else {
            // An API token pasted into the cookie is not a session.
            return Err(to_sign_in(&path));
        };
        let email = match core.store.user(&principal.tenant_id, &user_id).await {
            Ok(Some(u)) if u.disabled_at.is_none() => u.email,
            Ok(_) => return Err(to_sign_in(&path)),
            Err(e) => {
                tracing::error!("cannot load the signed-in user: {e}");
                return Err(super::pages::problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The console cannot reach its database right now. Try again in a moment.",
                ));
            }
        };
        Ok(Visitor {
            principal,
            tenant,
            email,
            csrf: csrf_of(&secret),
        })
    }
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct SignInQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    signed_out: Option<String>,
}

/// Only paths of this console are places to return to after signing in.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") {
        next
    } else {
        "/"
    }
}

/// `GET /sign-in`
pub(crate) async fn sign_in_page(
    headers: HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    let q: SignInQuery = super::pages::query(raw.as_deref());
    let notice = q.signed_out.map(|_| "You are signed out.".to_owned());
    render_sign_in(
        &headers,
        safe_next(&q.next),
        "",
        None,
        notice,
        StatusCode::OK,
    )
}

fn render_sign_in(
    headers: &HeaderMap,
    next: &str,
    email: &str,
    error: Option<String>,
    notice: Option<String>,
    status: StatusCode,
) -> Response {
    let binding = crate::support::ids::new_secret("");
    let page = super::pages::SignIn {
        css: super::assets::url("console.css"),
        next: next.to_owned(),
        email: email.to_owned(),
        error,
        notice,
        binding: binding.clone(),
    };
    let mut response = super::pages::html(status, &page);
    if let Ok(v) = set_cookie(headers, SIGN_IN_COOKIE, &binding, 3600).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Debug, Deserialize)]
pub(crate) struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    binding: String,
}

/// `POST /sign-in`
pub(crate) async fn sign_in(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let next = safe_next(&form.next).to_owned();
    let bound = cookie(&headers, SIGN_IN_COOKIE)
        .is_some_and(|c| !c.is_empty() && constant_time_eq(c.as_bytes(), form.binding.as_bytes()));
    if !bound {
        return render_sign_in(
            &headers,
            &next,
            &form.email,
            Some("The sign-in form expired. Enter your email and password again.".into()),
            None,
            StatusCode::FORBIDDEN,
        );
    }
    match users::sign_in(&core.store, &form.email, &form.password).await {
        Ok(Some((_, secret))) => {
            let mut response = Redirect::to(&next).into_response();
            let headers_out = response.headers_mut();
            for v in [
                set_cookie(&headers, COOKIE, &secret, users::SESSION_TTL_SECS),
                set_cookie(&headers, SIGN_IN_COOKIE, "", 0),
            ] {
                if let Ok(v) = v.parse() {
                    headers_out.append(header::SET_COOKIE, v);
                }
            }
            response
        }
        Ok(None) => render_sign_in(
            &headers,
            &next,
            &form.email,
            Some("The email or the password is wrong, or the user is disabled.".into()),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        Err(e) => {
            tracing::error!("sign-in failed: {e}");
            render_sign_in(
                &headers,
                &next,
                &form.email,
                Some("Signing in failed on our side. Try again in a moment.".into()),
                None,
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
    }
}

/// Where a provider sends people back: this console's callback, as the
/// browser reached it.
pub(crate) fn sso_callback(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("localhost");
    let scheme = if over_tls(headers) { "https" } else { "http" };
    format!("{scheme}://{host}/sign-in/sso/callback")
}

/// The sign-in page with what went wrong in single sign-on.
fn sso_refused(headers: &HeaderMap, next: &str, email: &str, e: &sso::SsoError) -> Response {
    use sso::SsoError;
    let status = match e {
        SsoError::BadEmail(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SsoError::NoProvider(_) => StatusCode::NOT_FOUND,
        SsoError::Provider(_) => StatusCode::BAD_GATEWAY,
        SsoError::Refused(_)
        | SsoError::NotInvited(_)
        | SsoError::Disabled(_)
        | SsoError::WrongDomain(_)
        | SsoError::Expired => StatusCode::FORBIDDEN,
        SsoError::Store(_) | SsoError::Internal(_) => {
            tracing::error!("single sign-on failed: {e}");
            return render_sign_in(
                headers,
                next,
                email,
                Some("Signing in failed on our side. Try again in a moment.".into()),
                None,
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
    };
    let mut message = e.to_string();
    if let Some(first) = message.get(..1) {
        message = first.to_uppercase() + &message[1..];
    }
    render_sign_in(
        headers,
        next,
        email,
        Some(format!("{message}.")),
        None,
        status,
    )
}

#[derive(askama::Template)]
#[template(path = "console/sso_redirect.html")]
struct SsoRedirect {
    css: String,
    url: String,
    provider: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SsoForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    next: String,
}

/// `POST /sign-in/sso`: sends the browser to the provider of the email's
/// domain.
pub(crate) async fn sso_start(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Form(form): Form<SsoForm>,
) -> Response {
    let next = safe_next(&form.next).to_owned();
    match sso::begin(&core, &form.email, &next, &sso_callback(&headers)).await {
        Ok(started) => {
            // A page that moves on by itself rather than a redirect: the
            // console's `form-action 'self'` also holds for a form's redirects.
            let provider = reqwest::Url::parse(&started.authorize_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            let page = SsoRedirect {
                css: super::assets::url("console.css"),
                url: started.authorize_url.clone(),
                provider,
            };
            let mut response = super::pages::html(StatusCode::OK, &page);
            let cookie = set_cookie(&headers, SSO_COOKIE, &started.state, sso::LOGIN_TTL_SECS);
            if let Ok(v) = cookie.parse() {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            response
        }
        Err(e) => sso_refused(&headers, &next, form.email.trim(), &e),
    }
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct CallbackQuery {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET /sign-in/sso/callback`: the provider's answer; signs the person in.
pub(crate) async fn sso_callback_page(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    let q: CallbackQuery = super::pages::query(raw.as_deref());
    let bound = cookie(&headers, SSO_COOKIE)
        .is_some_and(|c| !c.is_empty() && constant_time_eq(c.as_bytes(), q.state.as_bytes()));
    let result = if let Some(error) = q.error {
        let detail = q.error_description.unwrap_or(error);
        Err(sso::SsoError::Refused(detail))
    } else if !bound || q.code.is_empty() {
        Err(sso::SsoError::Expired)
    } else {
        sso::finish(&core, &q.state, &q.code, &sso_callback(&headers)).await
    };
    let mut response = match result {
        Ok((_, secret, next)) => {
            let mut response = Redirect::to(safe_next(&next)).into_response();
            let cookie = set_cookie(&headers, COOKIE, &secret, users::SESSION_TTL_SECS);
            if let Ok(v) = cookie.parse() {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            response
        }
        Err(e) => sso_refused(&headers, "/", "", &e),
    };
    if let Ok(v) = set_cookie(&headers, SSO_COOKIE, "", 0).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// `POST /sign-out`: ends the session (its token stops working everywhere).
pub(crate) async fn sign_out(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    v: Visitor,
    Form(form): Form<super::form::CsrfForm>,
) -> Response {
    if let Some(refused) = v.forged(&form.csrf) {
        return refused;
    }
    if let Err(e) = users::sign_out(&core, &v.principal).await {
        tracing::error!("sign-out failed: {e}");
        return super::pages::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Signing out failed on our side. Try again in a moment.",
        );
    }
    let mut response = Redirect::to("/sign-in?signed_out=1").into_response();
    if let Ok(cookie) = set_cookie(&headers, COOKIE, "", 0).parse() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(safe_next("/connections?x=1"), "/connections?x=1");
        for hostile in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "",
        ] {
            assert_eq!(safe_next(hostile), "/");
        }
    }

    #[test]
    fn cookies_are_read_from_every_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; dibop_session=s3cret".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE), Some("s3cret"));
        assert_eq!(cookie(&h, "b"), None);
    }
}

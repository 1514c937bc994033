//! The web console for admins, served by the control plane at `/` beside
//! the JSON API: server-rendered pages (askama templates, checked at
//! compile time), a stylesheet and a small script of our own compiled into
//! the binary, no front-end build step and nothing from a CDN.
//!
//! Like the JSON API it sits on top of the contexts: pages read and change
//! the platform through the same domain services (sign-in, enrollment,
//! agent state, the catalogue's visibility rules) and never through the
//! API's handlers. Every response carries a strict Content-Security-Policy
//! (no inline script or style, no framing); every form carries a CSRF token.

mod access;
mod assets;
mod connect;
mod form;
mod pages;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::Core;

/// The console's Content-Security-Policy: our own script and stylesheet
/// only, forms post only to us, no page may frame the console.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes (merged into the control plane's router).
pub fn routes() -> Router<Arc<Core>> {
    Router::new()
        .route("/", get(pages::dashboard))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-in/sso", post(session::sso_start))
        .route("/sign-in/sso/callback", get(session::sso_callback_page))
        .route("/sign-out", post(session::sign_out))
        .route("/integrations", get(pages::integrations))
        .route("/integrations/{id}", get(pages::integration))
        .route(
            "/integrations/{id}/connect",
            get(connect::connect_form).post(connect::connect),
        )
        .route("/connections", get(pages::connections))
        .route("/connections/{id}", get(connect::connection))
        .route("/connections/{id}/test", post(connect::test))
        .route("/connections/{id}/activate", post(connect::activate))
        .route("/connections/{id}/deactivate", post(connect::deactivate))
        .route("/connections/{id}/delete", post(connect::delete))
        .route("/connections/{id}/settings", post(connect::settings))
        .route("/connections/{id}/credentials", post(connect::rotate))
        .route("/relays", get(pages::relays))
        .route("/relays/enroll", post(pages::add_relay))
        .route("/relays/agents/{id}/revoke", post(pages::revoke_agent))
        .route("/settings/users", get(access::users).post(access::add_user))
        .route("/settings/users/{id}", post(access::change_user))
        .route("/settings/tokens", post(access::add_token))
        .route("/settings/sso", get(access::sso).post(access::save_sso))
        .route("/settings/sso/remove", post(access::remove_sso))
        .route("/settings/tokens/{id}/revoke", post(access::revoke_token))
        .route("/audit", get(pages::audit))
        .route("/assets/{file}", get(assets::serve))
        .layer(middleware::from_fn(security_headers))
}

/// The console's page for a path that leads nowhere.
pub fn not_found() -> Response {
    pages::problem(
        axum::http::StatusCode::NOT_FOUND,
        "There is no page at this address. It may have moved, or the link is mistyped.",
    )
}

/// Headers every console response carries.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

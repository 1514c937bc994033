//! SETTINGS > Users & tokens in the console: the tenant's users (add, change
//! role, disable and enable, `view_pii`) and API tokens (create, shown once;
//! revoke). Every rule is [`crate::identity::access`]'s, as in the JSON API.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::form::{CsrfForm, Fields};
use super::pages::{Chrome, Done, failed, html, problem, query, refused_admin_form};
use super::session::Visitor;
use crate::Core;
use crate::identity::IdentityError;
use crate::identity::access::{self, NewToken, UserChange};
use dibop_runtime::support::rfc3339;

struct UserLine {
    id: String,
    email: String,
    role: &'static str,
    created: String,
    disabled: bool,
    /// `default`, `allowed` or `withheld`.
    pii: &'static str,
    /// Whether the role sees personal data by default.
    pii_default: bool,
    /// The signed-in user (no controls that would lock them out).
    me: bool,
}

struct TokenLine {
    id: String,
    name: String,
    prefix: String,
    role: &'static str,
    created: String,
    last_used: String,
    expires: String,
    pii: bool,
}

/// A secret shown once: a new token, or a generated password.
struct ShownOnce {
    title: String,
    secret: String,
    note: String,
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct Users {
    chrome: Chrome,
    users: Vec<UserLine>,
    tokens: Vec<TokenLine>,
    roles: Vec<String>,
    shown: Option<ShownOnce>,
    /// The add-user form as typed, with its inline errors.
    user_form: HashMap<String, String>,
    token_form: HashMap<String, String>,
    errors: HashMap<String, String>,
    form_error: Option<String>,
}

impl Users {
    fn err(&self, field: &str) -> Option<&str> {
        self.errors.get(field).map(String::as_str)
    }

    fn typed_user(&self, field: &str) -> &str {
        self.user_form.get(field).map_or("", String::as_str)
    }

    fn typed_token(&self, field: &str) -> &str {
        self.token_form.get(field).map_or("", String::as_str)
    }
}

fn pii_state(own: Option<i64>) -> &'static str {
    match own {
        None => "default",
        Some(0) => "withheld",
        Some(_) => "allowed",
    }
}

async fn users_page(core: &Core, v: &Visitor, done: Option<&str>) -> Result<Users, Response> {
    let tenant = &v.principal.tenant_id;
    let users = core
        .store
        .list_users(tenant, None, 1000)
        .await
        .map_err(failed)?;
    let tokens = if v.principal.role.is_admin() {
        core.store
            .list_api_tokens(tenant, None, 1000)
            .await
            .map_err(failed)?
    } else {
        Vec::new()
    };
    Ok(Users {
        chrome: Chrome::new(v, "users", done),
        users: users
            .into_iter()
            .map(|u| UserLine {
                me: v.principal.user_id.as_deref() == Some(u.id.as_str()),
                pii: pii_state(u.view_pii),
                pii_default: u.role.sees_pii_by_default(),
                id: u.id,
                email: u.email,
                role: u.role.as_str(),
                created: rfc3339(u.created_at),
                disabled: u.disabled_at.is_some(),
            })
            .collect(),
        tokens: tokens
            .into_iter()
            .filter(|t| t.user_id.is_none() && t.revoked_at.is_none())
            .map(|t| TokenLine {
                pii: crate::cdm::pii::role_views(t.role, t.view_pii),
                id: t.id,
                name: t.name,
                prefix: t.prefix,
                role: t.role.as_str(),
                created: rfc3339(t.created_at),
                last_used: t.last_used_at.map_or_else(|| "never".into(), rfc3339),
                expires: t.expires_at.map_or_else(|| "never".into(), rfc3339),
            })
            .collect(),
        roles: access::assignable_roles(&v.principal)
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        shown: None,
        user_form: HashMap::new(),
        token_form: HashMap::new(),
        errors: HashMap::new(),
        form_error: None,
    })
}

/// `GET /settings/users`: the tenant's users and API tokens.
pub(crate) async fn users(
    State(core): State<Arc<Core>>,
    v: Visitor,
    RawQuery(raw): RawQuery,
) -> Response {
    let done: Done = query(raw.as_deref());
    match users_page(&core, &v, done.done.as_deref()).await {
        Ok(page) => html(StatusCode::OK, &page),
        Err(page) => page,
    }
}

/// The page again with a form's errors (each beside its field).
async fn refused(
    core: &Core,
    v: &Visitor,
    e: IdentityError,
    prefix: &str,
    typed: HashMap<String, String>,
) -> Response {
    let status = match &e {
        IdentityError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        IdentityError::Conflict { .. } => StatusCode::CONFLICT,
        IdentityError::NotFound { .. } => {
            return problem(StatusCode::NOT_FOUND, &format!("{e}."));
        }
        IdentityError::Forbidden(m) => return problem(StatusCode::FORBIDDEN, m),
        _ => return failed(e),
    };
    let mut page = match users_page(core, v, None).await {
        Ok(p) => p,
        Err(p) => return p,
    };
    if let IdentityError::Invalid { problems, .. } = &e {
        for p in problems {
            let field = p["field"].as_str().unwrap_or_default();
            let text = p["problem"].as_str().unwrap_or_default();
            page.errors
                .insert(format!("{prefix}{field}"), text.to_owned());
        }
        page.form_error = Some("Nothing was saved: fix the fields marked in red.".into());
    } else {
        page.form_error = Some(format!("Nothing was changed: {e}."));
    }
    if prefix == "user." {
        page.user_form = typed;
    } else {
        page.token_form = typed;
    }
    html(status, &page)
}

/// `POST /settings/users`: adds a user; a password left empty is generated
/// and shown once.
pub(crate) async fn add_user(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields::of(pairs);
    let csrf = f.get("csrf");
    if let Some(refused) = refused_admin_form(&v, &csrf, "Adding a user") {
        return refused;
    }
    // A password as typed: spaces in it are part of it.
    let typed_password = f.raw("password").unwrap_or_default().to_owned();
    let generated = typed_password.is_empty();
    let password = if generated {
        crate::support::ids::new_secret("")
    } else {
        typed_password
    };
    let (email, role) = (f.get("email"), f.get("role"));
    match access::create_user(&core, &v.principal, &email, &password, &role).await {
        Ok(user) => {
            let mut page = match users_page(&core, &v, Some("user_added")).await {
                Ok(p) => p,
                Err(p) => return p,
            };
            if generated {
                page.shown = Some(ShownOnce {
                    title: format!("Password of {}", user.email),
                    secret: password,
                    note: "Give it to them over a channel you trust; it is shown only now. They can sign in with it at once."
                        .into(),
                });
            }
            html(StatusCode::OK, &page)
        }
        Err(e) => refused(&core, &v, e, "user.", f.typed()).await,
    }
}

/// `POST /settings/users/{id}`: changes a user's role, state or `view_pii`
/// (`action` says which).
pub(crate) async fn change_user(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields::of(pairs);
    let csrf = f.get("csrf");
    if let Some(refused) = refused_admin_form(&v, &csrf, "Changing a user") {
        return refused;
    }
    let value = f.get("value");
    let change = match f.get("action").as_str() {
        "role" => UserChange {
            role: Some(value),
            ..UserChange::default()
        },
        "disable" => UserChange {
            disabled: Some(true),
            ..UserChange::default()
        },
        "enable" => UserChange {
            disabled: Some(false),
            ..UserChange::default()
        },
        "pii" => UserChange {
            view_pii: Some(match value.as_str() {
                "allowed" => Some(true),
                "withheld" => Some(false),
                _ => None,
            }),
            ..UserChange::default()
        },
        _ => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "This form asked for no change the console knows. Reload the page and try again.",
            );
        }
    };
    match access::update_user(&core, &v.principal, &id, change).await {
        Ok(_) => Redirect::to("/settings/users?done=user_changed").into_response(),
        Err(e) => refused(&core, &v, e, "user.", HashMap::new()).await,
    }
}

/// `POST /settings/tokens`: creates an API token, shown once.
pub(crate) async fn add_token(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields::of(pairs);
    let csrf = f.get("csrf");
    if let Some(refused) = refused_admin_form(&v, &csrf, "Creating an API token") {
        return refused;
    }
    let ttl_secs = match f.get("expires").as_str() {
        "30d" => Some(30 * 86_400),
        "90d" => Some(90 * 86_400),
        "365d" => Some(365 * 86_400),
        _ => None,
    };
    let new = NewToken {
        name: f.get("name"),
        role: f.get("role"),
        ttl_secs,
        view_pii: match f.get("pii").as_str() {
            "allowed" => Some(true),
            "withheld" => Some(false),
            _ => None,
        },
    };
    match access::create_token(&core, &v.principal, new).await {
        Ok((row, secret)) => {
            let mut page = match users_page(&core, &v, Some("token_created")).await {
                Ok(p) => p,
                Err(p) => return p,
            };
            page.shown = Some(ShownOnce {
                title: format!("API token {}", row.name),
                secret,
                note: "Copy it now into the system that will use it: it is shown only once and stored only as a hash. Send it in the Authorization header as a bearer token."
                    .into(),
            });
            html(StatusCode::OK, &page)
        }
        Err(e) => refused(&core, &v, e, "token.", f.typed()).await,
    }
}

/// `POST /settings/tokens/{id}/revoke`.
pub(crate) async fn revoke_token(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = refused_admin_form(&v, &form.csrf, "Revoking an API token") {
        return refused;
    }
    match access::revoke_token(&core, &v.principal, &id).await {
        Ok(_) | Err(IdentityError::Conflict { .. }) => {
            Redirect::to("/settings/users?done=token_revoked").into_response()
        }
        Err(e) => refused(&core, &v, e, "token.", HashMap::new()).await,
    }
}

// ---------------------------------------------------------- single sign-on

/// The single sign-on form as shown (from the settings, or as typed).
#[derive(Default)]
struct SsoForm {
    issuer: String,
    client_id: String,
    domains: String,
    default_role: String,
    enabled: bool,
}

#[derive(Template)]
#[template(path = "console/sso.html")]
struct SsoPage {
    chrome: Chrome,
    form: SsoForm,
    configured: bool,
    secret_set: bool,
    roles: Vec<String>,
    redirect_uri: String,
    errors: HashMap<String, String>,
    form_error: Option<String>,
}

impl SsoPage {
    fn err(&self, field: &str) -> Option<&str> {
        self.errors.get(field).map(String::as_str)
    }
}

async fn sso_page(
    core: &Core,
    v: &Visitor,
    headers: &axum::http::HeaderMap,
    done: Option<&str>,
) -> Result<SsoPage, Response> {
    let settings = match crate::identity::sso::settings_of(core, &v.principal).await {
        Ok(s) => s,
        Err(IdentityError::Forbidden(m)) => return Err(problem(StatusCode::FORBIDDEN, &m)),
        Err(e) => return Err(failed(e)),
    };
    Ok(SsoPage {
        chrome: Chrome::new(v, "sso", done),
        configured: settings.is_some(),
        secret_set: settings.as_ref().is_some_and(|s| s.client_secret_set),
        form: settings
            .map(|s| SsoForm {
                issuer: s.issuer,
                client_id: s.client_id,
                domains: s.domains.join(", "),
                default_role: s.default_role.unwrap_or_default(),
                enabled: s.enabled,
            })
            .unwrap_or(SsoForm {
                enabled: true,
                ..SsoForm::default()
            }),
        roles: access::assignable_roles(&v.principal)
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        redirect_uri: super::session::sso_callback(headers),
        errors: HashMap::new(),
        form_error: None,
    })
}

/// `GET /settings/sso`: the enterprise's identity provider.
pub(crate) async fn sso(
    State(core): State<Arc<Core>>,
    v: Visitor,
    headers: axum::http::HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let done: Done = query(raw.as_deref());
    match sso_page(&core, &v, &headers, done.done.as_deref()).await {
        Ok(page) => html(StatusCode::OK, &page),
        Err(page) => page,
    }
}

/// `POST /settings/sso`: saves the provider (checked against its discovery).
pub(crate) async fn save_sso(
    State(core): State<Arc<Core>>,
    v: Visitor,
    headers: axum::http::HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields::of(pairs);
    let csrf = f.get("csrf");
    if let Some(refused) = refused_admin_form(&v, &csrf, "Setting up single sign-on") {
        return refused;
    }
    let get = |k: &str| f.get(k);
    let anyone = get("first") == "anyone";
    let settings = crate::identity::sso::SsoSettings {
        issuer: get("issuer"),
        client_id: get("client_id"),
        client_secret: f
            .raw("client_secret")
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned),
        domains: get("domains")
            .split([',', ' ', ';', '\n'])
            .map(str::to_owned)
            .collect(),
        default_role: anyone.then(|| get("default_role")),
        enabled: f.checked("enabled"),
    };
    match crate::identity::sso::configure(&core, &v.principal, settings).await {
        Ok(_) => Redirect::to("/settings/sso?done=sso_saved").into_response(),
        Err(e) => {
            let status = match &e {
                IdentityError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                IdentityError::Forbidden(m) => return problem(StatusCode::FORBIDDEN, m),
                _ => return failed(e),
            };
            let mut page = match sso_page(&core, &v, &headers, None).await {
                Ok(p) => p,
                Err(p) => return p,
            };
            if let IdentityError::Invalid { problems, .. } = &e {
                for p in problems {
                    let field = p["field"].as_str().unwrap_or_default().to_owned();
                    let text = p["problem"].as_str().unwrap_or_default().to_owned();
                    page.errors.entry(field).or_insert(text);
                }
            }
            page.form = SsoForm {
                issuer: get("issuer"),
                client_id: get("client_id"),
                domains: get("domains"),
                default_role: if anyone {
                    get("default_role")
                } else {
                    String::new()
                },
                enabled: f.checked("enabled"),
            };
            page.form_error = Some("Nothing was saved: fix the fields marked in red.".into());
            html(status, &page)
        }
    }
}

/// `POST /settings/sso/remove`.
pub(crate) async fn remove_sso(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = refused_admin_form(&v, &form.csrf, "Removing single sign-on") {
        return refused;
    }
    match crate::identity::sso::remove(&core, &v.principal).await {
        Ok(()) | Err(IdentityError::NotFound { .. }) => {
            Redirect::to("/settings/sso?done=sso_removed").into_response()
        }
        Err(e) => failed(e),
    }
}

//! The console's pages: each reads through the domain services and the
//! store (as the JSON API does, with the same role and tenant rules) and
//! renders a template checked at compile time. Text is escaped by the
//! templates; nothing a user typed reaches a page unescaped.

use std::collections::BTreeSet;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::session::Visitor;
use crate::Core;
use crate::store::{CatalogueFilter, CatalogueRow};
use dibop_runtime::support::rfc3339;

/// Renders a template, or a plain error page when rendering fails.
pub(crate) fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("cannot render a console page: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be rendered.",
            )
                .into_response()
        }
    }
}

/// A page's query string, read leniently: what cannot be read is left at
/// its default (a filter form never fails a page).
pub(crate) fn query<T: DeserializeOwned + Default>(raw: Option<&str>) -> T {
    raw.and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
pub(crate) struct SignIn {
    pub css: String,
    pub next: String,
    pub email: String,
    pub error: Option<String>,
    pub notice: Option<String>,
    pub binding: String,
}

#[derive(Template)]
#[template(path = "console/problem.html")]
struct Problem {
    css: String,
    status: u16,
    message: String,
}

/// A page that says what went wrong and offers the way back.
pub(crate) fn problem(status: StatusCode, message: &str) -> Response {
    html(
        status,
        &Problem {
            css: super::assets::url("console.css"),
            status: status.as_u16(),
            message: message.to_owned(),
        },
    )
}

/// A page for a failure of ours (the detail goes to the log, not the page).
pub(crate) fn failed(e: impl std::fmt::Display) -> Response {
    tracing::error!("console page failed: {e}");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Something failed on our side while loading this page. Try again in a moment.",
    )
}

/// What every signed-in page shows around its content.
pub(crate) struct Chrome {
    pub(crate) css: String,
    pub(crate) js: String,
    pub(crate) email: String,
    pub(crate) initial: String,
    pub(crate) tenant: String,
    pub(crate) role: &'static str,
    pub(crate) csrf: String,
    pub(crate) nav: &'static str,
    pub(crate) platform: bool,
    pub(crate) admin: bool,
    /// May change things (no write controls for viewers).
    pub(crate) writes: bool,
    pub(crate) toast: Option<&'static str>,
}

impl Chrome {
    pub(crate) fn new(v: &Visitor, nav: &'static str, done: Option<&str>) -> Chrome {
        Chrome {
            css: super::assets::url("console.css"),
            js: super::assets::url("console.js"),
            initial: v
                .email
                .chars()
                .next()
                .unwrap_or('?')
                .to_uppercase()
                .collect(),
            email: v.email.clone(),
            tenant: v.tenant.name.clone(),
            role: v.principal.role.as_str(),
            csrf: v.csrf.clone(),
            nav,
            platform: v.principal.is_platform_admin(),
            admin: v.principal.role.is_admin(),
            writes: v.principal.role.writes(),
            toast: done.and_then(toast),
        }
    }
}

/// The success messages a redirect may ask for (by code, so that a link
/// cannot put words on the page).
fn toast(code: &str) -> Option<&'static str> {
    Some(match code {
        "relay_added" => "Enrollment token created: run the command at the dealer site.",
        "agent_revoked" => "Agent revoked: it can no longer connect.",
        "connection_activated" => "Connection active: it takes calls and its health is checked.",
        "connection_saved" => "Connection saved as inactive: activate it when you are ready.",
        "connection_deactivated" => "Connection deactivated: it takes no calls until reactivated.",
        "connection_deleted" => "Connection deleted with its credentials.",
        "settings_saved" => "Settings saved: they apply to the next call.",
        "credentials_rotated" => "Credentials replaced: the next call uses them.",
        "user_added" => "User added: they can sign in now.",
        "user_changed" => "User changed: it applies to their next request.",
        "token_created" => "API token created: copy it now, it is shown only once.",
        "token_revoked" => "API token revoked: calls with it are refused.",
        "sso_saved" => "Single sign-on saved: people of these domains can use it now.",
        "sso_removed" => "Single sign-on removed: people sign in with passwords again.",
        _ => return None,
    })
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct Done {
    pub(crate) done: Option<String>,
}

// ---------------------------------------------------------------- dashboard

struct Tile {
    label: &'static str,
    figure: String,
    href: &'static str,
    badges: Vec<(String, &'static str)>,
    meter: Option<u8>,
}

struct RecentExecution {
    id: String,
    orchestration: String,
    status: String,
    class: &'static str,
    at: String,
}

#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct Dashboard {
    chrome: Chrome,
    tiles: Vec<Tile>,
    recent: Vec<RecentExecution>,
}

/// A count with thousands separated: `1,234,567`.
fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The badge class of a status or health word.
pub(crate) fn tone(word: &str) -> &'static str {
    match word {
        "healthy" | "succeeded" | "active" | "online" | "published" => "ok",
        "degraded" | "partially_succeeded" | "queued" | "running" | "deprecated" | "inactive" => {
            "warn"
        }
        "offline" | "failed" | "revoked" | "cancelled" => "bad",
        _ => "",
    }
}

/// How long the dashboard's counts are reused: 16 admins refreshing it
/// share one count of the day's executions every few seconds.
const OVERVIEW_TTL: std::time::Duration = std::time::Duration::from_secs(5);

static OVERVIEWS: std::sync::LazyLock<crate::support::cache::TtlCache<crate::store::Overview>> =
    std::sync::LazyLock::new(|| crate::support::cache::TtlCache::new(OVERVIEW_TTL, 10_000));

/// A tenant's counts for the dashboard, at most [`OVERVIEW_TTL`] old.
async fn overview_of(
    core: &Core,
    tenant: &str,
    now: i64,
) -> Result<crate::store::Overview, crate::store::StoreError> {
    if let Some(o) = OVERVIEWS.get(tenant) {
        return Ok(o);
    }
    let o = core
        .store
        .overview(tenant, now - now % 86_400, now - 86_400)
        .await?;
    OVERVIEWS.insert(tenant.to_owned(), o.clone());
    Ok(o)
}

/// `GET /`: the home dashboard (platform admins go to their pages).
pub(crate) async fn dashboard(
    State(core): State<Arc<Core>>,
    v: Visitor,
    RawQuery(raw): RawQuery,
) -> Response {
    let done: Done = query(raw.as_deref());
    if v.principal.is_platform_admin() {
        return Redirect::to("/integrations").into_response();
    }
    let now = crate::store::now_unix();
    let tenant = &v.principal.tenant_id;
    let (period, _) = crate::quotas::period_now();
    // Independent reads, side by side.
    let (overview, groups, recent, used) = tokio::join!(
        overview_of(&core, tenant, now),
        core.store.list_groups(tenant, None, 200),
        core.store.list_executions(tenant, None, None, None, 10),
        core.store.usage(tenant, &period),
    );
    let (overview, groups, recent) = match (overview, groups, recent) {
        (Ok(o), Ok(g), Ok(r)) => (o, g, r),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return failed(e),
    };
    let used = used.unwrap_or(0);
    let quota = crate::quotas::plans::limits_of(&v.tenant).calls_per_month;

    let active: i64 = overview.connections_by_health.iter().map(|(_, n)| n).sum();
    let mut health_badges = Vec::new();
    for word in ["healthy", "degraded", "offline", "unchecked"] {
        let n: i64 = overview
            .connections_by_health
            .iter()
            .filter(|(h, _)| h == word)
            .map(|(_, n)| n)
            .sum();
        if n > 0 {
            health_badges.push((format!("{n} {word}"), tone(word)));
        }
    }
    if overview.inactive_connections > 0 {
        health_badges.push((format!("{} inactive", overview.inactive_connections), ""));
    }
    let online: usize = groups
        .iter()
        .map(|g| core.registry.online_in_group(&g.id))
        .sum();
    let count = |statuses: &[&str]| -> i64 {
        overview
            .executions_by_status
            .iter()
            .filter(|(s, _)| statuses.contains(&s.as_str()))
            .map(|(_, n)| n)
            .sum()
    };
    let error_rate = if overview.calls > 0 {
        format!(
            "{:.1}% errors",
            overview.failed_calls as f64 * 100.0 / overview.calls as f64
        )
    } else {
        "no calls yet".into()
    };
    let tiles = vec![
        Tile {
            label: "Active connections",
            figure: grouped(active),
            href: "/connections",
            badges: health_badges,
            meter: None,
        },
        Tile {
            label: "Agents online",
            figure: online.to_string(),
            href: "/relays",
            badges: vec![(
                format!(
                    "{} relay group{}",
                    groups.len(),
                    if groups.len() == 1 { "" } else { "s" }
                ),
                "",
            )],
            meter: None,
        },
        Tile {
            label: "Executions today",
            figure: count(&[
                "succeeded",
                "partially_succeeded",
                "failed",
                "cancelled",
                "queued",
                "running",
            ])
            .to_string(),
            href: "/#recent",
            badges: vec![
                (
                    format!("{} succeeded", count(&["succeeded", "partially_succeeded"])),
                    "ok",
                ),
                (format!("{} failed", count(&["failed"])), "bad"),
                (format!("{} running", count(&["running", "queued"])), "warn"),
            ],
            meter: None,
        },
        Tile {
            label: "API calls, last 24 h",
            figure: grouped(overview.calls),
            href: "/connections",
            badges: vec![(
                error_rate,
                if overview.failed_calls > 0 {
                    "warn"
                } else {
                    "ok"
                },
            )],
            meter: None,
        },
        Tile {
            label: "Monthly quota used",
            figure: format!(
                "{}%",
                (used.saturating_mul(100) / quota.max(1)).clamp(0, 100)
            ),
            href: "/settings/users",
            badges: vec![(
                format!("{} of {} calls in {period}", grouped(used), grouped(quota)),
                "",
            )],
            meter: Some((used.saturating_mul(100) / quota.max(1)).clamp(0, 100) as u8),
        },
    ];
    let recent = recent
        .into_iter()
        .map(|e| RecentExecution {
            class: tone(e.status.as_str()),
            id: e.id,
            orchestration: e.orchestration_name,
            status: e.status.to_string(),
            at: rfc3339(e.created_at),
        })
        .collect();
    html(
        StatusCode::OK,
        &Dashboard {
            chrome: Chrome::new(&v, "home", done.done.as_deref()),
            tiles,
            recent,
        },
    )
}

// ------------------------------------------------------------- integrations

#[derive(Debug, Deserialize, Default)]
pub(crate) struct CatalogueQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    auth_type: String,
    #[serde(default)]
    scope: String,
}

struct Card {
    id: String,
    name: String,
    initials: String,
    category: String,
    description: String,
    version: String,
    auth_types: Vec<String>,
    scope: String,
    deprecated: bool,
}

fn card(row: CatalogueRow) -> Card {
    Card {
        initials: row
            .name
            .split_whitespace()
            .filter_map(|w| w.chars().next())
            .take(2)
            .collect::<String>()
            .to_uppercase(),
        id: row.id,
        name: row.name,
        category: row.category,
        description: row.description,
        version: row.latest_version,
        auth_types: row
            .auth_types
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        scope: row.scope,
        deprecated: row.status == "deprecated",
    }
}

#[derive(Template)]
#[template(path = "console/integrations.html")]
struct Integrations {
    chrome: Chrome,
    cards: Vec<Card>,
    q: String,
    category: String,
    auth_type: String,
    scope: String,
    categories: Vec<String>,
    auth_types: Vec<String>,
    filtered: bool,
}

/// `GET /integrations`: the catalogue as cards, searched and filtered.
pub(crate) async fn integrations(
    State(core): State<Arc<Core>>,
    v: Visitor,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: CatalogueQuery = query(raw.as_deref());
    let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let filter = CatalogueFilter {
        text: some(&q.q).map(|t| t.to_lowercase()),
        category: some(&q.category),
        auth_type: some(&q.auth_type),
        scope: some(&q.scope),
    };
    let platform = v.principal.is_platform_admin();
    let tenant = &v.principal.tenant_id;
    let all = match core
        .store
        .catalogue(tenant, platform, &CatalogueFilter::default(), None, 500)
        .await
    {
        Ok(rows) => rows,
        Err(e) => return failed(e),
    };
    let categories: BTreeSet<String> = all.iter().map(|r| r.category.clone()).collect();
    let auth_types: BTreeSet<String> = all
        .iter()
        .flat_map(|r| r.auth_types.split_whitespace().map(str::to_owned))
        .collect();
    let filtered = filter.text.is_some()
        || filter.category.is_some()
        || filter.auth_type.is_some()
        || filter.scope.is_some();
    let rows = if filtered {
        match core
            .store
            .catalogue(tenant, platform, &filter, None, 500)
            .await
        {
            Ok(rows) => rows,
            Err(e) => return failed(e),
        }
    } else {
        all
    };
    html(
        StatusCode::OK,
        &Integrations {
            chrome: Chrome::new(&v, "integrations", None),
            cards: rows.into_iter().map(card).collect(),
            q: q.q,
            category: q.category,
            auth_type: q.auth_type,
            scope: q.scope,
            categories: categories.into_iter().collect(),
            auth_types: auth_types.into_iter().collect(),
            filtered,
        },
    )
}

struct Operation {
    method: String,
    path: String,
    name: String,
    description: String,
}

struct Version {
    version: String,
    published: String,
    notes: String,
    breaking: bool,
}

#[derive(Template)]
#[template(path = "console/integration.html")]
struct Integration {
    chrome: Chrome,
    card: Card,
    base_url: String,
    documentation_url: Option<String>,
    deprecation: Option<String>,
    operations: Vec<Operation>,
    versions: Vec<Version>,
}

/// `GET /integrations/{id}`: one catalogue entry in detail.
pub(crate) async fn integration(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Path(id): Path<String>,
) -> Response {
    let platform = v.principal.is_platform_admin();
    let detail =
        crate::catalogue::entry_detail(&core.store, &v.principal.tenant_id, platform, &id).await;
    let (row, versions, definition) = match detail {
        Ok(Some(d)) => (d.row, d.versions, d.definition),
        Ok(None) => {
            return problem(
                StatusCode::NOT_FOUND,
                "There is no such integration in your catalogue.",
            );
        }
        Err(e) => return failed(e),
    };
    let text = |k: &str| definition[k].as_str().map(str::to_owned);
    let deprecation = (row.status == "deprecated").then(|| {
        let until = row
            .deprecated_until
            .map(|t| format!(" It will be retired at {}.", rfc3339(t)))
            .unwrap_or_default();
        format!(
            "{}{until}",
            row.deprecation_message
                .clone()
                .unwrap_or_else(|| "This connector is deprecated.".into())
        )
    });
    let operations = definition["operations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let s = |k: &str| o[k].as_str().unwrap_or_default().to_owned();
            Operation {
                method: s("method").to_uppercase(),
                path: s("path"),
                name: if s("name").is_empty() {
                    s("id")
                } else {
                    s("name")
                },
                description: s("description"),
            }
        })
        .collect();
    let versions = versions
        .into_iter()
        .map(|v| Version {
            published: rfc3339(v.published_at),
            breaking: v.breaking != 0,
            notes: v.release_notes,
            version: v.version,
        })
        .collect();
    html(
        StatusCode::OK,
        &Integration {
            chrome: Chrome::new(&v, "integrations", None),
            base_url: text("base_url").unwrap_or_default(),
            documentation_url: text("documentation_url").filter(|u| u.starts_with("https://")),
            deprecation,
            operations,
            versions,
            card: card(row),
        },
    )
}

// -------------------------------------------------------------- connections

struct ConnectionLine {
    id: String,
    name: String,
    connector: String,
    version: String,
    status: String,
    status_class: &'static str,
    health: String,
    health_class: &'static str,
    checked: String,
    mode: String,
    deactivate_text: String,
    delete_text: String,
}

#[derive(Template)]
#[template(path = "console/connections.html")]
struct Connections {
    chrome: Chrome,
    lines: Vec<ConnectionLine>,
    /// The cursor of the next page, if there is one.
    next: Option<String>,
    /// Whether this is a later page (a link back to the first).
    paged: bool,
}

/// Rows on a page of a list.
const PAGE: usize = 50;

#[derive(Debug, Deserialize, Default)]
pub(crate) struct PageQuery {
    after: Option<String>,
}

/// `GET /connections`: the tenant's connections with their state.
pub(crate) async fn connections(
    State(core): State<Arc<Core>>,
    v: Visitor,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: PageQuery = query(raw.as_deref());
    let done: Done = query(raw.as_deref());
    let rows = match core
        .store
        .list_connections(&v.principal.tenant_id, q.after.as_deref(), PAGE as i64 + 1)
        .await
    {
        Ok(rows) => rows,
        Err(e) => return failed(e),
    };
    let next = (rows.len() > PAGE).then(|| rows[PAGE - 1].id.clone());
    let active = match crate::connections::manage::active_calls(&core, &v.principal.tenant_id).await
    {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    let lines = rows
        .into_iter()
        .take(PAGE)
        .map(|c| {
            let used_by = crate::connections::manage::users_of(&active, &c.id, &c.name);
            let (deactivate_text, delete_text) = super::connect::confirm_texts(&c.name, &used_by);
            ConnectionLine {
                status_class: tone(&c.status),
                health_class: tone(&c.health),
                checked: c.health_checked_at.map_or_else(|| "never".into(), rfc3339),
                mode: match (&c.execution_mode[..], &c.agent_group_id) {
                    ("agent_group", Some(g)) => format!("relay group {g}"),
                    (m, _) => m.to_owned(),
                },
                deactivate_text,
                delete_text,
                id: c.id,
                name: c.name,
                connector: c.connector_slug,
                version: c.connector_version,
                status: c.status,
                health: c.health,
            }
        })
        .collect();
    html(
        StatusCode::OK,
        &Connections {
            chrome: Chrome::new(&v, "connections", done.done.as_deref()),
            lines,
            next,
            paged: q.after.is_some(),
        },
    )
}

// ------------------------------------------------------------------- relays

struct AgentLine {
    id: String,
    name: String,
    hostname: String,
    version: String,
    status: &'static str,
    status_class: &'static str,
    last_seen: String,
    in_flight: u32,
}

struct GroupBlock {
    id: String,
    name: String,
    description: String,
    agents: Vec<AgentLine>,
}

struct Enrollment {
    group: String,
    command: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "console/relays.html")]
struct Relays {
    chrome: Chrome,
    groups: Vec<GroupBlock>,
    enrollment: Option<Enrollment>,
}

async fn relays_page(
    core: &Core,
    v: &Visitor,
    done: Option<&str>,
    enrollment: Option<Enrollment>,
) -> Response {
    let tenant = &v.principal.tenant_id;
    let groups = match core.store.list_groups(tenant, None, 200).await {
        Ok(g) => g,
        Err(e) => return failed(e),
    };
    let agents = match core.store.list_agents(tenant, None, None, 1000).await {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    let groups = groups
        .into_iter()
        .map(|g| GroupBlock {
            agents: agents
                .iter()
                .filter(|a| a.group_id == g.id)
                .map(|a| {
                    let s = crate::agents::enroll::state_of(core, a);
                    AgentLine {
                        status_class: tone(s.status),
                        id: a.id.clone(),
                        name: a.name.clone(),
                        hostname: s.hostname,
                        version: s.version,
                        status: s.status,
                        last_seen: s.last_seen.map_or_else(|| "never".into(), rfc3339),
                        in_flight: s.in_flight,
                    }
                })
                .collect(),
            id: g.id,
            name: g.name,
            description: g.description,
        })
        .collect();
    html(
        StatusCode::OK,
        &Relays {
            chrome: Chrome::new(v, "relays", done),
            groups,
            enrollment,
        },
    )
}

/// `GET /relays`: relay groups and their agents.
pub(crate) async fn relays(
    State(core): State<Arc<Core>>,
    v: Visitor,
    RawQuery(raw): RawQuery,
) -> Response {
    let done: Done = query(raw.as_deref());
    relays_page(&core, &v, done.done.as_deref(), None).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct AddRelayForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    group_id: String,
}

/// The refusal of an admin's form: one from elsewhere (no valid CSRF
/// token), or from someone who is not an admin (`what` they tried).
pub(crate) fn refused_admin_form(v: &Visitor, csrf: &str, what: &str) -> Option<Response> {
    v.forged(csrf).or_else(|| {
        (!v.principal.role.is_admin()).then(|| {
            problem(
                StatusCode::FORBIDDEN,
                &format!("{what} needs the enterprise_admin role."),
            )
        })
    })
}

/// `POST /relays/enroll`: an enrollment token for a group, shown once with
/// the command that installs an agent with it.
pub(crate) async fn add_relay(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Form(form): Form<AddRelayForm>,
) -> Response {
    if let Some(refused) = refused_admin_form(&v, &form.csrf, "Adding a relay") {
        return refused;
    }
    use crate::agents::enroll::{EnrollError, issue_token};
    match issue_token(&core, &v.principal, &form.group_id, None).await {
        Ok(issued) => {
            let enrollment = Enrollment {
                command: issued.install_command(),
                group: issued.group_name,
                expires: rfc3339(issued.expires_at),
            };
            relays_page(&core, &v, Some("relay_added"), Some(enrollment)).await
        }
        Err(EnrollError::NoGroup(_)) => {
            problem(StatusCode::NOT_FOUND, "There is no such relay group.")
        }
        Err(e) => failed(e),
    }
}

/// `POST /relays/agents/{id}/revoke`: cuts an agent off for good.
pub(crate) async fn revoke_agent(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Path(id): Path<String>,
    Form(form): Form<super::form::CsrfForm>,
) -> Response {
    if let Some(refused) = refused_admin_form(&v, &form.csrf, "Revoking an agent") {
        return refused;
    }
    use crate::agents::enroll::{RevokeError, revoke};
    match revoke(&core, &v.principal, &id).await {
        Ok(()) | Err(RevokeError::AlreadyRevoked { .. }) => {
            Redirect::to("/relays?done=agent_revoked").into_response()
        }
        Err(RevokeError::NoAgent(_)) => problem(StatusCode::NOT_FOUND, "There is no such agent."),
        Err(e) => failed(e),
    }
}

// -------------------------------------------------------------------- users

// -------------------------------------------------------------------- audit

struct AuditLine {
    at: String,
    actor: String,
    action: String,
    target: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct Audit {
    chrome: Chrome,
    lines: Vec<AuditLine>,
    q: AuditQuery,
    /// The filters as a query string (for the next page's link).
    filters: String,
    filtered: bool,
    next: Option<String>,
}

/// The time windows of the audit page.
const AUDIT_WINDOWS: [(&str, i64); 4] = [
    ("1h", 3_600),
    ("24h", 86_400),
    ("7d", 7 * 86_400),
    ("30d", 30 * 86_400),
];

#[derive(Debug, Deserialize, Default, serde::Serialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    window: String,
    #[serde(default, skip_serializing)]
    before: Option<String>,
}

/// `GET /audit`: the audit log, newest first, for admins, filtered by
/// action, resource type, actor and time window.
pub(crate) async fn audit(
    State(core): State<Arc<Core>>,
    v: Visitor,
    RawQuery(raw): RawQuery,
) -> Response {
    if !v.principal.role.is_admin() {
        return problem(
            StatusCode::FORBIDDEN,
            "The audit log is for administrators: it needs the enterprise_admin role.",
        );
    }
    let q: AuditQuery = query(raw.as_deref());
    let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let since = AUDIT_WINDOWS
        .iter()
        .find(|(w, _)| *w == q.window)
        .map(|(_, secs)| crate::store::now_unix() - secs);
    let filter = crate::store::AuditFilter {
        action: some(&q.action),
        resource_type: some(&q.resource),
        actor: some(&q.actor),
        since,
        before: q.before.clone(),
        ..Default::default()
    };
    let filtered = filter.action.is_some()
        || filter.resource_type.is_some()
        || filter.actor.is_some()
        || since.is_some();
    let scope = (!v.principal.is_platform_admin()).then_some(v.principal.tenant_id.as_str());
    let rows = match core.store.list_audit(scope, &filter, PAGE as i64 + 1).await {
        Ok(rows) => rows,
        Err(e) => return failed(e),
    };
    let next = (rows.len() > PAGE).then(|| rows[PAGE - 1].id.clone());
    html(
        StatusCode::OK,
        &Audit {
            chrome: Chrome::new(&v, "audit", None),
            lines: rows
                .into_iter()
                .take(PAGE)
                .map(|e| AuditLine {
                    at: rfc3339(e.at),
                    actor: e.actor,
                    action: e.action,
                    target: format!("{} {}", e.resource_type, e.resource_id),
                })
                .collect(),
            filters: serde_urlencoded::to_string(&q).unwrap_or_default(),
            filtered,
            q,
            next,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(100_000_000), "100,000,000");
        assert_eq!(grouped(-12_345), "-12,345");
    }
}

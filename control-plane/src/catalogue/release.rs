//! Releases of connectors (the Connector Builder's model): publishing with
//! its checklist and test calls, updates with their computed change and
//! bump, unpublishing, deprecation, reviews and promotion. The rules the
//! API (and the console's builder) share.
//!
//! A connector starts as a **draft** of one enterprise. Publishing runs the
//! pre-publication checklist and freezes an immutable version (the first is
//! 1.0.0) with a **scope**: `global` (platform admins) or `enterprise` (an
//! enterprise admin, when the platform enabled it for that tenant). An
//! enterprise may instead **submit for review**; a platform admin approves
//! (the connector becomes global) or rejects with a reason, and may
//! **promote** an enterprise connector to global. **Publish update** takes
//! a bump; the change between the newest version and the working
//! definition is computed and a bump too small for it is refused.
//! **Unpublish** takes a connector out of the catalogue (its versions stay
//! for existing users); **deprecate** keeps it visible with a warning
//! until a date at least 30 days ahead, when it unpublishes itself.

use std::sync::Arc;
use std::time::Duration;

use dibop_runtime::support::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::CatalogueError;
use super::definition::{AuthType, Definition};
use super::lifecycle::{self, Bump, Change, CheckItem, Version};
use super::publishing::{MIN_DEPRECATION_DAYS, freeze, parse_date};
use crate::Core;
use crate::identity::audit::{record, record_by};
use crate::identity::{Principal, Role};
use crate::store::{ConnectorRow, VersionRow, now_unix};

/// Where publishing tests each operation before freezing a version.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestTarget {
    /// The system to test against (a sandbox), e.g. `https://sandbox.dms.example`.
    pub base_url: String,
    /// Credentials for the definition's first auth scheme (none, api_key,
    /// basic or bearer). Used for these calls only: never stored or logged.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Map<String, Value>>,
    /// Parameter values by operation id (defaults apply otherwise).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
}

/// The body of `POST /connectors/{id}/publish`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// `global` (platform admins) or `enterprise`.
    pub scope: String,
    /// Notes for the first version.
    #[serde(default)]
    pub release_notes: Option<String>,
    /// Test each operation against this target first.
    #[serde(default)]
    pub test_target: Option<TestTarget>,
}

/// The body of `POST /connectors/{id}/versions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// `patch`, `minor` or `major`.
    pub bump: Bump,
    /// What changed, for the people who use the connector.
    pub release_notes: String,
    /// Test each operation against this target first.
    #[serde(default)]
    pub test_target: Option<TestTarget>,
}

/// The body of `POST /connectors/{id}/checklist` and `.../review`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChecklistRequest {
    /// Test each operation against this target too.
    #[serde(default)]
    pub test_target: Option<TestTarget>,
}

/// The body of `POST /connectors/{id}/deprecate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeprecateRequest {
    /// The date it unpublishes itself (`2027-03-01` or RFC 3339), at least
    /// 30 days ahead.
    pub until: String,
    /// What users should do instead.
    pub message: String,
}

/// The body of `POST /reviews/{id}/reject`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    /// Why, for the submitting enterprise.
    pub reason: String,
}

/// The checklist's outcome.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChecklistView {
    /// Whether every item passed.
    pub passed: bool,
    /// Every item.
    pub items: Vec<CheckItem>,
}

/// One published version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionView {
    pub version: String,
    pub bump: String,
    /// Whether it breaks users of the previous version.
    pub breaking: bool,
    /// The computed changes against the previous version.
    pub changes: Vec<Value>,
    pub release_notes: String,
    pub published_by: String,
    pub published_at: String,
    /// The frozen definition (single-version requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub definition: Option<Value>,
}

/// Where a connector is used.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageView {
    /// Enterprises with a connection made from it.
    pub enterprises: i64,
    /// Active connections made from it.
    pub active_connections: i64,
    /// Active orchestrations, in every enterprise, that call a connection made from it.
    pub orchestrations: i64,
    /// Calls through it in the last 24 hours.
    calls_24h: i64,
    /// Calls through it in the last 30 days.
    calls_30d: i64,
}

pub fn version_view(v: VersionRow, with_definition: bool) -> VersionView {
    VersionView {
        definition: with_definition
            .then(|| serde_json::from_str(&v.definition).unwrap_or(Value::Null)),
        changes: serde_json::from_str(&v.changes).unwrap_or_default(),
        version: v.version,
        bump: v.bump,
        breaking: v.breaking != 0,
        release_notes: v.release_notes,
        published_by: v.published_by,
        published_at: rfc3339(v.published_at),
    }
}

fn conflict(code: &'static str, message: impl Into<String>) -> CatalogueError {
    CatalogueError::Conflict {
        code,
        message: message.into(),
        details: Value::Null,
    }
}

fn forbidden(message: impl Into<String>) -> CatalogueError {
    CatalogueError::forbidden_as("forbidden", message)
}

/// Refuses all but enterprise (or platform) admins.
fn require_admin(p: &Principal) -> Result<(), CatalogueError> {
    if p.role.is_admin() {
        Ok(())
    } else {
        Err(forbidden(format!(
            "the `{}` role cannot make changes: that needs the enterprise_admin role",
            p.role
        )))
    }
}

fn require_platform(p: &Principal) -> Result<(), CatalogueError> {
    if p.role == Role::PlatformAdmin {
        Ok(())
    } else {
        Err(forbidden(format!(
            "the `{}` role cannot do this: it needs the platform_admin role",
            p.role
        )))
    }
}

/// A connector of the caller's tenant.
pub async fn own(core: &Core, p: &Principal, id: &str) -> Result<ConnectorRow, CatalogueError> {
    core.store
        .connector(&p.tenant_id, id)
        .await?
        .ok_or_else(|| CatalogueError::not_found("connector", id))
}

fn definition_of(c: &ConnectorRow) -> Value {
    serde_json::from_str(&c.definition).unwrap_or(Value::Null)
}

/// Runs the checklist: the static items, then (with a target) a test call
/// of each operation.
pub async fn run_checklist(doc: &Value, target: Option<&TestTarget>) -> ChecklistView {
    let mut items = lifecycle::checklist(doc);
    if let Some(target) = target {
        items.push(CheckItem::from_problems(
            "operation_tests",
            test_operations(doc, target).await,
        ));
    }
    ChecklistView {
        passed: items.iter().all(|i| i.passed),
        items,
    }
}

fn checklist_failed(view: ChecklistView) -> CatalogueError {
    let failed: Vec<&CheckItem> = view.items.iter().filter(|i| !i.passed).collect();
    let names: Vec<&str> = failed.iter().map(|i| i.item).collect();
    CatalogueError::ChecklistFailed {
        message: format!("the pre-publication checklist failed: {}", names.join(", ")),
        failed: json!(failed),
    }
}

/// Applies the test credentials of the first auth scheme to a request.
fn authenticate(
    def: &Definition,
    target: &TestTarget,
    mut req: reqwest::RequestBuilder,
    url: &mut reqwest::Url,
) -> Result<reqwest::RequestBuilder, String> {
    let Some(scheme) = def.auth.schemes.first() else {
        return Ok(req);
    };
    let kind = scheme.kind.as_str();
    let creds = target.credentials.clone().unwrap_or_default();
    let field = |name: &str| -> Result<String, String> {
        creds
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("test_target.credentials.{name} is needed for `{kind}` auth"))
    };
    match scheme.kind {
        AuthType::None => {}
        AuthType::ApiKey => {
            let value = format!(
                "{}{}",
                scheme.prefix.as_deref().unwrap_or_default(),
                field("api_key")?
            );
            if let Some(h) = &scheme.header {
                req = req.header(h, value);
            } else if let Some(q) = &scheme.query {
                url.query_pairs_mut().append_pair(q, &value);
            }
        }
        AuthType::Basic => req = req.basic_auth(field("username")?, Some(field("password")?)),
        AuthType::Bearer => req = req.bearer_auth(field("token")?),
        _ => {
            let other = kind;
            return Err(format!(
                "operations of a connector whose first auth scheme is `{other}` are tested through a \
                 connection's Test Connection; publish without test_target"
            ));
        }
    }
    Ok(req)
}

/// Calls each operation once against the target; problems name the
/// operation and what failed (never the credentials).
async fn test_operations(doc: &Value, target: &TestTarget) -> Vec<String> {
    if !crate::catalogue::connector::is_http_url(&target.base_url) {
        return vec![format!(
            "test_target.base_url `{}` is not an http(s) URL",
            target.base_url
        )];
    }
    let Ok(def) = Definition::checked(doc) else {
        return vec!["the operations are tested once the definition is valid".to_owned()];
    };
    let timeout = Duration::from_millis(u64::from(def.resilience.timeout_ms.min(30_000)));
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(e) => return vec![format!("cannot build an HTTP client: {e}")],
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, op) in def.operations.iter().enumerate() {
        let id = op.id.clone();
        let values = target
            .parameters
            .as_ref()
            .and_then(|p| p.get(&id))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let prepared = crate::catalogue::render::prepare(op, &target.base_url, &values);
        let request = prepared.map_err(|p| p.join("; ")).and_then(|prep| {
            let mut url = prep.url.clone();
            let method =
                reqwest::Method::from_bytes(prep.method.as_bytes()).map_err(|e| e.to_string())?;
            let mut req = client.request(method, url.clone());
            for (k, v) in &prep.headers {
                req = req.header(k, v);
            }
            if let Some(body) = &prep.body {
                req = req.json(body);
            }
            req = authenticate(&def, target, req, &mut url)?;
            // The query may have gained an API key: rebuild with the final URL.
            let mut built = req.build().map_err(|e| e.without_url().to_string())?;
            *built.url_mut() = url;
            Ok(built)
        });
        let client = client.clone();
        let limit = limit.clone();
        let schema = op.response_schema.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire().await;
            let problem = match request {
                Err(e) => Some(format!("operation `{id}`: {e}")),
                Ok(req) => match client.execute(req).await {
                    Err(e) if e.is_timeout() => Some(format!(
                        "operation `{id}`: no answer within {} ms",
                        timeout.as_millis()
                    )),
                    Err(e) => Some(format!("operation `{id}`: {}", e.without_url())),
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp.bytes().await.unwrap_or_default();
                        if !status.is_success() {
                            Some(format!("operation `{id}`: answered HTTP {status}"))
                        } else {
                            match (&schema, serde_json::from_slice::<Value>(&body)) {
                                (Some(_), Err(_)) if !body.is_empty() => Some(format!(
                                    "operation `{id}`: the response is not JSON"
                                )),
                                (Some(s), Ok(v)) => {
                                    let problems = lifecycle::schema_problems(s, &v);
                                    (!problems.is_empty()).then(|| {
                                        format!(
                                            "operation `{id}`: the response does not match response_schema: {}",
                                            problems.join("; ")
                                        )
                                    })
                                }
                                _ => None,
                            }
                        }
                    }
                },
            };
            (index, problem)
        });
    }
    let mut problems: Vec<(usize, String)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, Some(p))) = done {
            problems.push((i, p));
        }
    }
    problems.sort();
    problems.into_iter().map(|(_, p)| p).collect()
}

fn notes(n: Option<String>) -> Result<String, CatalogueError> {
    let n = n.unwrap_or_default();
    if n.len() > 10_000 {
        return Err(CatalogueError::invalid(
            "release_notes must be at most 10,000 characters",
        ));
    }
    Ok(n)
}

/// Freezes the first version (1.0.0) of `c` with `scope`, after the
/// checklist: the connector and the version to store (in the transaction
/// of its audit entry). Shared by publish and review approval.
async fn publish_first(
    c: &ConnectorRow,
    scope: &str,
    release_notes: String,
    target: Option<&TestTarget>,
    actor: &str,
) -> Result<(ConnectorRow, VersionRow), CatalogueError> {
    let mut c = c.clone();
    let doc = definition_of(&c);
    let check = run_checklist(&doc, target).await;
    if !check.passed {
        return Err(checklist_failed(check));
    }
    let v = freeze(
        &c,
        &doc,
        Version::FIRST,
        Bump::Major,
        &[],
        release_notes,
        actor,
    );
    c.status = "published".into();
    c.scope = Some(scope.into());
    c.review_status = None;
    c.review_reason = None;
    c.updated_at = now_unix();
    c.latest_version = Some(v.version.clone());
    Ok((c, v))
}

/// Publishes a draft: the checklist, then version 1.0.0 with `req.scope`
/// (global for platform admins, enterprise where the platform allows it).
pub async fn publish(
    core: &Core,
    p: &Principal,
    id: &str,
    req: PublishRequest,
) -> Result<ConnectorRow, CatalogueError> {
    require_admin(p)?;
    let c = own(core, p, id).await?;
    match req.scope.as_str() {
        "global" if p.role != Role::PlatformAdmin => {
            return Err(forbidden(
                "only platform admins publish globally: submit the connector for review \
                 (POST /api/v1/connectors/{id}/review) or publish it for your enterprise",
            ));
        }
        "global" => {}
        "enterprise" if p.role == Role::PlatformAdmin => {
            return Err(CatalogueError::invalid(
                "the platform's connectors are global: publish with scope `global`",
            ));
        }
        "enterprise" => {
            let tenant = core.store.tenant(&p.tenant_id).await?;
            if tenant.is_none_or(|t| t.enterprise_publishing == 0) {
                return Err(CatalogueError::forbidden_as(
                    "enterprise_publishing_disabled",
                    "the platform has not enabled enterprise publishing for your enterprise: \
                     submit the connector for review instead",
                ));
            }
        }
        other => {
            return Err(CatalogueError::invalid(format!(
                "scope `{other}` is not one of global, enterprise"
            )));
        }
    }
    if let Some(v) = &c.latest_version {
        return Err(if c.status == "draft" {
            conflict(
                "already_versioned",
                format!(
                    "this connector was published before (version {v}) and then unpublished: \
                     publish an update (POST /api/v1/connectors/{id}/versions) to list it again"
                ),
            )
        } else {
            conflict(
                "already_published",
                format!(
                    "this connector is already published (version {v}): publish an update with \
                     POST /api/v1/connectors/{id}/versions"
                ),
            )
        });
    }
    let (c, v) = publish_first(
        &c,
        &req.scope,
        notes(req.release_notes)?,
        req.test_target.as_ref(),
        &p.actor(),
    )
    .await?;
    let tx = core.store.begin().await?;
    tx.publish_version(&c, None, &v).await?;
    record_by(
        &tx,
        p,
        "connector.publish",
        ("connector", &c.id),
        json!({"scope": req.scope, "version": c.latest_version}),
    )
    .await?;
    tx.commit().await?;
    Ok(c)
}

/// Publishes an update: freezes the working definition as the next
/// version, refusing a bump smaller than the computed change needs.
pub async fn publish_update(
    core: &Core,
    p: &Principal,
    id: &str,
    req: UpdateRequest,
) -> Result<VersionRow, CatalogueError> {
    require_admin(p)?;
    let mut c = own(core, p, id).await?;
    let Some(latest) = c.latest_version.clone() else {
        return Err(conflict(
            "not_published",
            "this connector has no version yet: publish it first (POST /api/v1/connectors/{id}/publish)",
        ));
    };
    if req.release_notes.trim().is_empty() {
        return Err(CatalogueError::invalid(
            "release_notes must say what changed",
        ));
    }
    let release_notes = notes(Some(req.release_notes))?;
    let previous = core
        .store
        .version(&c.id, &latest)
        .await?
        .ok_or_else(|| CatalogueError::not_found("version", &latest))?;
    let old: Value = serde_json::from_str(&previous.definition).unwrap_or(Value::Null);
    let new = definition_of(&c);
    let changes = lifecycle::diff(&old, &new);
    if changes.is_empty() {
        return Err(conflict(
            "no_changes",
            format!("the definition is unchanged since version {latest}"),
        ));
    }
    let needed = lifecycle::required_bump(&changes);
    if req.bump < needed {
        let why: Vec<&Change> = changes
            .iter()
            .filter(|ch| match needed {
                Bump::Major => ch.impact == lifecycle::Impact::Breaking,
                _ => ch.impact == lifecycle::Impact::Addition,
            })
            .collect();
        return Err(conflict(
            if needed == Bump::Major {
                "breaking_change"
            } else {
                "bump_too_small"
            },
            format!(
                "a {} release cannot carry these changes: they need a {} version ({})",
                req.bump.as_str(),
                needed.as_str(),
                why.iter()
                    .map(|c| c.description.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
        .with_details(json!(changes)));
    }
    let check = run_checklist(&new, req.test_target.as_ref()).await;
    if !check.passed {
        return Err(checklist_failed(check));
    }
    let current = Version::parse(&latest).unwrap_or(Version::FIRST);
    let version = current.bumped(req.bump);
    let v = freeze(
        &c,
        &new,
        version,
        req.bump,
        &changes,
        release_notes,
        &p.actor(),
    );
    if c.status == "draft" {
        // An update of an unpublished connector lists it again.
        c.status = "published".into();
    }
    c.updated_at = now_unix();
    let tx = core.store.begin().await?;
    tx.publish_version(&c, Some(&latest), &v).await?;
    record_by(
        &tx,
        p,
        "connector.publish_update",
        ("connector", &c.id),
        json!({"version": v.version, "bump": v.bump, "breaking": v.breaking != 0}),
    )
    .await?;
    tx.commit().await?;
    if req.bump == Bump::Major {
        notify_major(core, &c, &v, &changes).await;
    }
    Ok(v)
}

/// Takes a connector out of the catalogue (its versions stay for existing users).
pub async fn unpublish(
    core: &Core,
    p: &Principal,
    id: &str,
) -> Result<ConnectorRow, CatalogueError> {
    require_admin(p)?;
    let mut c = own(core, p, id).await?;
    if c.status == "draft" {
        return Err(conflict("not_published", "this connector is not published"));
    }
    c.status = "draft".into();
    c.deprecated_until = None;
    c.deprecation_message = None;
    c.updated_at = now_unix();
    save(core, p, &c, "connector.unpublish", Value::Null, Log::Owner).await?;
    Ok(c)
}

/// Deprecates a published connector until a date at least 30 days ahead.
pub async fn deprecate(
    core: &Core,
    p: &Principal,
    id: &str,
    req: DeprecateRequest,
) -> Result<ConnectorRow, CatalogueError> {
    require_admin(p)?;
    let mut c = own(core, p, id).await?;
    if c.status == "draft" {
        return Err(conflict(
            "not_published",
            "only a published connector can be deprecated",
        ));
    }
    let until = parse_date(req.until.trim()).ok_or_else(|| {
        CatalogueError::invalid(format!(
            "until `{}` is not a date: use 2027-03-01 or an RFC 3339 time",
            req.until
        ))
    })?;
    let earliest = now_unix() + MIN_DEPRECATION_DAYS * 24 * 3600;
    if until < earliest - 60 {
        return Err(CatalogueError::invalid(format!(
            "until must be at least {MIN_DEPRECATION_DAYS} days ahead (on or after {})",
            &rfc3339(earliest)[..10]
        )));
    }
    let message = req.message.trim();
    if message.is_empty() || message.len() > 2000 {
        return Err(CatalogueError::invalid(
            "message must tell users what to do instead (1 to 2,000 characters)",
        ));
    }
    c.status = "deprecated".into();
    c.deprecated_until = Some(until);
    c.deprecation_message = Some(message.to_owned());
    c.updated_at = now_unix();
    save(
        core,
        p,
        &c,
        "connector.deprecate",
        json!({"until": rfc3339(until)}),
        Log::Owner,
    )
    .await?;
    Ok(c)
}

/// Submits a connector for the global catalogue.
pub async fn submit_review(
    core: &Core,
    p: &Principal,
    id: &str,
    req: ChecklistRequest,
) -> Result<ConnectorRow, CatalogueError> {
    require_admin(p)?;
    let mut c = own(core, p, id).await?;
    if c.scope.as_deref() == Some("global") {
        return Err(conflict(
            "already_global",
            "this connector is already in the global catalogue",
        ));
    }
    if c.review_status.as_deref() == Some("pending") {
        return Err(conflict(
            "review_pending",
            "this connector is already waiting for review",
        ));
    }
    let check = run_checklist(&definition_of(&c), req.test_target.as_ref()).await;
    if !check.passed {
        return Err(checklist_failed(check));
    }
    c.review_status = Some("pending".into());
    c.review_reason = None;
    c.updated_at = now_unix();
    save(
        core,
        p,
        &c,
        "connector.review_submit",
        Value::Null,
        Log::Owner,
    )
    .await?;
    Ok(c)
}

/// Where a connector is used.
pub async fn usage(core: &Core, p: &Principal, id: &str) -> Result<UsageView, CatalogueError> {
    let c = own(core, p, id).await?;
    core.calls.flush(&core.store).await;
    let now = now_unix();
    let (enterprises, active_connections, calls_24h, calls_30d) = core
        .store
        .connector_usage(&c.id, now - 24 * 3600, now - 30 * 24 * 3600)
        .await?;
    Ok(UsageView {
        enterprises,
        active_connections,
        orchestrations: count_using_connector(core, &c.id).await?,
        calls_24h,
        calls_30d,
    })
}

/// Approves a submission: the connector joins the global catalogue.
pub async fn approve_review(
    core: &Core,
    p: &Principal,
    id: &str,
) -> Result<ConnectorRow, CatalogueError> {
    require_platform(p)?;
    let mut c = pending(core, id).await?;
    let tx;
    if c.latest_version.is_none() {
        let (first, v) = publish_first(
            &c,
            "global",
            "Approved for the global catalogue.".into(),
            None,
            &p.actor(),
        )
        .await?;
        c = first;
        tx = core.store.begin().await?;
        tx.publish_version(&c, None, &v).await?;
    } else {
        c.scope = Some("global".into());
        if c.status == "draft" {
            c.status = "published".into();
        }
        c.review_status = None;
        c.review_reason = None;
        c.updated_at = now_unix();
        tx = core.store.begin().await?;
        tx.update_lifecycle(&c).await?;
    }
    record_both(
        &tx,
        p,
        &c,
        "connector.review_approve",
        json!({"version": c.latest_version}),
    )
    .await?;
    tx.commit().await?;
    Ok(c)
}

/// Rejects a submission with a reason.
pub async fn reject_review(
    core: &Core,
    p: &Principal,
    id: &str,
    req: RejectRequest,
) -> Result<ConnectorRow, CatalogueError> {
    require_platform(p)?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.len() > 2000 {
        return Err(CatalogueError::invalid(
            "reason must tell the enterprise what to fix (1 to 2,000 characters)",
        ));
    }
    let mut c = pending(core, id).await?;
    c.review_status = Some("rejected".into());
    c.review_reason = Some(reason.to_owned());
    c.updated_at = now_unix();
    save(
        core,
        p,
        &c,
        "connector.review_reject",
        json!({"reason": reason}),
        Log::Both,
    )
    .await?;
    Ok(c)
}

/// Promotes an enterprise connector to the global catalogue.
pub async fn promote(core: &Core, p: &Principal, id: &str) -> Result<ConnectorRow, CatalogueError> {
    require_platform(p)?;
    core.store
        .catalogue_entry(&p.tenant_id, true, id)
        .await?
        .ok_or_else(|| CatalogueError::not_found("catalogue entry", id))?;
    let mut c = core
        .store
        .connector_any_tenant(id)
        .await?
        .ok_or_else(|| CatalogueError::not_found("catalogue entry", id))?;
    if c.scope.as_deref() == Some("global") {
        return Err(conflict(
            "already_global",
            "this connector is already global",
        ));
    }
    c.scope = Some("global".into());
    c.review_status = None;
    c.review_reason = None;
    c.updated_at = now_unix();
    save(core, p, &c, "connector.promote", Value::Null, Log::Both).await?;
    Ok(c)
}

/// Tells every enterprise whose connections use an older major version.
async fn notify_major(core: &Core, c: &ConnectorRow, v: &VersionRow, changes: &[Change]) {
    let users = match core.store.connections_of_connector(&c.id).await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(connector = %c.id, "cannot find the users of the old version: {e}");
            return;
        }
    };
    let mut by_tenant: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for (tenant, id, name, version) in users {
        let old = Version::parse(&version).map_or(0, |v| i64::from(v.major));
        if old < v.major {
            by_tenant
                .entry(tenant)
                .or_default()
                .push(json!({"id": id, "name": name, "version": version}));
        }
    }
    let breaking: Vec<&str> = changes
        .iter()
        .filter(|ch| ch.impact == lifecycle::Impact::Breaking)
        .map(|ch| ch.description.as_str())
        .collect();
    for (tenant, connections) in by_tenant {
        let message = format!(
            "{} {} is out with breaking changes ({}); {} of your connections stay on their version until you move them \
             (POST /api/v1/connections/{{id}}/move with {{\"version\": \"{}\", \"dry_run\": true}} shows what changes)",
            v.name,
            v.version,
            breaking.join("; "),
            connections.len(),
            v.version
        );
        let details = json!({"connector_id": c.id, "slug": c.slug, "version": v.version,
                             "release_notes": v.release_notes, "connections": connections});
        if let Err(e) = core
            .store
            .notify(
                &tenant,
                "connector.major_version",
                &message,
                &details.to_string(),
            )
            .await
        {
            tracing::error!(%tenant, "cannot notify: {e}");
        }
    }
}

/// A connector waiting for review, as platform admins see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewView {
    /// The connector id (use it with approve and reject).
    pub id: String,
    /// The submitting enterprise.
    pub tenant_id: String,
    pub slug: String,
    pub name: String,
    pub category: String,
    /// `draft`, `published` (for its enterprise) or `deprecated`.
    pub status: String,
    pub latest_version: Option<String>,
    pub submitted_at: String,
    /// The working definition to review.
    #[schema(value_type = Object)]
    pub definition: Value,
}

async fn pending(core: &Core, id: &str) -> Result<ConnectorRow, CatalogueError> {
    core.store
        .connector_any_tenant(id)
        .await?
        .filter(|c| c.review_status.as_deref() == Some("pending"))
        .ok_or_else(|| CatalogueError::not_found("review", id))
}

/// Whose audit log records a change of a connector's state.
#[derive(Clone, Copy)]
enum Log {
    /// The tenant of the caller (who owns the connector).
    Owner,
    /// The platform's and the owner's (a platform admin acting on an
    /// enterprise's connector).
    Both,
}

/// Stores a connector's new lifecycle state with its audit entry, in one
/// transaction.
async fn save(
    core: &Core,
    p: &Principal,
    c: &ConnectorRow,
    action: &str,
    details: Value,
    log: Log,
) -> Result<(), CatalogueError> {
    let tx = core.store.begin().await?;
    tx.update_lifecycle(c).await?;
    match log {
        Log::Owner => record_by(&tx, p, action, ("connector", &c.id), details).await?,
        Log::Both => record_both(&tx, p, c, action, details).await?,
    }
    tx.commit().await?;
    Ok(())
}

/// Records a platform admin's action in the platform log and the owner's.
async fn record_both(
    store: &crate::store::Store,
    p: &Principal,
    c: &ConnectorRow,
    action: &str,
    details: Value,
) -> Result<(), crate::store::StoreError> {
    for tenant in [None, Some(c.tenant_id.as_str())] {
        record(
            store,
            tenant,
            &p.actor(),
            action,
            ("connector", &c.id),
            details.clone(),
        )
        .await?;
    }
    Ok(())
}

/// A connector's published versions, newest first.
pub async fn versions(
    core: &Core,
    p: &Principal,
    id: &str,
) -> Result<Vec<VersionRow>, CatalogueError> {
    let c = own(core, p, id).await?;
    Ok(core.store.versions(&c.id).await?)
}

/// One published version with its frozen definition.
pub async fn version(
    core: &Core,
    p: &Principal,
    id: &str,
    version: &str,
) -> Result<VersionRow, CatalogueError> {
    let c = own(core, p, id).await?;
    core.store
        .version(&c.id, version)
        .await?
        .ok_or_else(|| CatalogueError::not_found("version", version))
}

/// The pre-publication checklist of the working definition, publishing nothing.
pub async fn check(
    core: &Core,
    p: &Principal,
    id: &str,
    target: Option<&TestTarget>,
) -> Result<ChecklistView, CatalogueError> {
    require_admin(p)?;
    let c = own(core, p, id).await?;
    Ok(run_checklist(&definition_of(&c), target).await)
}

/// Connectors waiting for review (platform admins), a page after `after`.
pub async fn reviews(
    core: &Core,
    p: &Principal,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ReviewView>, CatalogueError> {
    require_platform(p)?;
    let rows = core.store.pending_reviews(after, limit).await?;
    Ok(rows
        .into_iter()
        .map(|c| ReviewView {
            definition: definition_of(&c),
            id: c.id,
            tenant_id: c.tenant_id,
            slug: c.slug,
            name: c.name,
            category: c.category,
            status: c.status,
            latest_version: c.latest_version,
            submitted_at: rfc3339(c.updated_at),
        })
        .collect())
}

/// How many active orchestrations, in every tenant, call a connection made
/// from `connector_id` (by the connection's name or id).
async fn count_using_connector(core: &Core, connector_id: &str) -> Result<i64, CatalogueError> {
    let mut by_tenant: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (tenant, id, name, _) in core.store.connections_of_connector(connector_id).await? {
        by_tenant.entry(tenant).or_default().extend([id, name]);
    }
    let mut count = 0;
    for (tenant, names) in by_tenant {
        for (o, d) in core
            .store
            .orchestrations_with_definitions(&tenant, None, 10_000)
            .await?
        {
            let d: Value = serde_json::from_str(&d).unwrap_or(Value::Null);
            if o.status == "active"
                && crate::domain::called_connections(&d)
                    .iter()
                    .any(|c| names.contains(c))
            {
                count += 1;
            }
        }
    }
    Ok(count)
}

//! Executions through the API: start one (optionally waiting for its end),
//! list them, read one with its step traces, cancel.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dibop_runtime::support::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Core;
use crate::domain::{ErrorClass, ExecutionStatus, UnknownName};
use crate::http::{
    ApiError, ApiJson, ApiPath, ApiQuery, Page, Principal, page_limit, paged, require_operator,
};
use crate::identity::audit::record_by;
use crate::store::{ExecutionRow, now_unix};

/// The body of `POST /orchestrations/{id}/execute`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// Values of the orchestration's parameters (defaults apply); absent or
    /// `null` is none.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    parameters: Option<Map<String, Value>>,
    /// Wait up to this long for the execution to end (0-60000; default 0: answer at once).
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// One step's trace.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StepTrace {
    /// Where the step is, e.g. `steps[2].then[0]` or `steps[3].steps[0]#7` (foreach item 7).
    path: String,
    step_id: String,
    step_type: String,
    /// `running`, `succeeded`, `failed` or `skipped`.
    status: String,
    #[schema(value_type = Option<Object>)]
    input: Option<Value>,
    #[schema(value_type = Option<Object>)]
    output: Option<Value>,
    #[schema(value_type = Option<Object>)]
    error: Option<Value>,
    attempts: i64,
    started_at: String,
    duration_ms: Option<i64>,
}

/// An execution.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExecutionView {
    id: String,
    orchestration_id: String,
    orchestration_name: String,
    /// The pinned version.
    version: i64,
    /// `queued`, `running`, `succeeded`, `partially_succeeded`, `failed` or `cancelled`.
    status: String,
    #[schema(value_type = Object)]
    parameters: Value,
    #[schema(value_type = Option<Object>)]
    output: Option<Value>,
    #[schema(value_type = Option<Object>)]
    error: Option<Value>,
    trigger: String,
    created_by: String,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    /// The execution this one re-runs.
    rerun_of: Option<String>,
    /// For failed executions: `open` (in the dead-letter queue), `replayed` or `discarded`.
    dead_letter: Option<String>,
    /// Step traces (single-execution requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<StepTrace>>,
}

fn parse(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn view(e: ExecutionRow, steps: Option<Vec<StepTrace>>) -> ExecutionView {
    ExecutionView {
        parameters: serde_json::from_str(&e.parameters).unwrap_or(Value::Null),
        output: parse(e.output),
        error: parse(e.error),
        id: e.id,
        orchestration_id: e.orchestration_id,
        orchestration_name: e.orchestration_name,
        version: e.version,
        status: e.status.to_string(),
        trigger: e.trigger_type,
        created_by: e.created_by,
        created_at: rfc3339(e.created_at),
        started_at: e.started_at.map(rfc3339),
        finished_at: e.finished_at.map(rfc3339),
        rerun_of: e.rerun_of,
        dead_letter: e.dead_letter,
        steps,
    }
}

impl ExecutionView {
    /// Redacts personal data for callers without `view_pii`.
    fn redact(&mut self, keys: &std::collections::BTreeSet<String>) {
        crate::cdm::pii::redact(&mut self.parameters, keys);
        for v in [&mut self.output, &mut self.error].into_iter().flatten() {
            crate::cdm::pii::redact(v, keys);
        }
        for step in self.steps.iter_mut().flatten() {
            for v in [&mut step.input, &mut step.output, &mut step.error]
                .into_iter()
                .flatten()
            {
                crate::cdm::pii::redact(v, keys);
            }
        }
    }
}

/// Redacts views for the caller (see [`crate::cdm::pii`]).
async fn shown(core: &Core, p: &Principal, views: &mut [ExecutionView]) {
    if !crate::cdm::pii::can_view(p) {
        let keys = crate::cdm::pii::keys_for(core, &p.tenant_id).await;
        views.iter_mut().for_each(|v| v.redact(&keys));
    }
}

async fn detail(core: &Core, p: &Principal, e: ExecutionRow) -> Result<ExecutionView, ApiError> {
    let steps = core
        .store
        .step_records(&e.id)
        .await?
        .into_iter()
        .map(|s| StepTrace {
            input: parse(s.input),
            output: parse(s.output),
            error: parse(s.error),
            path: s.path,
            step_id: s.step_id,
            step_type: s.step_type,
            status: s.status,
            attempts: s.attempts,
            started_at: rfc3339(s.started_at),
            duration_ms: s.duration_ms,
        })
        .collect();
    let mut views = [view(e, Some(steps))];
    shown(core, p, &mut views).await;
    let [v] = views;
    Ok(v)
}

/// Checks parameters against the declared ones and applies defaults.
pub(crate) fn check_parameters(
    definition: &Value,
    given: Map<String, Value>,
) -> Result<Value, ApiError> {
    let declared = definition["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut problems = Vec::new();
    for name in given.keys() {
        if !declared.iter().any(|p| p["name"] == name.as_str()) {
            problems.push(json!({"field": format!("parameters.{name}"), "problem": "not a parameter of this orchestration"}));
        }
    }
    let mut out = Map::new();
    for p in &declared {
        let name = p["name"].as_str().unwrap_or_default();
        let kind = p["type"].as_str().unwrap_or("string");
        match given.get(name).or_else(|| p.get("default")) {
            Some(v) if !v.is_null() => {
                if crate::orchestration::definition::type_matches(kind, v) {
                    out.insert(name.to_owned(), v.clone());
                } else {
                    problems.push(json!({"field": format!("parameters.{name}"), "problem": format!("must be of type {kind}")}));
                }
            }
            _ if p["required"] == true => {
                problems
                    .push(json!({"field": format!("parameters.{name}"), "problem": "is required"}));
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(ApiError::invalid("the parameters are invalid").with_details(json!(problems)))
    }
}

/// `POST /api/v1/orchestrations/{id}/execute`
#[utoipa::path(post, path = "/api/v1/orchestrations/{id}/execute", tag = "executions",
    summary = "Start an execution of the newest version (draft or active), optionally waiting for its end",
    params(("id" = String, Path, description = "The orchestration id")), request_body = ExecuteRequest,
    responses((status = 201, description = "Started (or finished within wait_ms)", body = ExecutionView),
        (status = 409, description = "The orchestration is paused or archived", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "Bad parameters: each named", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn execute(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ExecuteRequest>,
) -> Result<Response, ApiError> {
    require_operator(&p)?;
    let o = core
        .store
        .orchestration(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("orchestration", &id))?;
    if !matches!(o.status.as_str(), "draft" | "active") {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_runnable",
            format!(
                "orchestration {} is {}: activate it to run it",
                o.name, o.status
            ),
        ));
    }
    let wait = req.wait_ms.unwrap_or(0);
    if wait > 60_000 {
        return Err(ApiError::invalid("wait_ms must be 0..=60000"));
    }
    let definition: Value = core
        .store
        .orchestration_version(&o.id, o.latest_version)
        .await?
        .and_then(|v| serde_json::from_str(&v.definition).ok())
        .unwrap_or(Value::Null);
    let params = check_parameters(&definition, req.parameters.unwrap_or_default())?;
    core.quotas
        .ensure_storage(&core.store, &p.tenant_id)
        .await?;
    let row = ExecutionRow::queued(&o, params.to_string(), "api", p.actor());
    // Subscribed before the row exists: its end cannot be missed.
    let finished = core.engine.subscribe();
    let tx = core.store.begin().await?;
    tx.create_execution(&row).await?;
    record_by(
        &tx,
        &p,
        "execution.start",
        ("execution", &row.id),
        json!({"orchestration": o.id, "version": o.latest_version}),
    )
    .await?;
    tx.commit().await?;
    let v = wait_for(&core, &p, row, wait, finished).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// The `status` filter, parsed.
fn status_filter(status: Option<&str>) -> Result<Option<ExecutionStatus>, ApiError> {
    status
        .map(|s| {
            s.parse()
                .map_err(|e: UnknownName| ApiError::invalid(e.to_string()))
        })
        .transpose()
}

/// `?orchestration_id=&status=&limit=&cursor=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecutionQuery {
    orchestration_id: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /api/v1/executions`
#[utoipa::path(get, path = "/api/v1/executions", tag = "executions", summary = "Executions, newest first",
    params(("orchestration_id" = Option<String>, Query, description = "One orchestration"),
        ("status" = Option<String>, Query, description = "queued, running, succeeded, partially_succeeded, failed, cancelled"),
        ("limit" = Option<i64>, Query, description = "1..=500, default 100"),
        ("cursor" = Option<String>, Query, description = "From the previous page's Link header")),
    responses((status = 200, body = [ExecutionView])),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(q): ApiQuery<ExecutionQuery>,
) -> Result<Response, ApiError> {
    let status = status_filter(q.status.as_deref())?;
    let limit = page_limit(q.limit)?;
    let page = crate::http::Page {
        limit: q.limit,
        cursor: q.cursor.clone(),
        group_id: None,
    };
    let rows = core
        .store
        .list_executions(
            &p.tenant_id,
            q.orchestration_id.as_deref(),
            status,
            page.cursor_of("exe_")?,
            limit + 1,
        )
        .await?;
    let mut views: Vec<ExecutionView> = rows.into_iter().map(|e| view(e, None)).collect();
    shown(&core, &p, &mut views).await;
    Ok(paged(views, limit, "/executions", |e| e.id.clone()))
}

/// `GET /api/v1/executions/export`
#[utoipa::path(get, path = "/api/v1/executions/export", tag = "executions",
    summary = "Export executions with their step traces as NDJSON (one execution per line, newest first, at most 1,000)",
    params(("orchestration_id" = Option<String>, Query, description = "One orchestration"),
        ("status" = Option<String>, Query, description = "queued, running, succeeded, partially_succeeded, failed, cancelled"),
        ("limit" = Option<i64>, Query, description = "1..=1000, default 1000")),
    responses((status = 200, description = "`application/x-ndjson`; personal data redacted without `view_pii`")),
    security(("bearer" = [])))]
pub(crate) async fn export(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(q): ApiQuery<ExecutionQuery>,
) -> Result<Response, ApiError> {
    let status = status_filter(q.status.as_deref())?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be 1..=1000"));
    }
    if q.cursor.is_some() {
        return Err(ApiError::invalid(
            "an export takes no cursor: narrow it with orchestration_id and status",
        ));
    }
    let rows = core
        .store
        .list_executions(
            &p.tenant_id,
            q.orchestration_id.as_deref(),
            status,
            None,
            limit,
        )
        .await?;
    let mut body = String::new();
    for e in rows {
        let v = detail(&core, &p, e).await?;
        body.push_str(&serde_json::to_string(&v).unwrap_or_default());
        body.push('\n');
    }
    record_by(
        &core.store,
        &p,
        "execution.export",
        ("execution", "*"),
        json!({"orchestration_id": q.orchestration_id, "status": q.status}),
    )
    .await?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/x-ndjson"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"executions.ndjson\"",
            ),
        ],
        body,
    )
        .into_response())
}

/// `GET /api/v1/executions/{id}`
#[utoipa::path(get, path = "/api/v1/executions/{id}", tag = "executions", summary = "An execution with its status and step traces",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = ExecutionView)),
    security(("bearer" = [])))]
pub(crate) async fn get(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ExecutionView>, ApiError> {
    let e = core
        .store
        .execution(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("execution", &id))?;
    Ok(Json(detail(&core, &p, e).await?))
}

/// `POST /api/v1/executions/{id}/cancel`
#[utoipa::path(post, path = "/api/v1/executions/{id}/cancel", tag = "executions",
    summary = "Cancel: the running step finishes, no further step starts",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = ExecutionView), (status = 409, description = "It already ended", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn cancel(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ExecutionView>, ApiError> {
    require_operator(&p)?;
    let e = core
        .store
        .execution(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("execution", &id))?;
    let error =
        json!({"class": ErrorClass::Cancelled, "message": format!("cancelled by {}", p.actor())})
            .to_string();
    let tx = core.store.begin().await?;
    if !tx
        .update_execution(
            &e.id,
            ExecutionStatus::Cancelled,
            None,
            Some(&error),
            now_unix(),
        )
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "finished",
            format!("execution {id} already ended ({})", e.status),
        ));
    }
    record_by(&tx, &p, "execution.cancel", ("execution", &id), Value::Null).await?;
    tx.commit().await?;
    core.engine.cancel(&id);
    let e = core.store.execution(&p.tenant_id, &id).await?.unwrap_or(e);
    Ok(Json(detail(&core, &p, e).await?))
}

/// The body of `POST /executions/{id}/rerun`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunRequest {
    /// `start` (default) or `failed_step`: reuse the outputs of the steps that succeeded.
    #[serde(default)]
    from: Option<String>,
    /// `pinned` (default: the version the execution ran) or `current` (the newest).
    #[serde(default)]
    version: Option<String>,
    /// Wait up to this long for the re-run to end (0-60000).
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// A new queued execution re-running `e` (same parameters) on `version`.
pub(crate) fn rerun_row(
    e: &ExecutionRow,
    version: i64,
    trigger: &str,
    actor: &str,
) -> ExecutionRow {
    ExecutionRow {
        id: crate::support::ids::time_ordered_id("exe"),
        tenant_id: e.tenant_id.clone(),
        orchestration_id: e.orchestration_id.clone(),
        orchestration_name: e.orchestration_name.clone(),
        version,
        status: ExecutionStatus::Queued,
        parameters: e.parameters.clone(),
        output: None,
        error: None,
        trigger_type: trigger.into(),
        created_by: actor.to_owned(),
        created_at: now_unix(),
        started_at: None,
        finished_at: None,
        rerun_of: Some(e.id.clone()),
        dead_letter: None,
    }
}

/// Starts a re-run of an ended execution; the new execution.
async fn rerun_of(
    core: &Core,
    p: &Principal,
    e: &ExecutionRow,
    req: RerunRequest,
    trigger: &str,
) -> Result<ExecutionRow, ApiError> {
    core.quotas
        .ensure_storage(&core.store, &p.tenant_id)
        .await?;
    if !e.status.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_finished",
            format!("execution {} is still {}", e.id, e.status),
        ));
    }
    let from = req.from.as_deref().unwrap_or("start");
    let version = match req.version.as_deref().unwrap_or("pinned") {
        "pinned" => e.version,
        "current" => {
            core.store
                .orchestration(&p.tenant_id, &e.orchestration_id)
                .await?
                .ok_or_else(|| ApiError::not_found("orchestration", &e.orchestration_id))?
                .latest_version
        }
        other => {
            return Err(ApiError::invalid(format!(
                "version `{other}` is not pinned or current"
            )));
        }
    };
    if !matches!(from, "start" | "failed_step") {
        return Err(ApiError::invalid(format!(
            "from `{from}` is not start or failed_step"
        )));
    }
    let row = rerun_row(e, version, trigger, &p.actor());
    let tx = core.store.begin().await?;
    tx.create_execution(&row).await?;
    if from == "failed_step" {
        tx.copy_succeeded_steps(&e.id, &row.id).await?;
    }
    record_by(
        &tx,
        p,
        "execution.rerun",
        ("execution", &row.id),
        json!({"rerun_of": e.id, "from": from, "version": version}),
    )
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// Submits a created execution and waits up to `wait_ms` for its end (on
/// `finished`, subscribed before the row was created); the execution as it is then.
async fn wait_for(
    core: &Core,
    p: &Principal,
    row: ExecutionRow,
    wait_ms: u64,
    mut finished: tokio::sync::broadcast::Receiver<String>,
) -> Result<ExecutionView, ApiError> {
    core.engine.submit(&row.id);
    if wait_ms > 0 {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms.min(60_000));
        loop {
            match tokio::time::timeout_at(deadline, finished.recv()).await {
                Ok(Ok(done)) if done == row.id => break,
                Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                    continue;
                }
                _ => break,
            }
        }
    }
    let now = core
        .store
        .execution(&p.tenant_id, &row.id)
        .await?
        .unwrap_or(row);
    detail(core, p, now).await
}

/// `POST /api/v1/executions/{id}/rerun`
#[utoipa::path(post, path = "/api/v1/executions/{id}/rerun", tag = "executions",
    summary = "Re-run an ended execution: from the start or from the failed step, on the pinned or the current version",
    params(("id" = String, Path, description = "The resource id")), request_body = RerunRequest,
    responses((status = 201, body = ExecutionView), (status = 409, description = "Still running", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn rerun(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RerunRequest>,
) -> Result<Response, ApiError> {
    require_operator(&p)?;
    let e = core
        .store
        .execution(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("execution", &id))?;
    let wait = req.wait_ms.unwrap_or(0);
    let finished = core.engine.subscribe();
    let row = rerun_of(&core, &p, &e, req, "rerun").await?;
    Ok((
        StatusCode::CREATED,
        Json(wait_for(&core, &p, row, wait, finished).await?),
    )
        .into_response())
}

/// `GET /api/v1/dead-letters`
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "executions",
    summary = "Failed executions waiting for a decision (replay or discard), newest first",
    responses((status = 200, body = [ExecutionView])), security(("bearer" = [])))]
pub(crate) async fn dead_letters(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    let limit = page_limit(page.limit)?;
    let rows = core
        .store
        .dead_letters(&p.tenant_id, page.cursor_of("exe_")?, limit + 1)
        .await?;
    let mut views: Vec<ExecutionView> = rows.into_iter().map(|e| view(e, None)).collect();
    shown(&core, &p, &mut views).await;
    Ok(paged(views, limit, "/dead-letters", |e| e.id.clone()))
}

/// `POST /api/v1/dead-letters/{id}/replay`
#[utoipa::path(post, path = "/api/v1/dead-letters/{id}/replay", tag = "executions",
    summary = "Replay a dead letter from its failed step on its pinned version",
    params(("id" = String, Path, description = "The failed execution's id")),
    responses((status = 201, body = ExecutionView), (status = 404, description = "Not an open dead letter", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn replay(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    require_operator(&p)?;
    let e = core
        .store
        .execution(&p.tenant_id, &id)
        .await?
        .filter(|e| e.dead_letter.as_deref() == Some("open"))
        .ok_or_else(|| ApiError::not_found("dead letter", &id))?;
    if !core
        .store
        .close_dead_letter(&p.tenant_id, &id, "replayed")
        .await?
    {
        return Err(ApiError::not_found("dead letter", &id));
    }
    let req = RerunRequest {
        from: Some("failed_step".into()),
        version: None,
        wait_ms: None,
    };
    let finished = core.engine.subscribe();
    let row = rerun_of(&core, &p, &e, req, "replay").await?;
    Ok((
        StatusCode::CREATED,
        Json(wait_for(&core, &p, row, 0, finished).await?),
    )
        .into_response())
}

/// `POST /api/v1/dead-letters/{id}/discard`
#[utoipa::path(post, path = "/api/v1/dead-letters/{id}/discard", tag = "executions", summary = "Discard a dead letter (the execution stays failed)",
    params(("id" = String, Path, description = "The failed execution's id")),
    responses((status = 204, description = "Discarded"), (status = 404, description = "Not an open dead letter", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn discard(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_operator(&p)?;
    let tx = core.store.begin().await?;
    if !tx.close_dead_letter(&p.tenant_id, &id, "discarded").await? {
        return Err(ApiError::not_found("dead letter", &id));
    }
    record_by(
        &tx,
        &p,
        "execution.discard",
        ("execution", &id),
        Value::Null,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(execute))
        .routes(utoipa_axum::routes!(list))
        .routes(utoipa_axum::routes!(export))
        .routes(utoipa_axum::routes!(get))
        .routes(utoipa_axum::routes!(cancel))
        .routes(utoipa_axum::routes!(rerun))
        .routes(utoipa_axum::routes!(dead_letters))
        .routes(utoipa_axum::routes!(replay))
        .routes(utoipa_axum::routes!(discard))
}

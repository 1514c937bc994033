//! The CDM through the API: the explorer (`/cdm/domains`), record
//! validation, mapping suggestions (stateless, or written into a connector
//! draft as assumed fields a person confirms), and the records that failed
//! validation in orchestrations (`/dead-letters/items`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use dibop_runtime::support::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Core;
use crate::cdm::suggest::Suggestion;
use crate::cdm::{self, Field, Problem};
use crate::http::{ApiError, ApiJson, ApiPath, ApiQuery, Principal, page_limit, paged};
use crate::identity::Role;
use crate::identity::audit::record_by;

/// A connector that maps a field.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MappedBy {
    /// Catalogue id.
    id: String,
    slug: String,
    name: String,
    /// The version whose mappings were read (the latest published).
    version: String,
    /// Its operations mapping the domain.
    operations: Vec<String>,
}

/// A domain in the explorer's list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DomainSummary {
    name: String,
    title: String,
    /// `core`, `operational`, `financial` or `recycling`.
    group: String,
    version: String,
    description: String,
    fields: usize,
    required: Vec<String>,
    /// Fields classified `pii` or `sensitive_pii`.
    pii_fields: usize,
    /// Connectors in your catalogue with a mapping onto it.
    mapped_by: usize,
}

/// A field with who maps it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldView {
    #[serde(flatten)]
    field: Field,
    /// How many connectors map it (inbound).
    mapped_by: usize,
    /// Those connectors.
    connectors: Vec<String>,
}

/// A domain in full.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DomainView {
    name: String,
    title: String,
    group: String,
    version: String,
    description: String,
    /// Where the fields' meanings come from.
    source: String,
    fields: Vec<FieldView>,
    /// Connectors in your catalogue with a mapping onto it.
    mapped_by: Vec<MappedBy>,
    /// The JSON Schema (2020-12) with `x-pii` per property.
    #[schema(value_type = Object)]
    schema: Value,
}

/// Per domain: connectors with their mapped fields.
type Coverage = BTreeMap<String, Vec<(MappedBy, Vec<String>)>>;

/// Which connectors of the caller's catalogue map which domain fields.
async fn coverage(core: &Core, p: &Principal) -> Result<Coverage, ApiError> {
    let mut out: Coverage = BTreeMap::new();
    let filter = crate::store::CatalogueFilter::default();
    let mut after: Option<String> = None;
    loop {
        let rows = core
            .store
            .catalogue(
                &p.tenant_id,
                p.role == Role::PlatformAdmin,
                &filter,
                after.as_deref(),
                500,
            )
            .await?;
        for r in &rows {
            let Some(v) = core.store.version(&r.id, &r.latest_version).await? else {
                continue;
            };
            let d: Value = serde_json::from_str(&v.definition).unwrap_or(Value::Null);
            let mut per_domain: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
            for (op, m) in d["mappings"].as_object().into_iter().flatten() {
                let Some(domain) = m["domain"].as_str() else {
                    continue;
                };
                let entry = per_domain.entry(domain.to_owned()).or_default();
                entry.0.push(op.clone());
                for field in m["inbound"].as_object().into_iter().flat_map(|i| i.keys()) {
                    if !entry.1.contains(field) {
                        entry.1.push(field.clone());
                    }
                }
            }
            for (domain, (operations, fields)) in per_domain {
                out.entry(domain).or_default().push((
                    MappedBy {
                        id: r.id.clone(),
                        slug: r.slug.clone(),
                        name: r.name.clone(),
                        version: r.latest_version.clone(),
                        operations,
                    },
                    fields,
                ));
            }
        }
        match rows.last() {
            Some(r) if rows.len() == 500 => after = Some(r.id.clone()),
            _ => break,
        }
    }
    Ok(out)
}

/// `GET /api/v1/cdm/domains`
#[utoipa::path(get, path = "/api/v1/cdm/domains", tag = "cdm", summary = "The CDM's domains, with how many connectors map each",
    responses((status = 200, body = [DomainSummary])),
    security(("bearer" = [])))]
pub(crate) async fn list_domains(
    State(core): State<Arc<Core>>,
    p: Principal,
) -> Result<Json<Vec<DomainSummary>>, ApiError> {
    let coverage = coverage(&core, &p).await?;
    Ok(Json(
        cdm::domains()
            .iter()
            .map(|d| DomainSummary {
                name: d.name.clone(),
                title: d.title.clone(),
                group: d.group.clone(),
                version: d.version.clone(),
                description: d.description.clone(),
                fields: d.fields.len(),
                required: d
                    .fields
                    .iter()
                    .filter(|f| f.required)
                    .map(|f| f.name.clone())
                    .collect(),
                pii_fields: d.fields.iter().filter(|f| f.pii != cdm::Pii::None).count(),
                mapped_by: coverage.get(&d.name).map_or(0, Vec::len),
            })
            .collect(),
    ))
}

fn unknown_domain(name: &str) -> ApiError {
    ApiError::not_found("CDM domain", name).with_details(json!({"domains": cdm::domain_names()}))
}

/// `GET /api/v1/cdm/domains/{domain}`
#[utoipa::path(get, path = "/api/v1/cdm/domains/{domain}", tag = "cdm",
    summary = "A domain: fields with type, required flag, PII class, format, and the connectors mapping each",
    params(("domain" = String, Path, description = "e.g. vehicle")),
    responses((status = 200, body = DomainView)),
    security(("bearer" = [])))]
pub(crate) async fn get_domain(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<DomainView>, ApiError> {
    let d = cdm::domain(&name).ok_or_else(|| unknown_domain(&name))?;
    let coverage = coverage(&core, &p).await?;
    let mappers = coverage.get(&d.name).cloned().unwrap_or_default();
    let fields = d
        .fields
        .iter()
        .map(|f| {
            let connectors: Vec<String> = mappers
                .iter()
                .filter(|(_, fields)| fields.contains(&f.name))
                .map(|(m, _)| m.slug.clone())
                .collect();
            FieldView {
                field: f.clone(),
                mapped_by: connectors.len(),
                connectors,
            }
        })
        .collect();
    Ok(Json(DomainView {
        name: d.name.clone(),
        title: d.title.clone(),
        group: d.group.clone(),
        version: d.version.clone(),
        description: d.description.clone(),
        source: d.source.clone(),
        fields,
        mapped_by: mappers.into_iter().map(|(m, _)| m).collect(),
        schema: d.schema.clone(),
    }))
}

/// The body of `POST /cdm/validate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    domain: String,
    /// One record, or a list.
    #[schema(value_type = Object)]
    record: Value,
}

/// `POST /api/v1/cdm/validate`
#[utoipa::path(post, path = "/api/v1/cdm/validate", tag = "cdm", summary = "Check records against a domain: every field and rule broken",
    request_body = ValidateRequest,
    responses((status = 200, description = "`{valid, results: [{index, valid, problems}]}`"), (status = 404, body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn validate(
    _p: Principal,
    ApiJson(req): ApiJson<ValidateRequest>,
) -> Result<Json<Value>, ApiError> {
    let d = cdm::domain(&req.domain).ok_or_else(|| unknown_domain(&req.domain))?;
    let records = match req.record {
        Value::Array(items) => items,
        one => vec![one],
    };
    let results: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let problems: Vec<Problem> = cdm::validate(d, r);
            json!({"index": i, "valid": problems.is_empty(), "problems": problems})
        })
        .collect();
    let valid = results.iter().all(|r| r["valid"] == true);
    Ok(Json(json!({"valid": valid, "results": results})))
}

/// The body of a suggestion request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuggestRequest {
    /// The CDM domain to map onto.
    domain: String,
    /// A sample payload of the operation (a record, or a response).
    #[schema(value_type = Object)]
    sample: Value,
    /// Where the records are in the sample (jq, e.g. `.items`); default: the sample itself.
    records: Option<String>,
}

/// The answer to a suggestion request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuggestView {
    domain: String,
    suggestions: Vec<Suggestion>,
    /// Required fields of the domain nothing was found for.
    unmapped_required: Vec<String>,
}

async fn suggestions(core: &Core, req: &SuggestRequest) -> Result<SuggestView, ApiError> {
    let d = cdm::domain(&req.domain).ok_or_else(|| unknown_domain(&req.domain))?;
    let sample = match &req.records {
        Some(code) => core
            .expressions
            .eval_one(code, &req.sample)
            .await
            .map_err(|e| ApiError::invalid(format!("records `{code}`: {e}")))?,
        None => req.sample.clone(),
    };
    Ok(suggest_view(d, &sample))
}

/// Suggestions for `d` from a sample, with the required fields left unfound.
fn suggest_view(d: &cdm::Domain, sample: &Value) -> SuggestView {
    let suggestions = crate::cdm::suggest::suggest(d, sample);
    let unmapped_required = d
        .fields
        .iter()
        .filter(|f| f.required && !suggestions.iter().any(|s| s.field == f.name))
        .map(|f| f.name.clone())
        .collect();
    SuggestView {
        domain: d.name.clone(),
        suggestions,
        unmapped_required,
    }
}

/// `POST /api/v1/cdm/suggest`
#[utoipa::path(post, path = "/api/v1/cdm/suggest", tag = "cdm",
    summary = "Propose field mappings from a sample payload (each `assumed` until confirmed)",
    request_body = SuggestRequest,
    responses((status = 200, body = SuggestView), (status = 404, body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn suggest(
    State(core): State<Arc<Core>>,
    _p: Principal,
    ApiJson(req): ApiJson<SuggestRequest>,
) -> Result<Json<SuggestView>, ApiError> {
    Ok(Json(suggestions(&core, &req).await?))
}

/// The body of a suggestion from a live call.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveSuggestRequest {
    /// The CDM domain; default: the one the connector already maps the operation onto.
    domain: Option<String>,
    /// The operation's parameters for the sample call.
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    #[schema(value_type = Option<Object>)]
    parameters: serde_json::Map<String, Value>,
}

/// `POST /api/v1/connections/{id}/operations/{operation}/suggest`
#[utoipa::path(post, path = "/api/v1/connections/{id}/operations/{operation}/suggest", tag = "cdm",
    summary = "Call the operation once and propose field mappings from its answer (each `assumed`)",
    description = "The call is a normal invoke (same permissions, quota and call log); the records are found with the \
        operation's pagination `items_pointer` when it has one.",
    request_body = LiveSuggestRequest,
    params(("id" = String, Path, description = "The connection"), ("operation" = String, Path, description = "The operation id")),
    responses((status = 200, body = SuggestView), (status = 422, description = "No domain, or the sample call failed", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn suggest_from_call(
    State(core): State<Arc<Core>>,
    p: Principal,
    tenant: Option<axum::Extension<crate::store::Tenant>>,
    ApiPath((id, operation)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<LiveSuggestRequest>,
) -> Result<Json<SuggestView>, ApiError> {
    let resolved = crate::connections::execute::resolve_cached(&core, &p.tenant_id, &id).await?;
    let Some(op) = resolved.operation(&operation).cloned() else {
        return Err(ApiError::not_found("operation", &operation));
    };
    let domain = req
        .domain
        .clone()
        .or_else(|| {
            resolved.definition.mappings.get(&operation)?["domain"]
                .as_str()
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "`{operation}` maps onto no CDM domain yet: name one (`domain`)"
            ))
        })?;
    let d = cdm::domain(&domain).ok_or_else(|| unknown_domain(&domain))?;
    let body = serde_json::to_vec(&json!({"parameters": req.parameters})).unwrap_or_default();
    let Json(result) = crate::http::connections::invoke(
        State(core.clone()),
        p,
        tenant,
        ApiPath((id, operation.clone())),
        body.into(),
    )
    .await?;
    if result["ok"] != true {
        return Err(ApiError::invalid(format!(
            "the sample call of `{operation}` failed ({}): fix the call first",
            result["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("status {}", result["status"]))
        )));
    }
    let answer = &result["body"];
    let sample = op
        .pagination
        .as_ref()
        .and_then(|p| p.items_pointer.as_deref())
        .and_then(|ptr| answer.pointer(ptr))
        .unwrap_or(answer);
    Ok(Json(suggest_view(d, sample)))
}

fn require_admin(p: &Principal) -> Result<(), ApiError> {
    if p.role.is_admin() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only admins change connector definitions",
        ))
    }
}

/// Loads a draft, changes its working definition, validates and stores it
/// with its audit entry (`action`, `details`).
async fn change_draft(
    core: &Core,
    p: &Principal,
    id: &str,
    (action, details): (&str, Value),
    change: impl FnOnce(&mut Value) -> Result<(), ApiError>,
) -> Result<Value, ApiError> {
    let mut row = core
        .store
        .connector(&p.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("connector", id))?;
    let mut doc: Value = serde_json::from_str(&row.definition).unwrap_or(Value::Null);
    change(&mut doc)?;
    let problems = crate::catalogue::connector::validate(&doc);
    if !problems.is_empty() {
        return Err(
            ApiError::invalid("the changed definition is invalid").with_details(json!(problems))
        );
    }
    row.definition = doc.to_string();
    row.updated_at = crate::store::now_unix();
    let tx = core.store.begin().await?;
    if !tx.update_connector(&row).await? {
        return Err(ApiError::not_found("connector", id));
    }
    record_by(&tx, p, action, ("connector", id), details).await?;
    tx.commit().await?;
    Ok(doc)
}

/// `POST /api/v1/connectors/{id}/mappings/{operation}/suggest`
#[utoipa::path(post, path = "/api/v1/connectors/{id}/mappings/{operation}/suggest", tag = "cdm",
    summary = "Write suggested field mappings into a connector draft, each listed in `assumed` until confirmed",
    request_body = SuggestRequest,
    params(("id" = String, Path, description = "The connector"), ("operation" = String, Path, description = "The operation id")),
    responses((status = 200, body = SuggestView)),
    security(("bearer" = [])))]
pub(crate) async fn suggest_into_draft(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath((id, operation)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<SuggestRequest>,
) -> Result<Json<SuggestView>, ApiError> {
    require_admin(&p)?;
    let view = suggestions(&core, &req).await?;
    let proposed = view.suggestions.clone();
    let records = req.records.clone();
    let details = json!({"operation": operation, "fields": proposed.len()});
    change_draft(
        &core,
        &p,
        &id,
        ("connector.mapping_suggest", details),
        |doc| {
            let has_op = doc["operations"]
                .as_array()
                .is_some_and(|ops| ops.iter().any(|o| o["id"] == operation.as_str()));
            if !has_op {
                return Err(ApiError::not_found("operation", &operation));
            }
            let mapping = &mut doc["mappings"][&operation];
            if !mapping.is_object() {
                *mapping = json!({"domain": view.domain});
            }
            if mapping["domain"] != view.domain.as_str() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "other_domain",
                    format!(
                        "`{operation}` already maps onto {}: change it by editing the definition",
                        mapping["domain"]
                    ),
                ));
            }
            if let Some(r) = &records {
                mapping["records"] = json!(r);
            }
            let mut assumed: Vec<String> = mapping["assumed"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            for s in &proposed {
                // A field someone already mapped and confirmed stays as it is.
                let confirmed =
                    mapping["inbound"].get(&s.field).is_some() && !assumed.contains(&s.field);
                if confirmed {
                    continue;
                }
                mapping["inbound"][&s.field] = json!(s.expression);
                if !assumed.contains(&s.field) {
                    assumed.push(s.field.clone());
                }
            }
            mapping["assumed"] = json!(assumed);
            Ok(())
        },
    )
    .await?;
    Ok(Json(view))
}

/// The body of a confirmation.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// The assumed fields a person checked (the others stay assumed).
    fields: Vec<String>,
}

/// `POST /api/v1/connectors/{id}/mappings/{operation}/confirm`
#[utoipa::path(post, path = "/api/v1/connectors/{id}/mappings/{operation}/confirm", tag = "cdm",
    summary = "Confirm assumed field mappings of a connector draft",
    request_body = ConfirmRequest,
    params(("id" = String, Path, description = "The connector"), ("operation" = String, Path, description = "The operation id")),
    responses((status = 200, description = "The mapping after confirmation")),
    security(("bearer" = [])))]
pub(crate) async fn confirm(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath((id, operation)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<ConfirmRequest>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&p)?;
    let fields = req.fields.clone();
    let details = json!({"operation": operation, "fields": req.fields});
    let doc = change_draft(
        &core,
        &p,
        &id,
        ("connector.mapping_confirm", details),
        |doc| {
            let mapping = &mut doc["mappings"][&operation];
            if !mapping.is_object() {
                return Err(ApiError::not_found("mapping", &operation));
            }
            let assumed: Vec<String> = mapping["assumed"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let unknown: Vec<&String> = fields.iter().filter(|f| !assumed.contains(f)).collect();
            if !unknown.is_empty() {
                return Err(ApiError::invalid("only assumed fields can be confirmed")
                    .with_details(json!(
                        unknown
                            .iter()
                            .map(|f| json!({"field": f, "problem": "is not assumed"}))
                            .collect::<Vec<_>>()
                    )));
            }
            let left: Vec<String> = assumed
                .into_iter()
                .filter(|f| !fields.contains(f))
                .collect();
            if left.is_empty() {
                if let Some(m) = mapping.as_object_mut() {
                    m.remove("assumed");
                }
            } else {
                mapping["assumed"] = json!(left);
            }
            Ok(())
        },
    )
    .await?;
    Ok(Json(doc["mappings"][&operation].clone()))
}

/// A record in the dead-letter queue.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterItemView {
    id: String,
    execution_id: String,
    orchestration_id: String,
    step_path: String,
    domain: String,
    /// `inbound` or `outbound`.
    direction: String,
    /// The record (personal values redacted without `view_pii`).
    #[schema(value_type = Object)]
    record: Value,
    problems: Vec<Problem>,
    /// `open`, `discarded` or `replayed`.
    status: String,
    created_at: String,
    /// The execution that took the corrected record on, once replayed.
    replay_execution_id: Option<String>,
}

async fn item_views(
    core: &Core,
    p: &Principal,
    rows: Vec<crate::store::DeadLetterItem>,
) -> Vec<DeadLetterItemView> {
    let keys = if crate::cdm::pii::can_view(p) {
        None
    } else {
        Some(crate::cdm::pii::keys_for(core, &p.tenant_id).await)
    };
    rows.into_iter()
        .map(|r| {
            let mut record: Value = serde_json::from_str(&r.record).unwrap_or(Value::Null);
            if let Some(k) = &keys {
                crate::cdm::pii::redact(&mut record, k);
            }
            DeadLetterItemView {
                id: r.id,
                execution_id: r.execution_id,
                orchestration_id: r.orchestration_id,
                step_path: r.step_path,
                domain: r.domain,
                direction: r.direction,
                record,
                problems: serde_json::from_str(&r.problems).unwrap_or_default(),
                status: r.status,
                created_at: rfc3339(r.created_at),
                replay_execution_id: r.replay_execution_id,
            }
        })
        .collect()
}

/// Filters of `GET /dead-letters/items`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ItemQuery {
    /// `open` (default), `discarded`, `replayed`, or `all`.
    status: Option<String>,
    /// One execution's records.
    execution_id: Option<String>,
    /// 1..=500, default 100.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /api/v1/dead-letters/items`
#[utoipa::path(get, path = "/api/v1/dead-letters/items", tag = "executions",
    summary = "Records that failed CDM validation in orchestrations",
    params(ItemQuery),
    responses((status = 200, body = [DeadLetterItemView])),
    security(("bearer" = [])))]
pub(crate) async fn list_items(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(q): ApiQuery<ItemQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(q.limit)?;
    let status = match q.status.as_deref() {
        None | Some("open") => Some("open"),
        Some("discarded") => Some("discarded"),
        Some("replayed") => Some("replayed"),
        Some("all") => None,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "status `{other}` is not open, discarded, replayed or all"
            )));
        }
    };
    let page = crate::http::Page {
        limit: q.limit,
        cursor: q.cursor.clone(),
        group_id: None,
    };
    let rows = core
        .store
        .dead_letter_items(
            &p.tenant_id,
            status,
            q.execution_id.as_deref(),
            page.cursor_of("dli_")?,
            limit + 1,
        )
        .await?;
    let views = item_views(&core, &p, rows).await;
    Ok(paged(views, limit, "/dead-letters/items", |v| v.id.clone()))
}

/// `GET /api/v1/dead-letters/items/{id}`
#[utoipa::path(get, path = "/api/v1/dead-letters/items/{id}", tag = "executions", summary = "A dead-lettered record",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = DeadLetterItemView)),
    security(("bearer" = [])))]
pub(crate) async fn get_item(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeadLetterItemView>, ApiError> {
    let row = core
        .store
        .dead_letter_item(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("dead-lettered record", &id))?;
    let mut views = item_views(&core, &p, vec![row]).await;
    Ok(Json(views.remove(0)))
}

/// The body of `POST /dead-letters/items/{id}/replay`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayItemRequest {
    /// The corrected CDM record; default: the record as it was set aside
    /// (when what it broke has since been fixed elsewhere).
    #[schema(value_type = Option<Object>)]
    record: Option<Value>,
}

/// A replayed record and the execution that takes it on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayedItemView {
    item: DeadLetterItemView,
    /// The new execution: the steps before the mapping step reused, the
    /// mapping step's output the corrected record, the steps after it run.
    execution_id: String,
}

/// `POST /api/v1/dead-letters/items/{id}/replay`
#[utoipa::path(post, path = "/api/v1/dead-letters/items/{id}/replay", tag = "executions",
    summary = "Correct a dead-lettered record and send it on from its mapping step",
    description = "The (corrected) record is validated against its CDM domain; a valid one starts a new execution \
        of the same orchestration version that reuses the steps before the mapping step, takes the record as the \
        mapping step's only output, and runs the steps after it. Inbound records (`map_to_cdm`) only.",
    params(("id" = String, Path, description = "The resource id")), request_body = ReplayItemRequest,
    responses((status = 201, body = ReplayedItemView), (status = 404, description = "No open record with this id", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "An outbound record, or its execution is still running or gone", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The record still breaks its domain's rules (each in `details`)", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn replay_item(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    decides_dead_letters(&p)?;
    let req: ReplayItemRequest = crate::http::optional_json_body(&body)?.unwrap_or_default();
    let item = core
        .store
        .dead_letter_item(&p.tenant_id, &id)
        .await?
        .filter(|i| i.status == "open")
        .ok_or_else(|| ApiError::not_found("open dead-lettered record", &id))?;
    let conflict = |m: String| ApiError::new(StatusCode::CONFLICT, "not_replayable", m);
    if item.direction != "inbound" {
        return Err(conflict(
            "an outbound record is replayed by correcting its source data and re-running the execution".into(),
        ));
    }
    let domain = cdm::domain(&item.domain).ok_or_else(|| unknown_domain(&item.domain))?;
    let record = match req.record {
        Some(r) => r,
        None => serde_json::from_str(&item.record).unwrap_or(Value::Null),
    };
    let problems = cdm::validate(domain, &record);
    if !problems.is_empty() {
        return Err(ApiError::invalid(format!(
            "the record still breaks {} rule(s) of the {} domain",
            problems.len(),
            item.domain
        ))
        .with_details(json!(problems)));
    }
    let original = core
        .store
        .execution(&p.tenant_id, &item.execution_id)
        .await?
        .ok_or_else(|| {
            conflict(format!(
                "execution {} is gone (retention)",
                item.execution_id
            ))
        })?;
    if matches!(original.status.as_str(), "queued" | "running") {
        return Err(conflict(format!(
            "execution {} is still {}: replay it once it has ended",
            original.id, original.status
        )));
    }
    let steps = core.store.step_records(&original.id).await?;
    let Some(map_step) = steps.iter().find(|s| s.path == item.step_path) else {
        return Err(conflict(format!(
            "execution {} has no record of step {}",
            original.id, item.step_path
        )));
    };
    let row = crate::http::executions::rerun_row(&original, original.version, "replay", &p.actor());
    core.store.create_execution(&row).await?;
    core.store
        .copy_steps_before(&original.id, &row.id, map_step.seq)
        .await?;
    // The mapping step, done: its output is the corrected record alone.
    let output = json!({"domain": item.domain, "count": 1, "invalid": 0, "dead_letters": [],
                        "records": [record], "replayed_item": item.id});
    let mut done = map_step.clone();
    done.execution_id = row.id.clone();
    done.status = "running".into();
    core.store.start_step(&done).await?;
    core.store
        .finish_step(
            &row.id,
            &done.path,
            "succeeded",
            done.input.as_deref(),
            Some(&output.to_string()),
            None,
            1,
            crate::store::now_unix(),
            0,
        )
        .await?;
    if !core
        .store
        .replay_dead_letter_item(&p.tenant_id, &id, &record.to_string(), &row.id)
        .await?
    {
        return Err(ApiError::not_found("open dead-lettered record", &id));
    }
    core.engine.submit(&row.id);
    record_audit(&core, &p, &id, &row.id).await?;
    let item = core
        .store
        .dead_letter_item(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("dead-lettered record", &id))?;
    let item = item_views(&core, &p, vec![item]).await.remove(0);
    Ok(axum::response::IntoResponse::into_response((
        StatusCode::CREATED,
        Json(ReplayedItemView {
            item,
            execution_id: row.id,
        }),
    )))
}

async fn record_audit(
    core: &Core,
    p: &Principal,
    id: &str,
    execution: &str,
) -> Result<(), crate::store::StoreError> {
    record_by(
        &core.store,
        p,
        "dead_letter_item.replay",
        ("dead_letter_item", id),
        json!({"execution_id": execution}),
    )
    .await
}

fn decides_dead_letters(p: &Principal) -> Result<(), ApiError> {
    if matches!(p.role, Role::EnterpriseAdmin | Role::Operator) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "operators and admins decide on dead letters",
        ))
    }
}

/// `POST /api/v1/dead-letters/items/{id}/discard`
#[utoipa::path(post, path = "/api/v1/dead-letters/items/{id}/discard", tag = "executions", summary = "Discard a dead-lettered record",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = DeadLetterItemView), (status = 404, description = "No open record with this id", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn discard_item(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeadLetterItemView>, ApiError> {
    decides_dead_letters(&p)?;
    let tx = core.store.begin().await?;
    if !tx.discard_dead_letter_item(&p.tenant_id, &id).await? {
        return Err(ApiError::not_found("open dead-lettered record", &id));
    }
    record_by(
        &tx,
        &p,
        "dead_letter_item.discard",
        ("dead_letter_item", &id),
        Value::Null,
    )
    .await?;
    tx.commit().await?;
    get_item(State(core), p, ApiPath(id)).await
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(list_domains))
        .routes(utoipa_axum::routes!(get_domain))
        .routes(utoipa_axum::routes!(validate))
        .routes(utoipa_axum::routes!(suggest))
        .routes(utoipa_axum::routes!(suggest_from_call))
        .routes(utoipa_axum::routes!(suggest_into_draft))
        .routes(utoipa_axum::routes!(confirm))
        .routes(utoipa_axum::routes!(list_items))
        .routes(utoipa_axum::routes!(get_item))
        .routes(utoipa_axum::routes!(replay_item))
        .routes(utoipa_axum::routes!(discard_item))
}

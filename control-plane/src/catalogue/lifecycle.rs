//! The rules of publishing connectors, as pure functions: semantic
//! versions and bumps, the changes between two definitions (and which of
//! them break existing users), and the pre-publication checklist.
//!
//! A change **breaks** when something a connection or orchestration relies
//! on goes away or gets stricter: an operation removed, its method or path
//! changed, a parameter removed, retyped or made required, a response field
//! removed, a request field made required, an auth scheme removed or
//! changed, a CDM mapping removed. Additions (operations, optional
//! parameters, auth schemes) need at least a minor version; anything else
//! at least a patch.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A semantic version `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Incompatible changes.
    pub major: u32,
    /// Compatible additions.
    pub minor: u32,
    /// Fixes.
    pub patch: u32,
}

impl Version {
    /// The first published version.
    pub const FIRST: Version = Version {
        major: 1,
        minor: 0,
        patch: 0,
    };

    /// Parses `1.2.3`.
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.split('.').map(|p| {
            if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                p.parse::<u32>().ok()
            }
        });
        let v = Version {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next()??,
        };
        parts.next().is_none().then_some(v)
    }

    /// The version after this one for a bump.
    pub fn bumped(self, bump: Bump) -> Version {
        match bump {
            Bump::Major => Version {
                major: self.major + 1,
                minor: 0,
                patch: 0,
            },
            Bump::Minor => Version {
                minor: self.minor + 1,
                patch: 0,
                ..self
            },
            Bump::Patch => Version {
                patch: self.patch + 1,
                ..self
            },
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// How big a release is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Bump {
    /// Fixes only.
    Patch,
    /// Compatible additions.
    Minor,
    /// Breaking changes.
    Major,
}

impl Bump {
    /// `patch`, `minor` or `major`.
    pub fn as_str(self) -> &'static str {
        match self {
            Bump::Patch => "patch",
            Bump::Minor => "minor",
            Bump::Major => "major",
        }
    }
}

/// What kind of change, ordered by the bump it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Impact {
    /// Needs a patch.
    Patch,
    /// An addition: needs a minor version.
    Addition,
    /// Breaks existing users: needs a major version.
    Breaking,
}

/// One difference between two definitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Change {
    /// How it affects users.
    pub impact: Impact,
    /// Where, e.g. `operations.getVehicle.parameters.query.vin`.
    pub path: String,
    /// What changed.
    pub description: String,
}

impl Change {
    fn new(impact: Impact, path: impl Into<String>, description: impl Into<String>) -> Change {
        Change {
            impact,
            path: path.into(),
            description: description.into(),
        }
    }
}

/// The smallest bump that covers `changes`.
pub fn required_bump(changes: &[Change]) -> Bump {
    match changes.iter().map(|c| c.impact).max() {
        Some(Impact::Breaking) => Bump::Major,
        Some(Impact::Addition) => Bump::Minor,
        _ => Bump::Patch,
    }
}

fn by_key<'a>(list: &'a Value, key: &str) -> BTreeMap<String, &'a Map<String, Value>> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter_map(|o| Some((o.get(key)?.as_str()?.to_owned(), o)))
        .collect()
}

fn params(op: &Map<String, Value>) -> BTreeMap<String, &Map<String, Value>> {
    op.get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?;
            let place = p.get("in")?.as_str()?;
            Some((format!("{place}.{name}"), p))
        })
        .collect()
}

fn is_required(p: &Map<String, Value>) -> bool {
    p.get("in").and_then(Value::as_str) == Some("path")
        || p.get("required").and_then(Value::as_bool) == Some(true)
}

fn string_set(schema: Option<&Value>, key: &str) -> BTreeSet<String> {
    let v = schema.and_then(|s| s.get(key));
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        Some(Value::Object(o)) => o.keys().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

/// Every change from `old` to `new` (both valid definitions).
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    // Auth schemes, by type.
    let old_auth = by_key(&old["auth"]["schemes"], "type");
    let new_auth = by_key(&new["auth"]["schemes"], "type");
    for (kind, scheme) in &old_auth {
        let at = format!("auth.{kind}");
        match new_auth.get(kind) {
            None => changes.push(Change::new(
                Impact::Breaking,
                at,
                format!("auth scheme `{kind}` removed"),
            )),
            Some(s) if s != scheme => changes.push(Change::new(
                Impact::Breaking,
                at,
                format!("auth scheme `{kind}` changed"),
            )),
            Some(_) => {}
        }
    }
    for kind in new_auth.keys().filter(|k| !old_auth.contains_key(*k)) {
        changes.push(Change::new(
            Impact::Addition,
            format!("auth.{kind}"),
            format!("auth scheme `{kind}` added"),
        ));
    }
    // Operations, by id.
    let old_ops = by_key(&old["operations"], "id");
    let new_ops = by_key(&new["operations"], "id");
    for (id, op) in &old_ops {
        let at = format!("operations.{id}");
        let Some(now) = new_ops.get(id) else {
            changes.push(Change::new(
                Impact::Breaking,
                at,
                format!("operation `{id}` removed"),
            ));
            continue;
        };
        diff_operation(&mut changes, &at, op, now);
    }
    for id in new_ops.keys().filter(|k| !old_ops.contains_key(*k)) {
        changes.push(Change::new(
            Impact::Addition,
            format!("operations.{id}"),
            format!("operation `{id}` added"),
        ));
    }
    // CDM mappings, by operation.
    let old_maps = old["mappings"].as_object();
    let new_maps = new["mappings"].as_object();
    for (op, mapping) in old_maps.into_iter().flatten() {
        let at = format!("mappings.{op}");
        match new_maps.and_then(|m| m.get(op)) {
            None => changes.push(Change::new(
                Impact::Breaking,
                at,
                format!("the CDM mapping of `{op}` removed"),
            )),
            Some(m) if m["domain"] != mapping["domain"] => changes.push(Change::new(
                Impact::Breaking,
                at,
                format!("the CDM mapping of `{op}` now maps another domain"),
            )),
            Some(m) if m != mapping => {
                changes.push(Change::new(Impact::Patch, at, "CDM mapping changed"))
            }
            Some(_) => {}
        }
    }
    for op in new_maps
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| old_maps.is_none_or(|m| !m.contains_key(*k)))
    {
        changes.push(Change::new(
            Impact::Addition,
            format!("mappings.{op}"),
            format!("CDM mapping of `{op}` added"),
        ));
    }
    // Everything else is a patch-level edit.
    for key in [
        "name",
        "description",
        "category",
        "icon",
        "base_url",
        "documentation_url",
        "health_check",
        "resilience",
    ] {
        if old.get(key) != new.get(key) {
            changes.push(Change::new(Impact::Patch, key, format!("`{key}` changed")));
        }
    }
    if changes.is_empty() && old != new {
        changes.push(Change::new(Impact::Patch, "$", "definition edited"));
    }
    changes
}

fn diff_operation(
    changes: &mut Vec<Change>,
    at: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) {
    for key in ["method", "path"] {
        if old.get(key) != new.get(key) {
            changes.push(Change::new(
                Impact::Breaking,
                format!("{at}.{key}"),
                format!(
                    "{key} changed from {} to {}",
                    old.get(key).unwrap_or(&Value::Null),
                    new.get(key).unwrap_or(&Value::Null)
                ),
            ));
        }
    }
    let old_params = params(old);
    let new_params = params(new);
    for (key, p) in &old_params {
        let pat = format!("{at}.parameters.{key}");
        match new_params.get(key) {
            None => changes.push(Change::new(
                Impact::Breaking,
                pat,
                format!("parameter `{key}` removed"),
            )),
            Some(n) => {
                if !is_required(p) && is_required(n) {
                    changes.push(Change::new(
                        Impact::Breaking,
                        pat.clone(),
                        format!("parameter `{key}` made required"),
                    ));
                }
                if p.get("type") != n.get("type") {
                    changes.push(Change::new(
                        Impact::Breaking,
                        pat.clone(),
                        format!("parameter `{key}` changed type"),
                    ));
                }
                if is_required(p) && !is_required(n) {
                    changes.push(Change::new(
                        Impact::Addition,
                        pat,
                        format!("parameter `{key}` made optional"),
                    ));
                }
            }
        }
    }
    for (key, p) in new_params
        .iter()
        .filter(|(k, _)| !old_params.contains_key(*k))
    {
        let (impact, what) = if is_required(p) {
            (Impact::Breaking, "required parameter")
        } else {
            (Impact::Addition, "optional parameter")
        };
        changes.push(Change::new(
            impact,
            format!("{at}.parameters.{key}"),
            format!("{what} `{key}` added"),
        ));
    }
    // Response: fields that went away or stopped being guaranteed.
    let (old_resp, new_resp) = (old.get("response_schema"), new.get("response_schema"));
    let new_props = string_set(new_resp, "properties");
    let new_required = string_set(new_resp, "required");
    for field in string_set(old_resp, "properties") {
        if new_resp.is_some() && !new_props.contains(&field) {
            changes.push(Change::new(
                Impact::Breaking,
                format!("{at}.response.{field}"),
                format!("response field `{field}` removed"),
            ));
        }
    }
    for field in string_set(old_resp, "required") {
        if !new_required.contains(&field) {
            changes.push(Change::new(
                Impact::Breaking,
                format!("{at}.response.{field}"),
                format!("response field `{field}` no longer guaranteed"),
            ));
        }
    }
    // Request: fields callers must now send.
    let old_req_required = string_set(old.get("request_schema"), "required");
    for field in string_set(new.get("request_schema"), "required") {
        if !old_req_required.contains(&field) {
            changes.push(Change::new(
                Impact::Breaking,
                format!("{at}.request.{field}"),
                format!("request field `{field}` made required"),
            ));
        }
    }
    let counted = changes.iter().any(|c| c.path.starts_with(at));
    if !counted && old != new {
        changes.push(Change::new(
            Impact::Patch,
            at,
            "operation edited (description, schemas, pagination or retry)",
        ));
    }
}

/// One item of the pre-publication checklist.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckItem {
    /// Stable id: `overview`, `auth`, `operations`, `resilience`,
    /// `health_check`, `mappings`, `operation_tests`.
    pub item: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// What is missing, when it did not.
    pub problems: Vec<String>,
}

impl CheckItem {
    /// An item from its problems.
    pub fn from_problems(item: &'static str, problems: Vec<String>) -> CheckItem {
        CheckItem {
            item,
            passed: problems.is_empty(),
            problems,
        }
    }
}

/// Whether a URL's host is a placeholder left by an import.
pub fn is_placeholder_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.ends_with(".invalid")))
        .unwrap_or(false)
}

/// The checklist items that need no network (everything but
/// `operation_tests`), for a valid definition.
pub fn checklist(doc: &Value) -> Vec<CheckItem> {
    let mut items = Vec::new();
    let mut overview = Vec::new();
    for key in [
        "name",
        "description",
        "category",
        "base_url",
        "documentation_url",
    ] {
        if doc[key].as_str().is_none_or(|s| s.trim().is_empty()) {
            overview.push(format!("`{key}` is missing"));
        }
    }
    if let Some(url) = doc["base_url"].as_str()
        && is_placeholder_url(url)
    {
        overview.push(format!(
            "`base_url` {url} is a placeholder: set the system's real address"
        ));
    }
    items.push(CheckItem::from_problems("overview", overview));

    let schemes = doc["auth"]["schemes"].as_array().map_or(0, Vec::len);
    items.push(CheckItem::from_problems(
        "auth",
        if schemes == 0 {
            vec!["no auth scheme (use `type: none` for an open API)".into()]
        } else {
            vec![]
        },
    ));

    let ops = doc["operations"].as_array().cloned().unwrap_or_default();
    let complete = ops.iter().any(|o| {
        o["parameters"].as_array().is_some_and(|p| !p.is_empty())
            && o["response_schema"].is_object()
    });
    items.push(CheckItem::from_problems(
        "operations",
        if complete {
            vec![]
        } else {
            vec!["no operation declares both its parameters and a response schema".into()]
        },
    ));

    let mut resilience = Vec::new();
    for key in ["timeout_ms", "retries"] {
        if doc["resilience"].get(key).is_none() {
            resilience.push(format!("`resilience.{key}` is not set"));
        }
    }
    items.push(CheckItem::from_problems("resilience", resilience));

    let mut health = Vec::new();
    let check = doc["health_check"].as_str().unwrap_or_default();
    if let Some(op) = ops.iter().find(|o| o["id"] == check) {
        if !matches!(op["method"].as_str(), Some("GET" | "HEAD")) {
            health.push(format!(
                "the health check `{check}` must be a GET or HEAD operation (it runs unattended)"
            ));
        }
        for p in op["parameters"].as_array().into_iter().flatten() {
            if (p["required"] == Value::Bool(true) || p["in"] == "path")
                && p.get("default").is_none()
            {
                health.push(format!(
                    "the health check `{check}` needs parameter `{}` with no default",
                    p["name"].as_str().unwrap_or_default()
                ));
            }
        }
    } else {
        health.push(format!("`{check}` is not an operation"));
    }
    items.push(CheckItem::from_problems("health_check", health));

    let mut mappings = Vec::new();
    for (op, m) in doc["mappings"].as_object().into_iter().flatten() {
        let domain = m["domain"].as_str().unwrap_or_default();
        let Some(required) = crate::cdm::required_fields(domain) else {
            mappings.push(format!(
                "mappings.{op}: `{domain}` is not a CDM domain ({})",
                crate::cdm::domain_names()
            ));
            continue;
        };
        if let Some(inbound) = m["inbound"].as_object() {
            let missing: Vec<&str> = required
                .iter()
                .copied()
                .filter(|f| !inbound.contains_key(*f))
                .collect();
            if !missing.is_empty() {
                mappings.push(format!(
                    "mappings.{op}.inbound does not fill the {domain}'s required field(s) {}",
                    missing.join(", ")
                ));
            }
        }
        let assumed: Vec<&str> = m["assumed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !assumed.is_empty() {
            mappings.push(format!(
                "mappings.{op} has suggested field(s) nobody confirmed yet: {}",
                assumed.join(", ")
            ));
        }
    }
    items.push(CheckItem::from_problems("mappings", mappings));
    items
}

/// Whether `value` matches the parts of a JSON Schema that decide whether
/// a response is usable: `type`, `required`, `properties` and `items`,
/// recursively. Problems name the JSON Pointer where they are.
pub fn schema_problems(schema: &Value, value: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    check_schema(schema, value, "", &mut problems, 0);
    problems
}

fn check_schema(schema: &Value, value: &Value, at: &str, out: &mut Vec<String>, depth: u32) {
    if depth > 32 || out.len() >= 20 {
        return;
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let ok = types
            .iter()
            .any(|t| *t == actual || (*t == "number" && actual == "integer"));
        if !ok {
            out.push(format!(
                "{}: expected {}, got {actual}",
                if at.is_empty() { "/" } else { at },
                types.join(" or ")
            ));
            return;
        }
    }
    if let Value::Object(o) = value {
        for field in schema["required"].as_array().into_iter().flatten() {
            if let Some(f) = field.as_str()
                && !o.contains_key(f)
            {
                out.push(format!("{at}/{f}: required but missing"));
            }
        }
        for (key, sub) in schema["properties"].as_object().into_iter().flatten() {
            if let Some(v) = o.get(key) {
                check_schema(sub, v, &format!("{at}/{key}"), out, depth + 1);
            }
        }
    }
    if let (Value::Array(items), Some(sub)) = (value, schema.get("items"))
        && sub.is_object()
    {
        for (i, item) in items.iter().enumerate().take(50) {
            check_schema(sub, item, &format!("{at}/{i}"), out, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def() -> Value {
        crate::catalogue::connector::parse(include_str!("../../../catalogue/dms-sim.yaml")).unwrap()
    }

    #[test]
    fn versions_parse_and_bump() {
        let v = Version::parse("1.4.2").unwrap();
        assert_eq!(v.bumped(Bump::Patch).to_string(), "1.4.3");
        assert_eq!(v.bumped(Bump::Minor).to_string(), "1.5.0");
        assert_eq!(v.bumped(Bump::Major).to_string(), "2.0.0");
        for bad in ["1.4", "1.4.2.1", "a.b.c", "1..2", "-1.0.0", "1.0.0-beta"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
        assert!(Version::parse("1.10.0").unwrap() > Version::parse("1.9.9").unwrap());
    }

    #[test]
    fn an_unchanged_definition_has_no_changes() {
        assert!(diff(&def(), &def()).is_empty());
    }

    #[test]
    fn removing_an_operation_breaks() {
        let old = def();
        let mut new = old.clone();
        new["operations"].as_array_mut().unwrap().pop();
        let changes = diff(&old, &new);
        assert_eq!(required_bump(&changes), Bump::Major);
        assert!(changes[0].description.contains("createAppointment"));
    }

    #[test]
    fn a_parameter_made_required_breaks_an_optional_one_adds() {
        let old = def();
        let mut new = old.clone();
        new["operations"][1]["parameters"][2]["required"] = json!(true);
        let changes = diff(&old, &new);
        assert_eq!(required_bump(&changes), Bump::Major, "{changes:?}");
        assert!(changes[0].description.contains("made required"));

        let mut new = old.clone();
        new["operations"][1]["parameters"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "make", "in": "query", "type": "string"}));
        let changes = diff(&old, &new);
        assert_eq!(required_bump(&changes), Bump::Minor, "{changes:?}");
    }

    #[test]
    fn auth_changes_break_and_additions_are_minor() {
        let old = def();
        let mut new = old.clone();
        new["auth"]["schemes"][0]["header"] = json!("X-Key");
        assert_eq!(required_bump(&diff(&old, &new)), Bump::Major);
        let mut new = old.clone();
        new["operations"].as_array_mut().unwrap().push(
            json!({"id": "listLocations", "name": "Locations", "method": "GET", "path": "/api/v1/locations"}),
        );
        assert_eq!(required_bump(&diff(&old, &new)), Bump::Minor);
        let mut new = old.clone();
        new["description"] = json!("Better words.");
        let changes = diff(&old, &new);
        assert_eq!(required_bump(&changes), Bump::Patch);
        assert_eq!(changes.len(), 1);
    }

    #[test]
    fn a_removed_response_field_breaks() {
        let old = def();
        let mut new = old.clone();
        new["operations"][2]["response_schema"] =
            json!({"type": "object", "properties": {"vin": {"type": "string"}}});
        let changes = diff(&old, &new);
        assert_eq!(required_bump(&changes), Bump::Major);
        let text: Vec<&str> = changes.iter().map(|c| c.description.as_str()).collect();
        assert!(
            text.iter().any(|t| t.contains("`make` removed")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("`vin` no longer guaranteed")),
            "{text:?}"
        );
    }

    #[test]
    fn the_checklist_names_what_is_missing() {
        let items = checklist(&def());
        assert!(items.iter().all(|i| i.passed), "{items:#?}");
        let mut doc = def();
        doc.as_object_mut().unwrap().remove("documentation_url");
        doc["base_url"] = json!("https://api.example.invalid/v3");
        doc["resilience"] = json!({"timeout_ms": 1000});
        doc["mappings"] = json!({"getVehicle": {"domain": "customer", "inbound": {"email": ".email"},
            "assumed": ["email"]}});
        let failed: Vec<(&str, Vec<String>)> = checklist(&doc)
            .into_iter()
            .filter(|i| !i.passed)
            .map(|i| (i.item, i.problems))
            .collect();
        let names: Vec<&str> = failed.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["overview", "resilience", "mappings"], "{failed:#?}");
        assert!(failed[0].1.iter().any(|p| p.contains("placeholder")));
        assert!(failed[2].1[0].contains("required field(s) customer_id"));
        assert!(failed[2].1[1].contains("nobody confirmed yet: email"));
    }

    #[test]
    fn schema_checks_types_and_required_fields() {
        let schema = json!({"type": "object", "required": ["vin"], "properties": {
            "year": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}});
        assert!(schema_problems(&schema, &json!({"vin": "X", "year": 2020})).is_empty());
        let problems = schema_problems(&schema, &json!({"year": "2020", "tags": ["a", 1]}));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("/vin: required"));
        assert!(!schema_problems(&schema, &json!([1])).is_empty());
    }
}

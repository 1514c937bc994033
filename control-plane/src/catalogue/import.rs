//! Importing OpenAPI documents (Swagger 2.0, OpenAPI 3.0 and 3.1; JSON or
//! YAML) as connector drafts.
//!
//! Servers, security schemes, operations, parameters, request bodies and
//! response schemas are carried over; `$ref`s are resolved inside the
//! document only (an external reference is never fetched: it becomes a
//! warning). Recursive schemas are cut where they recurse; a reference
//! loop with nothing in between (`A → B → A`) is an error, and so is a
//! document that expands past a fixed budget once its references are
//! inlined (a "reference bomb"). What could not be carried over, or had to
//! be guessed, is listed as warnings so the draft can be refined.

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value, json};

/// Largest document accepted.
pub const MAX_BYTES: usize = 8 * 1024 * 1024;
/// Most operations one connector takes.
pub const MAX_OPERATIONS: usize = 1000;
/// Most JSON nodes the inlined schemas of one import may add up to.
const NODE_BUDGET: usize = 500_000;
/// Deepest a schema is inlined before it is cut.
const MAX_DEPTH: usize = 48;

/// Choices the document cannot make.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Base URL when the document's servers are relative or absent.
    pub base_url: Option<String>,
    /// Slug instead of one made from the title.
    pub slug: Option<String>,
    /// Category instead of `other`.
    pub category: Option<String>,
}

/// A draft definition and what to refine in it.
#[derive(Debug, Clone)]
pub struct Imported {
    /// A `dibop.connector/v1` definition.
    pub definition: Value,
    /// What was dropped or guessed.
    pub warnings: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Swagger2,
    OpenApi3,
}

struct Resolver<'a> {
    root: &'a Value,
    budget: usize,
    warnings: BTreeSet<String>,
    errors: Vec<String>,
}

fn pointer_of(reference: &str) -> Option<String> {
    let fragment = reference.strip_prefix('#')?;
    // `#/components/schemas/Pet%20Type`: percent-decode the fragment.
    let bytes = fragment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl<'a> Resolver<'a> {
    /// Follows a chain of pure references to the first real value, or
    /// `None` (with an error or warning) when it cannot.
    fn follow(&mut self, reference: &str) -> Option<(String, &'a Value)> {
        let mut seen = Vec::new();
        let mut current = reference.to_owned();
        loop {
            if !current.starts_with('#') {
                self.warnings.insert(format!(
                    "external reference `{current}` was not fetched: its schema is left open"
                ));
                return None;
            }
            if seen.contains(&current) {
                seen.push(current);
                self.errors.push(format!(
                    "cyclic $ref with nothing in between: {}",
                    seen.join(" → ")
                ));
                return None;
            }
            let Some(target) = pointer_of(&current).and_then(|p| self.root.pointer(&p)) else {
                self.errors.push(format!(
                    "$ref `{current}` points to nothing in the document"
                ));
                return None;
            };
            seen.push(current.clone());
            match target.get("$ref").and_then(Value::as_str) {
                Some(next) if target.as_object().is_some_and(|o| o.len() == 1) => {
                    current = next.to_owned();
                }
                _ => return Some((current, target)),
            }
        }
    }

    /// `value` with every local `$ref` inlined.
    fn inline(&mut self, value: &'a Value, stack: &mut Vec<String>) -> Value {
        if self.budget == 0 {
            return Value::Null;
        }
        self.budget -= 1;
        if stack.len() > MAX_DEPTH {
            self.warnings.insert(format!(
                "schemas nested deeper than {MAX_DEPTH} levels were cut"
            ));
            return json!({});
        }
        match value {
            Value::Object(o) => {
                if let Some(reference) = o.get("$ref").and_then(Value::as_str) {
                    let Some((pointer, target)) = self.follow(reference) else {
                        return json!({});
                    };
                    if stack.contains(&pointer) {
                        let name = pointer.rsplit('/').next().unwrap_or_default().to_owned();
                        let mut cut = json!({"description": format!("recursive: another {name} (not expanded)")});
                        if let Some(t) = target.get("type") {
                            cut["type"] = t.clone();
                        }
                        return cut;
                    }
                    stack.push(pointer);
                    let mut inlined = self.inline(target, stack);
                    stack.pop();
                    // Siblings of `$ref` (allowed in 3.1) refine the target.
                    if let Value::Object(m) = &mut inlined {
                        for (k, v) in o.iter().filter(|(k, _)| *k != "$ref") {
                            let v = self.inline(v, stack);
                            m.insert(k.clone(), v);
                        }
                    }
                    return inlined;
                }
                let mut out = Map::new();
                for (k, v) in o {
                    // Examples are documentation, often large: not inlined.
                    if matches!(k.as_str(), "example" | "examples" | "xml" | "externalDocs") {
                        continue;
                    }
                    let v = self.inline(v, stack);
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(|v| self.inline(v, stack)).collect()),
            other => other.clone(),
        }
    }

    /// A referenced or direct object (parameters, request bodies, responses).
    fn deref(&mut self, value: &'a Value) -> Option<&'a Value> {
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => self.follow(r).map(|(_, v)| v),
            None => Some(value),
        }
    }
}

fn parse(text: &str) -> Result<Value, String> {
    if text.len() > MAX_BYTES {
        return Err(format!(
            "the document is {} bytes: at most {MAX_BYTES} are accepted",
            text.len()
        ));
    }
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"));
    }
    serde_yaml_ng::from_str::<Value>(text).map_err(|e| format!("not valid JSON or YAML: {e}"))
}

/// `Swagger Petstore - OpenAPI 3.0` → `swagger-petstore-openapi-3-0`.
pub fn slugify(title: &str) -> String {
    let mut slug = String::new();
    for ch in title.chars() {
        if ch.is_ascii_alphanumeric() {
            slug.push(ch.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_end_matches('-').chars().take(64).collect();
    let slug = slug.trim_end_matches('-').to_owned();
    if slug.is_empty() {
        "imported-api".into()
    } else {
        slug
    }
}

fn clip(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut t: String = text.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Turns an OpenAPI document into a connector draft, or lists why not.
pub fn from_openapi(text: &str, options: &Options) -> Result<Imported, Vec<String>> {
    let doc = parse(text).map_err(|e| vec![e])?;
    let flavour = match (doc.get("swagger"), doc.get("openapi")) {
        (Some(Value::String(v)), _) if v == "2.0" => Flavour::Swagger2,
        (_, Some(Value::String(v))) if v.starts_with("3.0") || v.starts_with("3.1") => {
            Flavour::OpenApi3
        }
        (_, Some(v)) => {
            return Err(vec![format!(
                "OpenAPI version {v} is not supported: use Swagger 2.0, OpenAPI 3.0 or 3.1"
            )]);
        }
        (Some(v), _) => {
            return Err(vec![format!(
                "Swagger version {v} is not supported: use Swagger 2.0, OpenAPI 3.0 or 3.1"
            )]);
        }
        _ => {
            return Err(vec![
                "not an OpenAPI document: it has no top-level `openapi: 3.x` or `swagger: \"2.0\"`"
                    .into(),
            ]);
        }
    };
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return Err(vec![
            "the document has no `paths`: there is nothing to import".into(),
        ]);
    };
    let mut r = Resolver {
        root: &doc,
        budget: NODE_BUDGET,
        warnings: BTreeSet::new(),
        errors: Vec::new(),
    };
    let info = &doc["info"];
    let title = info["title"]
        .as_str()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let name = title.unwrap_or("Imported API");
    if title.is_none() {
        r.warnings
            .insert("info.title is missing: the connector is called `Imported API`".into());
    }
    let mut def = Map::new();
    def.insert("format".into(), json!(crate::catalogue::connector::FORMAT));
    def.insert("name".into(), json!(clip(name, 200)));
    def.insert(
        "slug".into(),
        json!(options.slug.clone().unwrap_or_else(|| slugify(name))),
    );
    let description = info["description"]
        .as_str()
        .filter(|d| !d.trim().is_empty())
        .unwrap_or(name);
    def.insert("description".into(), json!(clip(description, 2000)));
    def.insert(
        "category".into(),
        json!(options.category.clone().unwrap_or_else(|| "other".into())),
    );
    if let Some(icon) = info["x-logo"]["url"].as_str() {
        def.insert("icon".into(), json!(icon));
    }
    def.insert(
        "base_url".into(),
        json!(base_url(&doc, flavour, options, &mut r.warnings)),
    );
    if let Some(url) = doc["externalDocs"]["url"].as_str()
        && crate::catalogue::connector::is_http_url(url)
    {
        def.insert("documentation_url".into(), json!(url));
    } else {
        r.warnings.insert(
            "the document has no externalDocs.url: set documentation_url before publishing".into(),
        );
    }
    def.insert(
        "auth".into(),
        json!({"schemes": auth(&doc, flavour, &mut r)}),
    );

    let mut operations = Vec::new();
    let mut ids = HashSet::new();
    for (path, item) in paths {
        let Some(item) = r.deref(item) else { continue };
        let shared: Vec<&Value> = item["parameters"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        for (method, op) in item.as_object().into_iter().flatten() {
            let method_upper = method.to_ascii_uppercase();
            if !["GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH"]
                .contains(&method_upper.as_str())
            {
                if method == "trace" {
                    r.warnings.insert(format!("TRACE {path} was skipped"));
                }
                continue;
            }
            if operations.len() == MAX_OPERATIONS {
                return Err(vec![format!(
                    "the document has more than {MAX_OPERATIONS} operations: split it into several connectors"
                )]);
            }
            operations.push(operation(
                &mut r,
                flavour,
                path,
                &method_upper,
                op,
                &shared,
                &mut ids,
            ));
        }
    }
    if operations.is_empty() {
        return Err(vec!["the document's paths hold no operations".into()]);
    }
    if r.budget == 0 {
        return Err(vec![format!(
            "the document expands past {NODE_BUDGET} schema nodes once its $refs are inlined: \
             it is too large or a reference bomb"
        )]);
    }
    if !r.errors.is_empty() {
        r.errors.sort();
        r.errors.dedup();
        return Err(r.errors);
    }
    let health = operations
        .iter()
        .find(|o| {
            o["method"] == "GET"
                && o["parameters"].as_array().is_none_or(|ps| {
                    ps.iter()
                        .all(|p| p["in"] != "path" && p["required"] != true)
                })
        })
        .or_else(|| operations.iter().find(|o| o["method"] == "GET"))
        .or(operations.first())
        .and_then(|o| o["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    r.warnings.insert(format!(
        "health_check was set to `{health}`: make sure it is a cheap call without side effects"
    ));
    def.insert("health_check".into(), json!(health));
    def.insert(
        "resilience".into(),
        json!({"timeout_ms": 30000, "retries": {"max_attempts": 3, "initial_backoff_ms": 200, "max_backoff_ms": 5000}}),
    );
    def.insert("operations".into(), Value::Array(operations));
    Ok(Imported {
        definition: Value::Object(def),
        warnings: r.warnings.into_iter().collect(),
    })
}

fn base_url(
    doc: &Value,
    flavour: Flavour,
    options: &Options,
    warnings: &mut BTreeSet<String>,
) -> String {
    if let Some(url) = &options.base_url {
        return url.trim_end_matches('/').to_owned();
    }
    let (url, path) = match flavour {
        Flavour::OpenApi3 => {
            let server = &doc["servers"][0];
            let mut url = server["url"].as_str().unwrap_or("").to_owned();
            for (name, var) in server["variables"].as_object().into_iter().flatten() {
                if let Some(d) = var["default"].as_str() {
                    url = url.replace(&format!("{{{name}}}"), d);
                }
            }
            (url.clone(), url)
        }
        Flavour::Swagger2 => {
            let base_path = doc["basePath"].as_str().unwrap_or("").to_owned();
            match doc["host"].as_str() {
                Some(host) => {
                    let schemes: Vec<&str> = doc["schemes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let scheme = if schemes.contains(&"https") || schemes.is_empty() {
                        "https"
                    } else {
                        schemes[0]
                    };
                    (format!("{scheme}://{host}{base_path}"), base_path)
                }
                None => (base_path.clone(), base_path),
            }
        }
    };
    if crate::catalogue::connector::is_http_url(&url) {
        return url.trim_end_matches('/').to_owned();
    }
    let placeholder = format!(
        "https://api.example.invalid{}",
        if path.starts_with('/') {
            path.trim_end_matches('/')
        } else {
            ""
        }
    );
    warnings.insert(format!(
        "the document gives no absolute server URL: base_url is the placeholder {placeholder} \
         (import with ?base_url= or edit it before publishing)"
    ));
    placeholder
}

fn auth<'a>(doc: &'a Value, flavour: Flavour, r: &mut Resolver<'a>) -> Vec<Value> {
    let schemes = match flavour {
        Flavour::OpenApi3 => doc["components"]["securitySchemes"].as_object(),
        Flavour::Swagger2 => doc["securityDefinitions"].as_object(),
    };
    let mut found: Vec<(String, Value)> = Vec::new();
    for (name, scheme) in schemes.into_iter().flatten() {
        let Some(s) = r.deref(scheme) else { continue };
        let kind = s["type"].as_str().unwrap_or_default();
        let scopes = |flow: &Value| -> Vec<String> {
            flow["scopes"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        let mut add = |v: Value| found.push((name.clone(), v));
        match (
            kind,
            s["in"].as_str(),
            s["scheme"].as_str().map(str::to_ascii_lowercase).as_deref(),
        ) {
            ("apiKey", Some("header"), _) => add(json!({"type": "api_key", "header": s["name"]})),
            ("apiKey", Some("query"), _) => add(json!({"type": "api_key", "query": s["name"]})),
            ("apiKey", _, _) => {
                r.warnings.insert(format!(
                    "security scheme `{name}`: API keys in cookies are not supported"
                ));
            }
            ("basic", _, _) | ("http", _, Some("basic")) => add(json!({"type": "basic"})),
            ("http", _, Some("bearer")) => add(json!({"type": "bearer"})),
            ("http", _, other) => {
                r.warnings.insert(format!(
                    "security scheme `{name}`: HTTP scheme {other:?} is not supported"
                ));
            }
            ("oauth2", _, _) => {
                let flows: Vec<(&str, Value)> = match flavour {
                    Flavour::OpenApi3 => s["flows"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.as_str(), v.clone()))
                        .collect(),
                    Flavour::Swagger2 => {
                        let flow = match s["flow"].as_str() {
                            Some("application") => "clientCredentials",
                            Some("accessCode") => "authorizationCode",
                            Some("password") => "password",
                            _ => "implicit",
                        };
                        vec![(flow, s.clone())]
                    }
                };
                for (flow, f) in flows {
                    let token_url = f["tokenUrl"].as_str().unwrap_or_default();
                    match flow {
                        "clientCredentials" => add(
                            json!({"type": "oauth2_client_credentials", "token_url": token_url, "scopes": scopes(&f)}),
                        ),
                        "password" => add(
                            json!({"type": "oauth2_password", "token_url": token_url, "scopes": scopes(&f)}),
                        ),
                        "authorizationCode" => add(
                            json!({"type": "oauth2_authorization_code", "token_url": token_url,
                            "authorize_url": f["authorizationUrl"].as_str().unwrap_or_default(), "scopes": scopes(&f)}),
                        ),
                        _ => {
                            r.warnings.insert(format!(
                                "security scheme `{name}`: the OAuth2 implicit flow is not supported (use authorization code)"
                            ));
                        }
                    }
                }
            }
            ("openIdConnect", _, _) => {
                add(json!({"type": "openid_connect", "discovery_url": s["openIdConnectUrl"]}))
            }
            ("mutualTLS", _, _) => add(json!({"type": "mutual_tls"})),
            (other, _, _) => {
                r.warnings.insert(format!(
                    "security scheme `{name}`: type `{other}` is not supported"
                ));
            }
        }
    }
    let mut out: Vec<Value> = Vec::new();
    for (name, v) in found {
        let t = v["type"].clone();
        if out.iter().any(|o| o["type"] == t) {
            r.warnings.insert(format!(
                "security scheme `{name}` repeats auth type {t}: only the first is kept"
            ));
        } else {
            out.push(v);
        }
    }
    if out.is_empty() {
        out.push(json!({"type": "none"}));
    }
    // Empty token URLs (relative or missing in the document) stay visible.
    for s in &mut out {
        for key in ["token_url", "authorize_url"] {
            if s.get(key)
                .is_some_and(|v| v.as_str().is_none_or(str::is_empty))
            {
                s[key] = json!("https://auth.example.invalid/token");
                r.warnings.insert(format!(
                    "auth {}: {key} is missing in the document: a placeholder was set",
                    s["type"]
                ));
            }
        }
    }
    out
}

fn json_schema(content: &Value) -> Option<&Value> {
    let content = content.as_object()?;
    content
        .iter()
        .find(|(k, _)| k.starts_with("application/json"))
        .or_else(|| content.iter().find(|(k, _)| k.contains("json")))
        .map(|(_, v)| &v["schema"])
        .filter(|s| s.is_object())
}

fn operation_id(op: &Value, method: &str, path: &str, ids: &mut HashSet<String>) -> String {
    let base: String = match op["operationId"].as_str() {
        Some(id) if !id.trim().is_empty() => id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        _ => format!(
            "{}_{}",
            method.to_ascii_lowercase(),
            slugify(path).replace('-', "_")
        ),
    };
    let mut id = base.clone();
    let mut n = 2;
    while !ids.insert(id.clone()) {
        id = format!("{base}_{n}");
        n += 1;
    }
    id
}

fn operation<'a>(
    r: &mut Resolver<'a>,
    flavour: Flavour,
    path: &str,
    method: &str,
    op: &'a Value,
    shared: &[&'a Value],
    ids: &mut HashSet<String>,
) -> Value {
    let id = operation_id(op, method, path, ids);
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    let name = op["summary"]
        .as_str()
        .or(op["operationId"].as_str())
        .filter(|s| !s.trim().is_empty());
    out.insert(
        "name".into(),
        json!(clip(name.unwrap_or(&format!("{method} {path}")), 200)),
    );
    if let Some(d) = op["description"].as_str().filter(|d| !d.trim().is_empty()) {
        out.insert("description".into(), json!(clip(d, 2000)));
    }
    out.insert("method".into(), json!(method));
    out.insert("path".into(), json!(path));

    // Operation parameters override path-level ones of the same name and place.
    let mut raw: Vec<&Value> = Vec::new();
    for p in op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(shared.iter().copied())
    {
        let Some(p) = r.deref(p) else { continue };
        if !raw
            .iter()
            .any(|q| q["name"] == p["name"] && q["in"] == p["in"])
        {
            raw.push(p);
        }
    }
    let mut params = Vec::new();
    let mut request_schema = None;
    for p in raw {
        let pname = p["name"].as_str().unwrap_or_default();
        let place = p["in"].as_str().unwrap_or_default();
        match place {
            "path" | "query" | "header" => {
                let schema = if flavour == Flavour::OpenApi3 {
                    r.inline(&p["schema"], &mut Vec::new())
                } else {
                    p.clone()
                };
                let mut param = json!({"name": pname, "in": place});
                if let Some(t) = schema["type"].as_str().filter(|t| {
                    ["string", "integer", "number", "boolean", "array", "object"].contains(t)
                }) {
                    param["type"] = json!(t);
                }
                if place == "path" || p["required"] == true {
                    param["required"] = json!(true);
                }
                if let Some(d) = p["description"].as_str().filter(|d| !d.trim().is_empty()) {
                    param["description"] = json!(clip(d, 500));
                }
                if let Some(d) = schema.get("default").filter(|d| !d.is_null()) {
                    param["default"] = d.clone();
                }
                params.push(param);
            }
            "body" => {
                request_schema = Some(r.inline(&p["schema"], &mut Vec::new()));
                params.push(json!({"name": pname, "in": "body", "type": "object", "required": p["required"] == true}));
            }
            "cookie" => {
                r.warnings.insert(format!(
                    "{method} {path}: cookie parameter `{pname}` was skipped"
                ));
            }
            "formData" => {
                r.warnings.insert(format!(
                    "{method} {path}: form parameter `{pname}` was skipped (JSON bodies only)"
                ));
            }
            _ => {}
        }
    }
    if flavour == Flavour::OpenApi3
        && let Some(body) = op.get("requestBody").and_then(|b| r.deref(b))
    {
        match json_schema(&body["content"]) {
            Some(schema) => {
                request_schema = Some(r.inline(schema, &mut Vec::new()));
                params.push(
                    json!({"name": "body", "in": "body", "required": body["required"] == true}),
                );
            }
            None => {
                r.warnings.insert(format!(
                    "{method} {path}: its request body is not JSON and was skipped"
                ));
            }
        }
    }
    // Placeholders the document forgot to declare.
    for segment in path.split('{').skip(1) {
        let pname = segment.split('}').next().unwrap_or_default();
        if !params
            .iter()
            .any(|p| p["name"] == pname && p["in"] == "path")
        {
            r.warnings.insert(format!(
                "{method} {path}: path parameter `{pname}` was not declared: added as a string"
            ));
            params.push(json!({"name": pname, "in": "path", "type": "string", "required": true}));
        }
    }
    if !params.is_empty() {
        out.insert("parameters".into(), Value::Array(params));
    }
    if let Some(s) = request_schema.filter(Value::is_object) {
        out.insert("request_schema".into(), s);
    }
    // The first success response with a JSON schema.
    let responses = op["responses"].as_object();
    let mut codes: Vec<&String> = responses
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with('2'))
        .collect();
    codes.sort();
    if responses.is_some_and(|r| r.contains_key("default")) {
        codes.push(responses.unwrap().keys().find(|k| *k == "default").unwrap());
    }
    for code in codes {
        let Some(resp) = r.deref(&op["responses"][code.as_str()]) else {
            continue;
        };
        let schema = match flavour {
            Flavour::OpenApi3 => json_schema(&resp["content"]),
            Flavour::Swagger2 => Some(&resp["schema"]).filter(|s| s.is_object()),
        };
        if let Some(schema) = schema {
            let inlined = r.inline(schema, &mut Vec::new());
            if inlined.is_object() {
                out.insert("response_schema".into(), inlined);
            }
            break;
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(text: &str) -> Result<Imported, Vec<String>> {
        from_openapi(text, &Options::default())
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slugify("Swagger Petstore - OpenAPI 3.0"),
            "swagger-petstore-openapi-3-0"
        );
        assert_eq!(slugify("***"), "imported-api");
    }

    #[test]
    fn not_openapi() {
        for (text, expected) in [
            ("{\"hello\": 1}", "not an OpenAPI document"),
            ("openapi: 4.0.0\npaths: {}", "4.0.0"),
            ("swagger: '1.2'", "Swagger version"),
            ("{ nope", "not valid JSON"),
            ("openapi: 3.0.0\ninfo: {title: x}", "no `paths`"),
        ] {
            let err = import(text).unwrap_err();
            assert!(err[0].contains(expected), "{text}: {err:?}");
        }
    }

    #[test]
    fn pure_reference_loops_are_errors_and_recursion_is_cut() {
        let looped = r##"{"openapi": "3.0.0", "info": {"title": "L"}, "paths": {"/a": {"get": {"responses": {"200": {
            "description": "x", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}}}}}},
            "components": {"schemas": {"A": {"$ref": "#/components/schemas/B"}, "B": {"$ref": "#/components/schemas/A"}}}}"##;
        let err = import(looped).unwrap_err();
        assert!(err[0].contains("cyclic $ref"), "{err:?}");

        let recursive = r##"{"openapi": "3.1.0", "info": {"title": "Tree"}, "servers": [{"url": "https://t.example"}],
            "paths": {"/tree": {"get": {"responses": {"200": {"description": "x", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Node"}}}}}}}},
            "components": {"schemas": {"Node": {"type": "object", "properties": {"children": {"type": "array",
            "items": {"$ref": "#/components/schemas/Node"}}}}}}}"##;
        let imported = import(recursive).unwrap();
        let schema = &imported.definition["operations"][0]["response_schema"];
        assert_eq!(schema["properties"]["children"]["items"]["type"], "object");
        assert!(
            schema["properties"]["children"]["items"]["description"]
                .as_str()
                .unwrap()
                .contains("recursive")
        );
    }

    #[test]
    fn reference_bombs_are_refused() {
        // Each level references the previous one ten times: 10^8 nodes inlined.
        let mut schemas = Map::new();
        schemas.insert("L0".into(), json!({"type": "string"}));
        for i in 1..=8 {
            let props: Map<String, Value> = (0..10)
                .map(|j| {
                    (
                        format!("p{j}"),
                        json!({"$ref": format!("#/components/schemas/L{}", i - 1)}),
                    )
                })
                .collect();
            schemas.insert(
                format!("L{i}"),
                json!({"type": "object", "properties": props}),
            );
        }
        let doc = json!({"openapi": "3.0.0", "info": {"title": "Bomb"}, "paths": {"/b": {"get": {"responses": {"200": {
            "description": "x", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/L8"}}}}}}}},
            "components": {"schemas": schemas}});
        let err = import(&doc.to_string()).unwrap_err();
        assert!(err[0].contains("reference bomb"), "{err:?}");
    }

    #[test]
    fn dangling_and_external_references() {
        let doc = r##"{"openapi": "3.0.0", "info": {"title": "D"}, "paths": {"/a": {"get": {"responses": {"200": {
            "description": "x", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Nope"}}}}}}},
            "/b": {"get": {"responses": {"200": {"description": "x", "content": {"application/json": {
            "schema": {"$ref": "https://elsewhere.example/schemas.json#/Thing"}}}}}}}}}"##;
        let err = import(doc).unwrap_err();
        assert_eq!(
            err,
            ["$ref `#/components/schemas/Nope` points to nothing in the document"]
        );
    }
}

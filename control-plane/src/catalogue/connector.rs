//! Connector definitions: the documented, versioned file format (JSON or
//! YAML) that describes one external system, and its validation.
//!
//! Validation walks the document itself rather than stopping at the first
//! serde error, so a definition gets every problem at once, each with its
//! path (`operations[1].parameters[0].in`). The format is described in
//! `docs/connectors.md`; `catalogue/` holds the built-in definitions.

use std::collections::HashSet;

pub use crate::support::checker::Problem;
use crate::support::checker::{Checker, join};
use serde_json::{Map, Value};

/// The format identifier every definition starts with.
pub const FORMAT: &str = "dibop.connector/v1";

/// Auth scheme types and the credential fields each needs by default:
/// (type, [(field, secret)]).
pub const AUTH_TYPES: &[(&str, &[(&str, bool)])] = &[
    ("none", &[]),
    ("api_key", &[("api_key", true)]),
    ("basic", &[("username", false), ("password", true)]),
    ("bearer", &[("token", true)]),
    (
        "oauth2_client_credentials",
        &[("client_id", false), ("client_secret", true)],
    ),
    (
        "oauth2_password",
        &[
            ("client_id", false),
            ("client_secret", true),
            ("username", false),
            ("password", true),
        ],
    ),
    (
        "oauth2_authorization_code",
        &[
            ("client_id", false),
            ("client_secret", true),
            ("refresh_token", true),
        ],
    ),
    (
        "openid_connect",
        &[("client_id", false), ("client_secret", true)],
    ),
    (
        "dynamic_api_key",
        &[("username", false), ("password", true)],
    ),
    (
        "aws_sigv4",
        &[
            ("access_key_id", false),
            ("secret_access_key", true),
            ("session_token", true),
        ],
    ),
    (
        "mutual_tls",
        &[("client_certificate", false), ("client_key", true)],
    ),
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
const PARAM_IN: &[&str] = &["path", "query", "header", "body"];
const PARAM_TYPES: &[&str] = &["string", "integer", "number", "boolean", "array", "object"];
const PAGINATION: &[&str] = &[
    "none",
    "offset_limit",
    "page_number",
    "cursor",
    "link_header",
];

/// Parses JSON or YAML text into a document (YAML is a superset; JSON is
/// tried first for its better messages).
pub fn parse(text: &str) -> Result<Value, Problem> {
    if text.len() > 4 * 1024 * 1024 {
        return Err(Problem {
            path: "$".into(),
            problem: "the definition is larger than 4 MiB".into(),
        });
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Ok(v),
        Err(json_err) if text.trim_start().starts_with('{') => Err(Problem {
            path: "$".into(),
            problem: format!("not valid JSON: {json_err}"),
        }),
        Err(_) => serde_yaml_ng::from_str::<Value>(text).map_err(|e| Problem {
            path: "$".into(),
            problem: format!("not valid JSON or YAML: {e}"),
        }),
    }
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `s` is an absolute http(s) URL with a host.
pub fn is_http_url(s: &str) -> bool {
    HTTP_URL.is_match(s)
        && reqwest::Url::parse(s)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// What an http(s) URL given to the API looks like: a scheme, a host name
/// (or an IPv4 address) in ASCII, an optional port, then a path, query or
/// fragment without spaces or control characters. The OpenAPI document
/// states the same pattern.
pub const HTTP_URL_PATTERN: &str = concat!(
    r"^[Hh][Tt][Tt][Pp][Ss]?://",
    r"(([A-Za-z0-9-]+\.)*[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*",
    r"|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9]))",
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9][0-9]|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?",
    r"([/?#][^\s\x00-\x1f\x7f-\x9f]*)?$"
);

static HTTP_URL: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    // A constant pattern, compiled in `the_url_pattern_compiles_and_matches`.
    #[allow(clippy::expect_used)]
    regex::Regex::new(HTTP_URL_PATTERN).expect("the URL pattern compiles")
});

/// Validates a definition document; every problem, in document order.
pub fn validate(doc: &Value) -> Vec<Problem> {
    let mut c = Checker::default();
    let Some(root) = c.object(Some(doc), "$", true) else {
        return c.problems;
    };
    c.unknown(
        root,
        "",
        &[
            "format",
            "name",
            "slug",
            "description",
            "category",
            "icon",
            "base_url",
            "documentation_url",
            "auth",
            "operations",
            "health_check",
            "resilience",
            "mappings",
        ],
    );
    match c.string(root, "format", "", true) {
        Some(FORMAT) | None => {}
        Some(other) => c.add(
            "format",
            format!("`{other}` is not supported: use `{FORMAT}`"),
        ),
    }
    c.string(root, "name", "", true);
    if let Some(slug) = c.string(root, "slug", "", true)
        && !is_slug(slug)
    {
        c.add(
            "slug",
            "must be 1 to 64 lower-case letters, digits and dashes",
        );
    }
    c.string(root, "description", "", true);
    c.string(root, "category", "", true);
    c.string(root, "icon", "", false);
    for key in ["base_url", "documentation_url"] {
        if let Some(url) = c.string(root, key, "", key == "base_url")
            && !is_http_url(url)
        {
            c.add(key, format!("`{url}` is not an http(s) URL"));
        }
    }
    check_auth(&mut c, root);
    let operation_ids = check_operations(&mut c, root);
    if let Some(h) = c.string(root, "health_check", "", true)
        && !operation_ids.contains(h)
    {
        c.add(
            "health_check",
            format!("`{h}` is not the id of an operation"),
        );
    }
    check_resilience(&mut c, root);
    if let Some(mappings) = c.object(root.get("mappings"), "mappings", false) {
        for (op, mapping) in mappings {
            let at = format!("mappings.{op}");
            if !operation_ids.contains(op.as_str()) {
                c.add(&at, format!("`{op}` is not the id of an operation"));
            }
            if let Some(m) = c.object(Some(mapping), &at, true) {
                check_mapping(&mut c, m, &at);
            }
        }
    }
    c.problems
}

/// A mapping onto a CDM domain: the domain exists, inbound keys are its
/// fields, outbound keys are native field paths, every expression compiles,
/// and assumed fields are inbound ones.
fn check_mapping(c: &mut Checker, m: &Map<String, Value>, at: &str) {
    c.unknown(
        m,
        at,
        &["domain", "records", "inbound", "outbound", "assumed"],
    );
    let domain = c.string(m, "domain", at, true).and_then(|d| {
        let found = crate::cdm::domain(d);
        if found.is_none() {
            c.add(
                join(at, "domain"),
                format!("`{d}` is not a CDM domain ({})", crate::cdm::domain_names()),
            );
        }
        found
    });
    if let Some(r) = m.get("records") {
        match r.as_str().map(crate::expr::check) {
            Some(Ok(())) => {}
            Some(Err(e)) => c.add(join(at, "records"), format!("invalid expression: {e}")),
            None => c.add(
                join(at, "records"),
                "must be an expression selecting the native records, e.g. .items",
            ),
        }
    }
    for dir in ["inbound", "outbound"] {
        let Some(fields) = c.object(m.get(dir), &join(at, dir), false) else {
            continue;
        };
        for (field, expr) in fields {
            let path = format!("{at}.{dir}.{field}");
            match expr.as_str().map(str::trim) {
                Some(code) if !code.is_empty() => {
                    if let Err(e) = crate::expr::check(code) {
                        c.add(&path, format!("invalid expression: {e}"));
                    }
                }
                _ => c.add(&path, "must be a non-empty expression"),
            }
            if dir == "inbound"
                && let Some(d) = domain
                && d.field(field).is_none()
            {
                c.add(
                    &path,
                    format!("`{field}` is not a field of the {} domain", d.name),
                );
            }
            if dir == "outbound" && (field.is_empty() || field.split('.').any(str::is_empty)) {
                c.add(
                    &path,
                    "must be a native field name or a dotted path such as customer.email",
                );
            }
        }
    }
    if let Some(assumed) = m.get("assumed") {
        let inbound = m.get("inbound").and_then(Value::as_object);
        match assumed.as_array() {
            Some(list) => {
                for (i, f) in list.iter().enumerate() {
                    if !f
                        .as_str()
                        .is_some_and(|f| inbound.is_some_and(|m| m.contains_key(f)))
                    {
                        c.add(
                            format!("{at}.assumed[{i}]"),
                            "must name an inbound field of this mapping",
                        );
                    }
                }
            }
            None => c.add(join(at, "assumed"), "must be a list of inbound field names"),
        }
    }
}

fn check_auth(c: &mut Checker, root: &Map<String, Value>) {
    let Some(auth) = c.object(root.get("auth"), "auth", true) else {
        return;
    };
    c.unknown(auth, "auth", &["schemes"]);
    let schemes = c.array(auth, "schemes", "auth", true);
    if schemes.is_empty() && auth.contains_key("schemes") {
        c.add(
            "auth.schemes",
            "must list at least one scheme (use type: none for open APIs)",
        );
    }
    for (i, scheme) in schemes.iter().enumerate() {
        let at = format!("auth.schemes[{i}]");
        let Some(s) = c.object(Some(scheme), &at, true) else {
            continue;
        };
        let types: Vec<&str> = AUTH_TYPES.iter().map(|(t, _)| *t).collect();
        let Some(kind) = c.one_of(s, "type", &at, &types, true) else {
            continue;
        };
        let (extra, needs): (&[&str], &[&str]) = match kind.as_str() {
            "api_key" => (&["header", "prefix", "query"], &[]),
            "oauth2_client_credentials" | "oauth2_password" => {
                (&["token_url", "scopes", "client_auth"], &["token_url"])
            }
            "oauth2_authorization_code" => (
                &["token_url", "authorize_url", "scopes", "client_auth"],
                &["token_url", "authorize_url"],
            ),
            "openid_connect" => (&["discovery_url", "scopes"], &["discovery_url"]),
            "dynamic_api_key" => (
                &["method", "url", "pointer", "header", "prefix"],
                &["url", "pointer"],
            ),
            "aws_sigv4" => (&["region", "service"], &["region", "service"]),
            _ => (&[], &[]),
        };
        let mut known = vec!["type", "fields"];
        known.extend_from_slice(extra);
        c.unknown(s, &at, &known);
        for key in needs {
            c.string(s, key, &at, true);
        }
        if kind == "api_key" && s.contains_key("header") == s.contains_key("query") {
            c.add(
                &at,
                "an api_key scheme needs exactly one of `header` or `query`",
            );
        }
        if let Some(p) = s.get("pointer").and_then(Value::as_str)
            && !p.starts_with('/')
        {
            c.add(
                format!("{at}.pointer"),
                "must be a JSON Pointer starting with `/`",
            );
        }
        if s.contains_key("client_auth") {
            c.one_of(
                s,
                "client_auth",
                &at,
                &["client_secret_basic", "client_secret_post"],
                false,
            );
        }
        for (j, field) in c.array(s, "fields", &at, false).iter().enumerate() {
            let fat = format!("{at}.fields[{j}]");
            if let Some(f) = c.object(Some(field), &fat, true) {
                c.unknown(f, &fat, &["name", "label", "secret", "required"]);
                c.string(f, "name", &fat, true);
                for flag in ["secret", "required"] {
                    if f.get(flag).is_some_and(|v| !v.is_boolean()) {
                        c.add(format!("{fat}.{flag}"), "must be true or false");
                    }
                }
            }
        }
    }
}

fn check_operations(c: &mut Checker, root: &Map<String, Value>) -> HashSet<String> {
    let mut ids = HashSet::new();
    let operations = c.array(root, "operations", "", true);
    if operations.is_empty() && root.contains_key("operations") {
        c.add("operations", "must list at least one operation");
    }
    for (i, op) in operations.iter().enumerate() {
        let at = format!("operations[{i}]");
        let Some(o) = c.object(Some(op), &at, true) else {
            continue;
        };
        c.unknown(
            o,
            &at,
            &[
                "id",
                "name",
                "description",
                "method",
                "path",
                "parameters",
                "request_schema",
                "response_schema",
                "pagination",
                "safe_to_retry",
            ],
        );
        if let Some(id) = c.string(o, "id", &at, true)
            && !ids.insert(id.to_owned())
        {
            c.add(
                format!("{at}.id"),
                format!("`{id}` is used by another operation"),
            );
        }
        c.string(o, "name", &at, true);
        c.one_of(o, "method", &at, METHODS, true);
        let path = c.string(o, "path", &at, true).map(str::to_owned);
        if let Some(p) = &path
            && !p.starts_with('/')
        {
            c.add(format!("{at}.path"), "must start with `/`");
        }
        let mut path_params = HashSet::new();
        for (j, param) in c.array(o, "parameters", &at, false).iter().enumerate() {
            let pat = format!("{at}.parameters[{j}]");
            let Some(p) = c.object(Some(param), &pat, true) else {
                continue;
            };
            c.unknown(
                p,
                &pat,
                &["name", "in", "type", "required", "description", "default"],
            );
            let name = c.string(p, "name", &pat, true).map(str::to_owned);
            let place = c.one_of(p, "in", &pat, PARAM_IN, true);
            c.one_of(p, "type", &pat, PARAM_TYPES, false);
            if let (Some(n), Some("path")) = (&name, place.as_deref()) {
                path_params.insert(n.clone());
                if p.get("required") == Some(&Value::Bool(false)) {
                    c.add(
                        format!("{pat}.required"),
                        "path parameters are always required",
                    );
                }
            }
        }
        if let Some(p) = &path {
            for segment in p.split('{').skip(1) {
                let name = segment.split('}').next().unwrap_or_default();
                if !path_params.contains(name) {
                    c.add(
                        format!("{at}.path"),
                        format!("`{{{name}}}` has no parameter with `in: path`"),
                    );
                }
            }
        }
        for key in ["request_schema", "response_schema"] {
            if o.get(key).is_some_and(|s| !s.is_object()) {
                c.add(format!("{at}.{key}"), "must be a JSON Schema object");
            }
        }
        if let Some(p) = c.object(o.get("pagination"), &format!("{at}.pagination"), false) {
            let pat = format!("{at}.pagination");
            c.unknown(
                p,
                &pat,
                &[
                    "style",
                    "page_param",
                    "size_param",
                    "offset_param",
                    "limit_param",
                    "cursor_param",
                    "cursor_pointer",
                    "items_pointer",
                    "max_pages",
                ],
            );
            c.one_of(p, "style", &pat, PAGINATION, true);
            c.number(p, "max_pages", &pat, 1, 1000);
        }
    }
    ids
}

fn check_resilience(c: &mut Checker, root: &Map<String, Value>) {
    let Some(r) = c.object(root.get("resilience"), "resilience", true) else {
        return;
    };
    c.unknown(
        r,
        "resilience",
        &[
            "timeout_ms",
            "retries",
            "circuit_breaker",
            "rate_limit",
            "idempotency_header",
        ],
    );
    if let Some(h) = r.get("idempotency_header") {
        let ok = h.as_str().is_some_and(|h| {
            !h.is_empty()
                && h.len() <= 64
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !ok {
            c.add(
                "resilience.idempotency_header",
                "must be an HTTP header name (letters, digits, `-`, `_`), e.g. Idempotency-Key",
            );
        }
    }
    if c.number(r, "timeout_ms", "resilience", 1, 300_000)
        .is_none()
        && !r.contains_key("timeout_ms")
    {
        c.add("resilience.timeout_ms", "is required");
    }
    if let Some(x) = c.object(r.get("retries"), "resilience.retries", false) {
        c.unknown(
            x,
            "resilience.retries",
            &["max_attempts", "initial_backoff_ms", "max_backoff_ms"],
        );
        c.number(x, "max_attempts", "resilience.retries", 1, 10);
        c.number(x, "initial_backoff_ms", "resilience.retries", 1, 60_000);
        c.number(x, "max_backoff_ms", "resilience.retries", 1, 600_000);
    }
    if let Some(x) = c.object(
        r.get("circuit_breaker"),
        "resilience.circuit_breaker",
        false,
    ) {
        c.unknown(
            x,
            "resilience.circuit_breaker",
            &["failure_threshold", "open_for_ms"],
        );
        c.number(
            x,
            "failure_threshold",
            "resilience.circuit_breaker",
            1,
            1000,
        );
        c.number(x, "open_for_ms", "resilience.circuit_breaker", 1, 3_600_000);
    }
    if let Some(x) = c.object(r.get("rate_limit"), "resilience.rate_limit", false) {
        c.unknown(x, "resilience.rate_limit", &["requests_per_second"]);
        c.number(
            x,
            "requests_per_second",
            "resilience.rate_limit",
            1,
            100_000,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_pattern_compiles_and_matches() {
        for good in [
            "https://dms.dealer.example",
            "http://127.0.0.1:9100/api/v1?x=1#f",
            "HTTPS://Api.Example.com:443/v3/",
            "http://localhost:65535",
        ] {
            assert!(is_http_url(good), "{good}");
        }
        for bad in [
            "ftp://x.example",
            "https://",
            "https://a b.example",
            "https://x.example/a b",
            "https://x.example:65536",
            "https://1.2.3.4.5",
            "https://\u{e7}\u{1}\u{95}@x",
            "//x.example",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }

    #[test]
    fn the_dms_simulator_definition_is_valid() {
        let doc = parse(include_str!("../../../catalogue/dms-sim.yaml")).unwrap();
        let problems = validate(&doc);
        assert!(problems.is_empty(), "dms-sim.yaml: {problems:#?}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let doc = parse(
            r#"{
              "format": "dibop.connector/v1", "name": "x", "slug": "Bad Slug", "description": "d", "category": "dms",
              "base_url": "ftp://x", "colour": "red",
              "auth": {"schemes": [{"type": "api_key"}, {"type": "kerberos"}]},
              "operations": [
                {"id": "a", "name": "A", "method": "FETCH", "path": "/v/{vin}"},
                {"id": "a", "name": "B", "method": "GET", "path": "x", "parameters": [{"name": "p", "in": "cookie"}]}
              ],
              "health_check": "nope",
              "resilience": {"timeout_ms": 0}
            }"#,
        )
        .unwrap();
        let problems = validate(&doc);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "colour",
            "slug",
            "base_url",
            "auth.schemes[0]",
            "auth.schemes[1].type",
            "operations[0].method",
            "operations[0].path",
            "operations[1].id",
            "operations[1].path",
            "operations[1].parameters[0].in",
            "health_check",
            "resilience.timeout_ms",
        ] {
            assert!(
                paths.contains(&expected),
                "missing {expected} in {problems:#?}"
            );
        }
    }

    #[test]
    fn yaml_and_garbage() {
        assert!(
            parse("format: dibop.connector/v1\nname: x\n")
                .unwrap()
                .is_object()
        );
        assert!(parse("{ not json").is_err());
        assert!(!validate(&Value::String("hi".into())).is_empty());
    }
}

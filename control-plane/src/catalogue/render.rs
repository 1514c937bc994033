//! Turning a connector operation and its parameter values into an HTTP
//! request: the path template filled and percent-encoded, query and header
//! parameters placed, the body parameter as the JSON body, defaults
//! applied, and every missing required value or wrongly typed value named.

use serde_json::{Map, Value};

use super::definition::{Operation, ParamIn, ParamType};

/// A request ready to send (credentials are added by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// HTTP method.
    pub method: String,
    /// Full URL, query included.
    pub url: reqwest::Url,
    /// Header parameters.
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<Value>,
}

/// A value as it goes into a path, query or header.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn type_matches(kind: ParamType, v: &Value) -> bool {
    match kind {
        ParamType::String => v.is_string(),
        ParamType::Integer => {
            v.is_i64() || v.is_u64() || v.as_str().is_some_and(|s| s.parse::<i64>().is_ok())
        }
        ParamType::Number => v.is_number() || v.as_str().is_some_and(|s| s.parse::<f64>().is_ok()),
        ParamType::Boolean => v.is_boolean() || matches!(v.as_str(), Some("true" | "false")),
        ParamType::Array => v.is_array(),
        ParamType::Object => v.is_object(),
    }
}

/// Builds the request of operation `op` against `base_url` with `values`
/// by parameter name. Unknown parameter names are errors, so typos do not
/// silently vanish.
pub fn prepare(
    op: &Operation,
    base_url: &str,
    values: &Map<String, Value>,
) -> Result<Prepared, Vec<String>> {
    let mut problems = Vec::new();
    for name in values.keys() {
        if !op.parameters.iter().any(|p| p.name == *name) {
            problems.push(format!("`{name}` is not a parameter of this operation"));
        }
    }
    let mut path = op.path.clone();
    let mut query = Vec::new();
    let mut headers = Vec::new();
    let mut body = None;
    for p in &op.parameters {
        let name = p.name.as_str();
        let place = p.place.as_str();
        let Some(value) = values
            .get(name)
            .or(p.default.as_ref())
            .filter(|v| !v.is_null())
        else {
            if p.is_required() {
                problems.push(format!("parameter `{name}` ({place}) is required"));
            }
            continue;
        };
        if let Some(kind) = p.kind
            && !type_matches(kind, value)
        {
            problems.push(format!(
                "parameter `{name}` must be of type {}",
                kind.as_str()
            ));
            continue;
        }
        if p.place == ParamIn::Body {
            body = Some(value.clone());
            continue;
        }
        let texts: Vec<String> = match value {
            Value::Array(items) if p.place == ParamIn::Query => {
                items.iter().filter_map(text_of).collect()
            }
            v => match text_of(v) {
                Some(t) => vec![t],
                None => {
                    problems.push(format!(
                        "parameter `{name}` ({place}) must be a string, number or boolean"
                    ));
                    continue;
                }
            },
        };
        match p.place {
            ParamIn::Path => {
                let encoded: String = texts[0]
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                path = path.replace(&format!("{{{name}}}"), &encoded);
            }
            ParamIn::Header => headers.push((name.to_owned(), texts[0].clone())),
            ParamIn::Query | ParamIn::Body => {
                query.extend(texts.into_iter().map(|t| (name.to_owned(), t)))
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let joined = format!("{}{}", base_url.trim_end_matches('/'), path);
    let mut url =
        reqwest::Url::parse(&joined).map_err(|e| vec![format!("`{joined}` is not a URL: {e}")])?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(Prepared {
        method: op.method.as_str().to_owned(),
        url,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op() -> Operation {
        serde_json::from_value(json!({"id": "getVehicle", "name": "Get vehicle",
        "method": "GET", "path": "/v/{vin}/jobs",
        "parameters": [
            {"name": "vin", "in": "path", "type": "string"},
            {"name": "status", "in": "query", "type": "string", "default": "open"},
            {"name": "page", "in": "query", "type": "integer"},
            {"name": "X-Branch", "in": "header", "required": true}
        ]}))
        .unwrap()
    }

    #[test]
    fn fills_encodes_and_defaults() {
        let values = json!({"vin": "WVW ZZZ/1", "page": 2, "X-Branch": "north"});
        let p = prepare(
            &op(),
            "https://dms.example/api/",
            values.as_object().unwrap(),
        )
        .unwrap();
        assert_eq!(
            p.url.as_str(),
            "https://dms.example/api/v/WVW%20ZZZ%2F1/jobs?status=open&page=2"
        );
        assert_eq!(p.headers, [("X-Branch".to_owned(), "north".to_owned())]);
    }

    #[test]
    fn names_every_problem() {
        let values = json!({"page": "two", "colour": "red"});
        let problems =
            prepare(&op(), "https://dms.example", values.as_object().unwrap()).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("`colour` is not a parameter"));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`vin` (path) is required"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`page` must be of type integer"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`X-Branch` (header) is required"))
        );
    }
}

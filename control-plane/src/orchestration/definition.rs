//! Orchestration definitions (`dibop.orchestration/v1`, JSON or YAML) and
//! their validation: every problem at once, each with its path
//! (`steps[2].then[0].parameters.vin`), like connector definitions.
//!
//! Besides the shape, validation compiles every expression (jq) and every
//! `{{ … }}` template, and checks step references: `.steps.<id>` must name
//! a step that exists and runs before the reference. The format is
//! described in `docs/orchestrations.md`.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::catalogue::connector::Problem;
use crate::domain::ErrorClass;

/// The format identifier every definition starts with.
pub const FORMAT: &str = "dibop.orchestration/v1";

const PARAM_TYPES: &[&str] = &["string", "integer", "number", "boolean", "object", "array"];

struct Checker {
    /// The shared problem collector (`add`, `string`, `unknown`, …).
    base: crate::support::checker::Checker,
    /// Step ids in document order (the order they can run in).
    declared: Vec<String>,
    /// (path, step id referenced, declared ids before it).
    references: Vec<(String, String, usize)>,
}

impl std::ops::Deref for Checker {
    type Target = crate::support::checker::Checker;
    fn deref(&self) -> &Self::Target {
        &self.base
    }
}

impl std::ops::DerefMut for Checker {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.base
    }
}

impl Checker {
    fn number(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        path: &str,
        min: f64,
        max: f64,
    ) -> Option<f64> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    self.add(
                        format!("{path}.{key}"),
                        format!("must be a number from {min} to {max}"),
                    );
                    None
                }
            },
        }
    }

    /// Compiles an expression and records its step references.
    fn expression(&mut self, code: &str, path: &str) {
        if let Err(e) = crate::expr::check(code) {
            self.add(path, format!("invalid expression `{}`: {e}", clip(code)));
        }
        self.note_references(code, path);
    }

    /// Checks the `{{ … }}` parts of a string (and the references in them).
    fn template(&mut self, text: &str, path: &str) {
        match crate::expr::template_expressions(text) {
            Ok(parts) => {
                for code in parts {
                    self.expression(code, path);
                }
            }
            Err(e) => self.add(path, e),
        }
    }

    /// Parameter-like values: strings are templates, `{"expr": …}` an expression,
    /// anything else a literal (searched for templates inside).
    fn values(&mut self, v: &Value, path: &str) {
        match v {
            Value::String(s) => self.template(s, path),
            Value::Object(o) if o.len() == 1 && o.contains_key("expr") => {
                match o["expr"].as_str() {
                    Some(code) => self.expression(code, &format!("{path}.expr")),
                    None => self.add(format!("{path}.expr"), "must be a string"),
                }
            }
            Value::Object(o) => {
                for (k, v) in o {
                    self.values(v, &format!("{path}.{k}"));
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    self.values(v, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }

    fn note_references(&mut self, code: &str, path: &str) {
        for marker in ["$steps.", ".steps."] {
            let mut rest = code;
            while let Some(i) = rest.find(marker) {
                let after = &rest[i + marker.len()..];
                let id: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !id.is_empty() {
                    self.references
                        .push((path.to_owned(), id, self.declared.len()));
                }
                rest = after;
            }
        }
    }
}

fn clip(code: &str) -> String {
    if code.chars().count() > 60 {
        format!("{}…", code.chars().take(59).collect::<String>())
    } else {
        code.to_owned()
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses JSON or YAML into a document.
pub fn parse(text: &str) -> Result<Value, Problem> {
    crate::catalogue::connector::parse(text)
}

/// Validates a definition; every problem, in document order.
pub fn validate(doc: &Value) -> Vec<Problem> {
    let mut c = Checker {
        base: crate::support::checker::Checker::default(),
        declared: Vec::new(),
        references: Vec::new(),
    };
    let Some(root) = doc.as_object() else {
        c.add("$", "must be an object");
        return c.base.problems;
    };
    c.unknown(
        root,
        "$",
        &[
            "format",
            "name",
            "description",
            "parameters",
            "trigger",
            "steps",
            "on_error",
            "trace",
        ],
    );
    match root.get("trace") {
        None => {}
        Some(Value::Object(t)) => {
            c.unknown(t, "$.trace", &["payload_bytes"]);
            c.number(
                t,
                "payload_bytes",
                "$.trace",
                1024.0,
                crate::orchestration::engine::MAX_STORED_OUTPUT as f64,
            );
        }
        Some(_) => c.add(
            "$.trace",
            "must be an object such as {payload_bytes: 65536}",
        ),
    }
    match c.string(root, "format", "$", true) {
        Some(FORMAT) | None => {}
        Some(other) => c.add(
            "$.format",
            format!("`{other}` is not supported: use `{FORMAT}`"),
        ),
    }
    c.string(root, "name", "$", true);
    c.string(root, "description", "$", false);
    check_parameters(&mut c, root.get("parameters"));
    check_trigger(&mut c, root.get("trigger"));
    match root.get("steps") {
        Some(Value::Array(steps)) if !steps.is_empty() => check_steps(&mut c, steps, "$.steps"),
        Some(Value::Array(_)) => c.add("$.steps", "must hold at least one step"),
        None => c.add("$.steps", "is required"),
        Some(_) => c.add("$.steps", "must be a list"),
    }
    if let Some(handler) = root.get("on_error") {
        check_handler(&mut c, handler, "$.on_error");
    }
    // References: to an existing step that runs earlier.
    let refs = std::mem::take(&mut c.references);
    for (path, id, before) in refs {
        match c.declared.iter().position(|d| *d == id) {
            None => c.add(path, format!("refers to step `{id}`, which does not exist")),
            Some(i) if i >= before => c.add(
                path,
                format!("refers to step `{id}`, which has not run yet at this point"),
            ),
            Some(_) => {}
        }
    }
    c.base.problems
}

fn check_parameters(c: &mut Checker, v: Option<&Value>) {
    let Some(v) = v else { return };
    let Some(list) = v.as_array() else {
        c.add("$.parameters", "must be a list");
        return;
    };
    let mut names = HashSet::new();
    for (i, p) in list.iter().enumerate() {
        let at = format!("$.parameters[{i}]");
        let Some(p) = p.as_object() else {
            c.add(&at, "must be an object");
            continue;
        };
        c.unknown(
            p,
            &at,
            &["name", "type", "required", "default", "description"],
        );
        if let Some(name) = c.string(p, "name", &at, true) {
            if !is_id(name) {
                c.add(
                    format!("{at}.name"),
                    "must be letters, digits and `_`, starting with a letter",
                );
            }
            if !names.insert(name.to_owned()) {
                c.add(format!("{at}.name"), format!("`{name}` is declared twice"));
            }
        }
        let kind = c.string(p, "type", &at, true);
        if let Some(k) = kind
            && !PARAM_TYPES.contains(&k)
        {
            c.add(
                format!("{at}.type"),
                format!("`{k}` is not one of {}", PARAM_TYPES.join(", ")),
            );
        }
        if let (Some(k), Some(d)) = (kind, p.get("default"))
            && !type_matches(k, d)
        {
            c.add(format!("{at}.default"), format!("must be of type {k}"));
        }
        if p.get("required").is_some_and(|r| !r.is_boolean()) {
            c.add(format!("{at}.required"), "must be true or false");
        }
    }
}

/// Whether a JSON value is of a parameter type.
pub fn type_matches(kind: &str, v: &Value) -> bool {
    match kind {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => false,
    }
}

fn check_trigger(c: &mut Checker, v: Option<&Value>) {
    let Some(v) = v else { return };
    let at = "$.trigger";
    let Some(t) = v.as_object() else {
        c.add(at, "must be an object");
        return;
    };
    match c.string(t, "type", at, true) {
        Some("manual") => c.unknown(t, at, &["type"]),
        Some("schedule") => {
            c.unknown(t, at, &["type", "cron", "timezone", "overlap"]);
            if let Some(cron) = c.string(t, "cron", at, true)
                && let Err(e) = crate::orchestration::cron::Schedule::parse(cron)
            {
                c.add(format!("{at}.cron"), e);
            }
            if let Some(tz) = c.string(t, "timezone", at, false)
                && crate::orchestration::cron::zone(tz).is_none()
            {
                c.add(
                    format!("{at}.timezone"),
                    format!("`{tz}` is not a time zone (e.g. Europe/Berlin, UTC)"),
                );
            }
            if let Some(o) = c.string(t, "overlap", at, false)
                && !matches!(o, "skip" | "queue")
            {
                c.add(format!("{at}.overlap"), "must be skip or queue");
            }
        }
        Some("webhook") => {
            c.unknown(t, at, &["type", "auth"]);
            if let Some(a) = c.string(t, "auth", at, false)
                && !matches!(a, "secret" | "hmac")
            {
                c.add(format!("{at}.auth"), "must be secret or hmac");
            }
        }
        Some(other) => c.add(
            format!("{at}.type"),
            format!("`{other}` is not one of manual, schedule, webhook"),
        ),
        None => {}
    }
}

fn check_handler(c: &mut Checker, v: &Value, at: &str) {
    match v {
        Value::String(s) if matches!(s.as_str(), "fail" | "continue") => {}
        Value::Object(o) => {
            c.unknown(o, at, &["steps"]);
            match o.get("steps") {
                Some(Value::Array(steps)) if !steps.is_empty() => {
                    check_steps(c, steps, &format!("{at}.steps"))
                }
                _ => c.add(format!("{at}.steps"), "must list the handler's steps"),
            }
        }
        _ => c.add(at, "must be fail, continue or {\"steps\": [...]}"),
    }
}

fn check_steps(c: &mut Checker, steps: &[Value], at: &str) {
    if steps.len() > 500 {
        c.add(at, "more than 500 steps");
        return;
    }
    for (i, step) in steps.iter().enumerate() {
        check_step(c, step, &format!("{at}[{i}]"));
    }
}

fn nested(c: &mut Checker, s: &Map<String, Value>, key: &str, at: &str, required: bool) {
    match s.get(key) {
        Some(Value::Array(steps)) if !steps.is_empty() => {
            check_steps(c, steps, &format!("{at}.{key}"))
        }
        None if !required => {}
        _ => c.add(format!("{at}.{key}"), "must be a non-empty list of steps"),
    }
}

fn check_step(c: &mut Checker, step: &Value, at: &str) {
    let Some(s) = step.as_object() else {
        c.add(at, "must be an object");
        return;
    };
    let id = c.string(s, "id", at, true).map(str::to_owned);
    if let Some(id) = &id {
        if !is_id(id) {
            c.add(
                format!("{at}.id"),
                "must be letters, digits and `_`, starting with a letter",
            );
        } else if c.declared.contains(id) {
            c.add(
                format!("{at}.id"),
                format!("`{id}` is used by another step"),
            );
        }
    }
    let kind = c.string(s, "type", at, true).map(str::to_owned);
    let common = [
        "id",
        "type",
        "description",
        "retry",
        "on_error",
        "timeout_ms",
    ];
    use crate::domain::StepKind;
    let extra: &[&str] = match kind.as_deref().map(str::parse::<StepKind>) {
        Some(Ok(StepKind::Call)) => &["connection", "operation", "parameters"],
        Some(Ok(StepKind::Transform)) => &["expression"],
        Some(Ok(StepKind::Branch)) => &["if", "then", "else", "switch", "cases", "default"],
        Some(Ok(StepKind::Foreach)) => &["items", "steps", "mode", "concurrency", "max_items"],
        Some(Ok(StepKind::Parallel)) => &["branches"],
        Some(Ok(StepKind::Delay)) => &["ms"],
        Some(Ok(StepKind::CallOrchestration)) => &["orchestration", "parameters", "wait"],
        Some(Ok(StepKind::Set)) => &["values"],
        Some(Ok(StepKind::Fail)) => &["message"],
        Some(Ok(StepKind::MapToCdm | StepKind::MapFromCdm)) => {
            &["connection", "operation", "from", "on_invalid"]
        }
        Some(Err(unknown)) => {
            c.add(
                format!("{at}.type"),
                format!(
                    "`{}` is not one of {}",
                    unknown.given,
                    unknown.accepted.join(", ")
                ),
            );
            return;
        }
        None => return,
    };
    let mut known: Vec<&str> = common.to_vec();
    known.extend_from_slice(extra);
    c.unknown(s, at, &known);
    c.number(s, "timeout_ms", at, 1.0, 3_600_000.0);
    if let Some(r) = s.get("retry") {
        check_retry(c, r, &format!("{at}.retry"));
    }
    if let Some(h) = s.get("on_error") {
        check_handler(c, h, &format!("{at}.on_error"));
    }
    match kind.as_deref() {
        Some("call") => {
            c.string(s, "connection", at, true);
            c.string(s, "operation", at, true);
            if let Some(p) = s.get("parameters") {
                if p.is_object() {
                    c.values(p, &format!("{at}.parameters"));
                } else {
                    c.add(format!("{at}.parameters"), "must be an object");
                }
            }
        }
        Some("transform") => {
            if let Some(e) = c.string(s, "expression", at, true) {
                c.expression(e, &format!("{at}.expression"));
            }
        }
        Some("map_to_cdm" | "map_from_cdm") => {
            c.string(s, "connection", at, true);
            c.string(s, "operation", at, true);
            if let Some(e) = c.string(s, "from", at, true) {
                c.expression(e, &format!("{at}.from"));
            }
            if let Some(v) = c.string(s, "on_invalid", at, false)
                && !matches!(v, "dead_letter" | "fail" | "skip")
            {
                c.add(
                    format!("{at}.on_invalid"),
                    "must be dead_letter, fail or skip",
                );
            }
        }
        Some("branch") => match (s.get("if"), s.get("switch")) {
            (Some(_), Some(_)) => c.add(at, "a branch has either `if` or `switch`, not both"),
            (None, None) => c.add(
                at,
                "a branch needs `if` (with then/else) or `switch` (with cases)",
            ),
            (Some(_), None) => {
                if let Some(e) = c.string(s, "if", at, true) {
                    c.expression(e, &format!("{at}.if"));
                }
                nested(c, s, "then", at, true);
                nested(c, s, "else", at, false);
            }
            (None, Some(_)) => {
                if let Some(e) = c.string(s, "switch", at, true) {
                    c.expression(e, &format!("{at}.switch"));
                }
                match s.get("cases").and_then(Value::as_object) {
                    Some(cases) if !cases.is_empty() => {
                        for (k, v) in cases {
                            match v.as_array() {
                                Some(steps) if !steps.is_empty() => {
                                    check_steps(c, steps, &format!("{at}.cases.{k}"))
                                }
                                _ => c.add(
                                    format!("{at}.cases.{k}"),
                                    "must be a non-empty list of steps",
                                ),
                            }
                        }
                    }
                    _ => c.add(format!("{at}.cases"), "must map values to lists of steps"),
                }
                nested(c, s, "default", at, false);
            }
        },
        Some("foreach") => {
            if let Some(e) = c.string(s, "items", at, true) {
                c.expression(e, &format!("{at}.items"));
            }
            if let Some(m) = c.string(s, "mode", at, false)
                && !matches!(m, "sequential" | "parallel")
            {
                c.add(format!("{at}.mode"), "must be sequential or parallel");
            }
            c.number(s, "concurrency", at, 1.0, 64.0);
            c.number(s, "max_items", at, 1.0, 100_000.0);
            nested(c, s, "steps", at, true);
        }
        Some("parallel") => match s.get("branches").and_then(Value::as_array) {
            Some(branches) if branches.len() >= 2 => {
                for (i, b) in branches.iter().enumerate() {
                    match b.as_array() {
                        Some(steps) if !steps.is_empty() => {
                            check_steps(c, steps, &format!("{at}.branches[{i}]"))
                        }
                        _ => c.add(
                            format!("{at}.branches[{i}]"),
                            "must be a non-empty list of steps",
                        ),
                    }
                }
            }
            _ => c.add(
                format!("{at}.branches"),
                "must list at least two branches of steps",
            ),
        },
        Some("delay") => {
            let given = s.contains_key("ms");
            let ms = c.number(s, "ms", at, 0.0, 86_400_000.0);
            if ms.is_none() && !given {
                c.add(format!("{at}.ms"), "is required");
            }
        }
        Some("call_orchestration") => {
            c.string(s, "orchestration", at, true);
            if let Some(p) = s.get("parameters") {
                c.values(p, &format!("{at}.parameters"));
            }
            if s.get("wait").is_some_and(|w| !w.is_boolean()) {
                c.add(format!("{at}.wait"), "must be true or false");
            }
        }
        Some("set") => match s.get("values").and_then(Value::as_object) {
            Some(values) if !values.is_empty() => {
                for (k, v) in values {
                    c.values(v, &format!("{at}.values.{k}"));
                }
            }
            _ => c.add(format!("{at}.values"), "must map names to values"),
        },
        Some("fail") => {
            if let Some(m) = c.string(s, "message", at, true) {
                c.template(m, &format!("{at}.message"));
            }
        }
        _ => {}
    }
    // Declared after its own expressions: a step cannot read its own output.
    if let Some(id) = id {
        c.declared.push(id);
    }
}

fn check_retry(c: &mut Checker, v: &Value, at: &str) {
    let Some(r) = v.as_object() else {
        c.add(at, "must be an object");
        return;
    };
    c.unknown(
        r,
        at,
        &[
            "max_attempts",
            "initial_interval_ms",
            "backoff_coefficient",
            "max_interval_ms",
            "non_retryable",
        ],
    );
    c.number(r, "max_attempts", at, 1.0, 20.0);
    c.number(r, "initial_interval_ms", at, 1.0, 3_600_000.0);
    c.number(r, "backoff_coefficient", at, 1.0, 10.0);
    c.number(r, "max_interval_ms", at, 1.0, 86_400_000.0);
    if let Some(list) = r.get("non_retryable") {
        match list.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.as_str().is_some_and(|s| {
                        s.parse::<ErrorClass>()
                            .is_ok_and(|c| ErrorClass::RETRY_EXCLUDABLE.contains(&c))
                    }) {
                        c.add(
                            format!("{at}.non_retryable[{i}]"),
                            format!(
                                "must be one of {}",
                                ErrorClass::RETRY_EXCLUDABLE
                                    .iter()
                                    .map(|c| c.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        );
                    }
                }
            }
            None => c.add(
                format!("{at}.non_retryable"),
                "must be a list of error classes",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str =
        include_str!("../../../catalogue/orchestrations/vin-decode-and-enrich.yaml");

    #[test]
    fn the_example_is_valid() {
        let doc = parse(EXAMPLE).unwrap();
        let problems = validate(&doc);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let doc = parse(
            r#"{
              "format": "dibop.orchestration/v1", "name": "x", "colour": "red",
              "parameters": [{"name": "vin", "type": "text"}, {"name": "vin", "type": "integer", "default": "1"}],
              "trigger": {"type": "schedule", "cron": "61 * * * *", "timezone": "Mars/Olympus"},
              "steps": [
                {"id": "a", "type": "call", "connection": "con_1", "parameters": {"vin": "{{ .params.vin | }}"}},
                {"id": "a", "type": "teleport"},
                {"id": "b", "type": "transform", "expression": ".steps.c.response"},
                {"id": "c", "type": "transform", "expression": ".steps.nope"},
                {"id": "d", "type": "branch", "if": ".steps.b", "then": []},
                {"id": "e", "type": "foreach", "items": ".steps.a.response.items", "mode": "sideways", "steps": [
                    {"id": "f", "type": "fail"}
                ]},
                {"id": "g", "type": "call", "connection": "c", "operation": "o", "retry": {"max_attempts": 0, "non_retryable": ["oops"]}}
              ]
            }"#,
        )
        .unwrap();
        let problems = validate(&doc);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "$.colour",
            "$.parameters[0].type",
            "$.parameters[1].name",
            "$.parameters[1].default",
            "$.trigger.cron",
            "$.trigger.timezone",
            "$.steps[0].operation",
            "$.steps[0].parameters.vin",
            "$.steps[1].id",
            "$.steps[1].type",
            "$.steps[2].expression",
            "$.steps[3].expression",
            "$.steps[4].then",
            "$.steps[5].mode",
            "$.steps[5].steps[0].message",
            "$.steps[6].retry.max_attempts",
            "$.steps[6].retry.non_retryable[0]",
        ] {
            assert!(
                paths.contains(&expected),
                "missing {expected} in {problems:#?}"
            );
        }
        let text = format!("{problems:?}");
        assert!(text.contains("`c`, which has not run yet"), "{text}");
        assert!(text.contains("`nope`, which does not exist"), "{text}");
    }
}

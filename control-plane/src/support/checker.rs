//! The problem-collecting checker the definition validators share
//! (connectors, orchestrations): each check records what is wrong with the
//! path where it is, so a document's every problem is reported at once.

use serde_json::{Map, Value};

/// One problem in a definition: where and what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Where, e.g. `operations[0].method`.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// Collects every problem of a document, each with its path.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    /// What was found, in document order.
    pub(crate) problems: Vec<Problem>,
}

impl Checker {
    pub(crate) fn add(&mut self, path: impl Into<String>, problem: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            problem: problem.into(),
        });
    }

    pub(crate) fn object<'a>(
        &mut self,
        v: Option<&'a Value>,
        path: &str,
        required: bool,
    ) -> Option<&'a Map<String, Value>> {
        match v {
            Some(Value::Object(m)) => Some(m),
            None | Some(Value::Null) if !required => None,
            None | Some(Value::Null) => {
                self.add(path, "is required");
                None
            }
            Some(_) => {
                self.add(path, "must be an object");
                None
            }
        }
    }

    pub(crate) fn string<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        key: &str,
        path: &str,
        required: bool,
    ) -> Option<&'a str> {
        let at = join(path, key);
        match m.get(key) {
            Some(Value::String(s))
                if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') =>
            {
                self.add(at, "must not contain control characters (such as NUL)");
                None
            }
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
            Some(Value::String(_)) => {
                self.add(at, "must not be empty");
                None
            }
            None | Some(Value::Null) if !required => None,
            None | Some(Value::Null) => {
                self.add(at, "is required");
                None
            }
            Some(_) => {
                self.add(at, "must be a string");
                None
            }
        }
    }

    pub(crate) fn one_of(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        path: &str,
        allowed: &[&str],
        required: bool,
    ) -> Option<String> {
        let value = self.string(m, key, path, required)?;
        if allowed.contains(&value) {
            Some(value.to_owned())
        } else {
            self.add(
                join(path, key),
                format!("`{value}` is not one of {}", allowed.join(", ")),
            );
            None
        }
    }

    pub(crate) fn number(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        path: &str,
        min: u64,
        max: u64,
    ) -> Option<u64> {
        match m.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    self.add(
                        join(path, key),
                        format!("must be a whole number from {min} to {max}"),
                    );
                    None
                }
            },
        }
    }

    pub(crate) fn unknown(&mut self, m: &Map<String, Value>, path: &str, known: &[&str]) {
        for key in m.keys() {
            if !known.contains(&key.as_str()) {
                self.add(
                    join(path, key),
                    format!("unknown key (expected one of {})", known.join(", ")),
                );
            }
        }
    }

    pub(crate) fn array<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        key: &str,
        path: &str,
        required: bool,
    ) -> &'a [Value] {
        match m.get(key) {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) if !required => &[],
            None | Some(Value::Null) => {
                self.add(join(path, key), "is required");
                &[]
            }
            Some(_) => {
                self.add(join(path, key), "must be a list");
                &[]
            }
        }
    }
}

/// `path.key`, or `key` at the root.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

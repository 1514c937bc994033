//! What the console's forms post: the fields of a form whose names vary
//! (credential fields by auth scheme), and the CSRF token alone.

use std::collections::HashMap;

use serde::Deserialize;

/// A form's fields by name (the last value of a repeated name wins).
pub(crate) struct Fields(HashMap<String, String>);

/// Fields never kept to re-render a refused form.
const SECRET: [&str; 4] = ["csrf", "password", "client_secret", "proxy_password"];

impl Fields {
    pub(crate) fn of(pairs: Vec<(String, String)>) -> Fields {
        Fields(pairs.into_iter().collect())
    }

    /// A field, trimmed (empty when absent).
    pub(crate) fn get(&self, name: &str) -> String {
        self.0
            .get(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    }

    /// A field exactly as typed (secrets are not trimmed).
    pub(crate) fn raw(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Whether a checkbox (or any field) was sent.
    pub(crate) fn checked(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// What was typed, trimmed, to show again in a refused form (never
    /// the CSRF token or a secret).
    pub(crate) fn typed(&self) -> HashMap<String, String> {
        self.0
            .iter()
            .filter(|(k, _)| !SECRET.contains(&k.as_str()) && !k.starts_with("cred."))
            .map(|(k, v)| (k.clone(), v.trim().to_owned()))
            .collect()
    }
}

/// A form that carries only its CSRF token (a button's form).
#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

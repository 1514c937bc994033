//! Personal data in what the API shows: execution traces, the API-call log,
//! dead-lettered records and exports.
//!
//! Which data is personal comes from the CDM: every field classified `pii`
//! or `sensitive_pii` in a domain, plus the native fields that the
//! connectors a tenant uses map onto such fields (`.firstName` feeding
//! `customer.first_name` makes `firstName` personal in that DMS's
//! payloads). Values under those keys, anywhere in a JSON document, are
//! replaced by `"[redacted]"` for callers without the `view_pii`
//! permission: `enterprise_admin` and `operator` have it, `viewer` does
//! not, and platform admins never see tenant data. In URLs, query values of
//! personal parameters are redacted the same way.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use crate::Core;
use crate::cdm::{self, Pii};
use crate::identity::{Principal, Role};

/// What replaces a personal value.
pub const REDACTED: &str = "[redacted]";

/// Whether the caller may see personal data: its own grant, else its
/// role's default; never a platform admin.
pub fn can_view(p: &Principal) -> bool {
    role_views(p.role, p.view_pii.map(i64::from))
}

/// `view_pii` of a role with a user's or token's own setting (1/0).
pub fn role_views(role: Role, own: Option<i64>) -> bool {
    if role == Role::PlatformAdmin {
        return false;
    }
    own.map_or(role.sees_pii_by_default(), |v| v != 0)
}

/// The last field name of each path in a jq expression: `.a.b + .c[0].d`
/// gives `b` and `d`.
pub fn path_leaves(code: &str) -> Vec<String> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |i: usize| -> usize {
        let mut j = i;
        while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            j += 1;
        }
        j
    };
    let mut in_string = false;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' && (i == 0 || bytes[i - 1] != b'\\') {
            in_string = !in_string;
            i += 1;
            continue;
        }
        if in_string || c != b'.' {
            i += 1;
            continue;
        }
        // A path: `.name` segments, with `[...]` between them.
        let mut last = None;
        let mut j = i;
        loop {
            if j < bytes.len() && bytes[j] == b'.' {
                let end = ident(j + 1);
                if end > j + 1 && !bytes[j + 1].is_ascii_digit() {
                    last = Some(code[j + 1..end].to_owned());
                    j = end;
                    continue;
                }
                j += 1;
                continue;
            }
            if j < bytes.len() && bytes[j] == b'[' {
                match code[j..].find(']') {
                    Some(k) => {
                        j += k + 1;
                        continue;
                    }
                    None => break,
                }
            }
            break;
        }
        if let Some(l) = last {
            out.push(l);
        }
        i = j.max(i + 1);
    }
    out
}

/// Native field names a connector definition maps onto personal CDM fields.
pub fn native_pii_keys(definition: &Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for mapping in definition["mappings"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        let Some(domain) = cdm::domain(mapping["domain"].as_str().unwrap_or_default()) else {
            continue;
        };
        for (field, code) in mapping["inbound"].as_object().into_iter().flatten() {
            if domain.field(field).is_some_and(|f| f.pii != Pii::None) {
                keys.extend(
                    path_leaves(code.as_str().unwrap_or_default())
                        .into_iter()
                        .map(|k| k.to_ascii_lowercase()),
                );
            }
        }
        for (native, code) in mapping["outbound"].as_object().into_iter().flatten() {
            let personal = path_leaves(code.as_str().unwrap_or_default())
                .iter()
                .any(|f| domain.field(f).is_some_and(|f| f.pii != Pii::None));
            if personal && let Some(leaf) = native.rsplit('.').next() {
                keys.insert(leaf.to_ascii_lowercase());
            }
        }
    }
    keys
}

/// The personal keys in a tenant's data: the CDM's and those of the
/// connectors its connections use (cached for 30 s).
pub async fn keys_for(core: &Core, tenant_id: &str) -> Arc<BTreeSet<String>> {
    if let Some(k) = core.pii_keys.get(tenant_id) {
        return k;
    }
    let mut keys = cdm::pii_field_names().clone();
    let mut seen = BTreeSet::new();
    if let Ok(connections) = core.store.list_connections(tenant_id, None, 10_000).await {
        for c in connections {
            if !seen.insert((c.connector_id.clone(), c.connector_version.clone())) {
                continue;
            }
            if let Ok(Some(v)) = core
                .store
                .version(&c.connector_id, &c.connector_version)
                .await
                && let Ok(d) = serde_json::from_str::<Value>(&v.definition)
            {
                keys.extend(native_pii_keys(&d));
            }
        }
    }
    let keys = Arc::new(keys);
    core.pii_keys.insert(tenant_id.to_owned(), keys.clone());
    keys
}

/// Replaces the values of personal keys in `v`, at any depth. JSON held in
/// strings (stored traces) is parsed, redacted and written back.
pub fn redact(v: &mut Value, keys: &BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if keys.contains(&k.to_ascii_lowercase()) && !x.is_null() {
                    *x = Value::String(REDACTED.into());
                } else {
                    redact(x, keys);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| redact(x, keys)),
        _ => {}
    }
}

/// `redact` for a caller: nothing to do for those who may see personal data.
pub async fn for_caller(core: &Core, p: &Principal, v: &mut Value) {
    if !can_view(p) {
        let keys = keys_for(core, &p.tenant_id).await;
        redact(v, &keys);
    }
}

/// A URL with the values of personal query parameters redacted.
pub fn redact_url(url: &str, keys: &BTreeSet<String>) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if keys.contains(&k.to_ascii_lowercase()) => format!("{k}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", parts.join("&"))
}

/// Whether JSON `text` may hold a `sensitive_pii` key (as an object key,
/// any case): when not, it needs no parsing to be masked.
pub fn mentions_sensitive_key(text: &str) -> bool {
    static QUOTED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let quoted = QUOTED.get_or_init(|| {
        sensitive_keys()
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect()
    });
    let lower = text.to_ascii_lowercase();
    quoted.iter().any(|k| lower.contains(k.as_str()))
}

/// The keys of `sensitive_pii` fields: masked even in stored call records.
pub fn sensitive_keys() -> &'static BTreeSet<String> {
    static KEYS: std::sync::OnceLock<BTreeSet<String>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        cdm::domains()
            .iter()
            .flat_map(|d| &d.fields)
            .filter(|f| f.pii == Pii::SensitivePii)
            .map(|f| f.name.to_ascii_lowercase())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_bodies_naming_a_sensitive_key_need_masking() {
        assert!(sensitive_keys().contains("date_of_birth"));
        assert!(mentions_sensitive_key(
            r#"{"items": [{"Date_Of_Birth": "1980-01-01"}]}"#
        ));
        assert!(!mentions_sensitive_key(
            r#"{"items": [{"vin": "WVW", "note": "no date_of_birth given"}]}"#
        ));
    }

    #[test]
    fn leaves_of_paths() {
        assert_eq!(
            path_leaves(r#".firstName + " " + .lastName"#),
            ["firstName", "lastName"]
        );
        assert_eq!(path_leaves(".Results[0].Email | ascii_downcase"), ["Email"]);
        assert_eq!(path_leaves(r#""a.b" | .x"#), ["x"]);
        assert_eq!(path_leaves(".odometer * 1.6"), ["odometer"]);
    }

    #[test]
    fn native_keys_follow_the_mappings_and_values_are_redacted_anywhere() {
        let def = json!({"mappings": {"listCustomers": {"domain": "customer", "inbound": {
            "customer_id": ".customerNo", "first_name": ".firstName", "email": ".contact.mail",
            "country": ".country"}, "outbound": {"contact.mail": ".email", "no": ".customer_id"}}}});
        let keys = native_pii_keys(&def);
        assert_eq!(
            keys.iter().map(String::as_str).collect::<Vec<_>>(),
            ["firstname", "mail"]
        );
        let mut all = cdm::pii_field_names().clone();
        all.extend(keys);
        let mut doc = json!({"items": [{"customerNo": "C1", "firstName": "Anna", "contact": {"mail": "a@x.io"},
                                        "country": "DE", "phone": "+4930"}]});
        redact(&mut doc, &all);
        assert_eq!(
            doc,
            json!({"items": [{"customerNo": "C1", "firstName": REDACTED, "contact": {"mail": REDACTED},
                              "country": "DE", "phone": REDACTED}]})
        );
        assert_eq!(
            redact_url("https://dms/api?email=a%40x.io&page=2", &all),
            "https://dms/api?email=[redacted]&page=2"
        );
    }
}

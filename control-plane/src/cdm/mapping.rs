//! Connector mappings between native payloads and CDM records.
//!
//! A mapping (`mappings.<operation>` in a connector version) names a CDM
//! domain and, field by field, jq expressions:
//! - `records` (optional): selects the native records in a payload, e.g.
//!   `.items`; an array gives several records, anything else one;
//! - `inbound`: CDM field → expression on one native record;
//! - `outbound`: native field (a dotted path builds nested objects) →
//!   expression on one CDM record.
//!
//! Each direction compiles into **one** jq program, so mapping a page of
//! records is one evaluation, not one per field. An expression that yields
//! nothing gives `null`, and `null` fields are left out of the result.
//! Inbound records, and CDM records going outbound, are validated against
//! the domain's schema.

use serde_json::{Map, Value};

use crate::cdm::{self, Domain, Problem};
use crate::expr::Evaluator;

/// A record that does not fit its domain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Invalid {
    /// Its position among the records.
    pub index: usize,
    /// The record (CDM for inbound, the CDM input for outbound).
    pub record: Value,
    /// Every rule it breaks.
    pub problems: Vec<Problem>,
}

/// The result of mapping a payload.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// The domain.
    pub domain: &'static Domain,
    /// Valid records (CDM inbound, native outbound).
    pub records: Vec<Value>,
    /// Records that failed validation.
    pub invalid: Vec<Invalid>,
}

/// Marks a field whose expression failed on a record.
const ERROR_KEY: &str = "$mapping_error";

/// Takes the failed-expression markers out of a mapped record as problems.
fn take_errors(v: &mut Value, at: &str, out: &mut Vec<Problem>) {
    let Value::Object(m) = v else {
        return;
    };
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        let path = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        let failed = m
            .get(&k)
            .and_then(|x| x.get(ERROR_KEY))
            .map(|e| e.as_str().unwrap_or_default().to_owned());
        match failed {
            Some(e) => {
                m.remove(&k);
                out.push(Problem {
                    field: path,
                    rule: "expression".into(),
                    message: format!("the mapping expression failed: {e}"),
                });
            }
            None => {
                if let Some(child) = m.get_mut(&k) {
                    take_errors(child, &path, out);
                }
            }
        }
    }
}

/// `{"a": {"b": X}}` as jq object syntax, from `[("a.b", X)]`.
fn object_program(fields: &[(String, String)]) -> String {
    #[derive(Default)]
    struct Node {
        leaf: Option<String>,
        children: Vec<(String, Node)>,
    }
    let mut root = Node::default();
    for (path, code) in fields {
        let mut node = &mut root;
        for part in path.split('.') {
            let i = match node.children.iter().position(|(k, _)| k == part) {
                Some(i) => i,
                None => {
                    node.children.push((part.to_owned(), Node::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[i].1;
        }
        node.leaf = Some(code.clone());
    }
    fn render(n: &Node) -> String {
        if let Some(code) = &n.leaf {
            // An expression that fails on one record marks that field, so the
            // record is reported invalid instead of failing the whole page.
            return format!(
                "(try first(({code}), null) catch {{\"{ERROR_KEY}\": (. | tostring)}})"
            );
        }
        let parts: Vec<String> = n
            .children
            .iter()
            .map(|(k, child)| format!("{}: {}", Value::String(k.clone()), render(child)))
            .collect();
        format!("{{{}}}", parts.join(", "))
    }
    render(&root)
}

fn fields_of(mapping: &Value, dir: &str) -> Vec<(String, String)> {
    mapping[dir]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.trim().to_owned())))
        .collect()
}

/// Drops `null` members, recursively; an object left empty is dropped too.
fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter_map(|(k, v)| match without_nulls(v) {
                    Value::Null => None,
                    Value::Object(o) if o.is_empty() => None,
                    v => Some((k, v)),
                })
                .collect::<Map<String, Value>>(),
        ),
        other => other,
    }
}

/// The mapping's domain, or why it has none.
pub fn domain_of(mapping: &Value) -> Result<&'static Domain, String> {
    let name = mapping["domain"].as_str().unwrap_or_default();
    cdm::domain(name).ok_or_else(|| format!("`{name}` is not a CDM domain"))
}

/// Native payload → CDM records of the mapping's domain, validated.
pub async fn to_cdm(ev: &Evaluator, mapping: &Value, native: &Value) -> Result<Mapped, String> {
    let domain = domain_of(mapping)?;
    let fields = fields_of(mapping, "inbound");
    if fields.is_empty() {
        return Err("the mapping has no inbound fields".into());
    }
    let records = mapping["records"].as_str().unwrap_or(".");
    let program = format!(
        "[({records}) | if type == \"array\" then .[] else . end | {}]",
        object_program(&fields)
    );
    let out = ev
        .eval_one(&program, native)
        .await
        .map_err(|e| format!("the inbound mapping failed: {e}"))?;
    let mut mapped = Mapped {
        domain,
        records: Vec::new(),
        invalid: Vec::new(),
    };
    for (index, record) in out
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let mut record = record;
        let mut problems = Vec::new();
        take_errors(&mut record, "", &mut problems);
        let record = without_nulls(record);
        problems.extend(cdm::validate(domain, &record));
        if problems.is_empty() {
            mapped.records.push(record);
        } else {
            mapped.invalid.push(Invalid {
                index,
                record,
                problems,
            });
        }
    }
    Ok(mapped)
}

/// CDM record(s) → native record(s) with the mapping's outbound side; CDM
/// records that break the domain's schema are not mapped.
pub async fn from_cdm(ev: &Evaluator, mapping: &Value, cdm: &Value) -> Result<Mapped, String> {
    let domain = domain_of(mapping)?;
    let fields = fields_of(mapping, "outbound");
    if fields.is_empty() {
        return Err("the mapping has no outbound fields".into());
    }
    let inputs = match cdm {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    let mut valid = Vec::new();
    let mut mapped = Mapped {
        domain,
        records: Vec::new(),
        invalid: Vec::new(),
    };
    for (index, record) in inputs.into_iter().enumerate() {
        let problems = cdm::validate(domain, &record);
        if problems.is_empty() {
            valid.push(record);
        } else {
            mapped.invalid.push(Invalid {
                index,
                record,
                problems,
            });
        }
    }
    if valid.is_empty() {
        return Ok(mapped);
    }
    let program = format!("[.[] | {}]", object_program(&fields));
    let out = ev
        .eval_one(&program, &Value::Array(valid))
        .await
        .map_err(|e| format!("the outbound mapping failed: {e}"))?;
    for (index, mut record) in out
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let mut problems = Vec::new();
        take_errors(&mut record, "", &mut problems);
        if problems.is_empty() {
            mapped.records.push(without_nulls(record));
        } else {
            mapped.invalid.push(Invalid {
                index,
                record: without_nulls(record),
                problems,
            });
        }
    }
    Ok(mapped)
}

/// One line naming a record's problems: `vin: format (must be …); year: type (…)`.
pub fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {} ({})", p.field, p.rule, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn programs_build_nested_objects() {
        let p = object_program(&[
            ("vin".into(), ".vin".into()),
            ("customer.email".into(), ".email".into()),
            (
                "customer.name".into(),
                ".first_name + \" \" + .last_name".into(),
            ),
        ]);
        assert!(
            p.starts_with(r#"{"vin": (try first((.vin), null) catch {"$mapping_error": (. | tostring)}), "customer": {"email": "#),
            "{p}"
        );
    }

    #[tokio::test]
    async fn inbound_converts_validates_and_outbound_nests() {
        let ev = Evaluator::default();
        let mapping = json!({
            "domain": "vehicle",
            "records": ".items",
            "inbound": {
                "vin": ".vin",
                "make": ".brand",
                "mileage_km": ".odometer_miles // empty | . * 1.609344 | round",
                "fuel_type": "{\"GAS\": \"petrol\", \"EV\": \"electric\"}[.fuel]",
                "first_registration_date": "select(.registered) | .registered[0:10]",
            },
            "outbound": {"vehicle.vin": ".vin", "vehicle.brand": ".make", "km": ".mileage_km"}
        });
        let native = json!({"items": [
            {"vin": "1HGCM82633A004352", "brand": "Honda", "odometer_miles": 1000, "fuel": "GAS",
             "registered": "2019-03-01T10:00:00Z"},
            {"vin": "1HGCM82633A004353", "brand": "Honda", "fuel": "STEAM"},
            {"vin": "1HGCM82633A004352", "odometer_miles": "many", "registered": "2020-01-01"}
        ]});
        let m = to_cdm(&ev, &mapping, &native).await.unwrap();
        assert_eq!(
            m.records,
            [
                json!({"vin": "1HGCM82633A004352", "make": "Honda", "mileage_km": 1609,
                    "fuel_type": "petrol", "first_registration_date": "2019-03-01"})
            ]
        );
        assert_eq!(m.invalid.len(), 2);
        assert_eq!(m.invalid[0].index, 1);
        assert_eq!(m.invalid[1].index, 2);
        assert_eq!(m.invalid[1].problems[0].field, "mileage_km");
        assert_eq!(m.invalid[1].problems[0].rule, "expression");
        assert_eq!(
            describe(&m.invalid[0].problems),
            "vin: format (must be a VIN with a valid check digit (position 9 should be 5) (got \"1HGCM82633A004353\"))"
        );
        let back = from_cdm(&ev, &mapping, &m.records[0]).await.unwrap();
        assert_eq!(
            back.records,
            [json!({"vehicle": {"vin": "1HGCM82633A004352", "brand": "Honda"}, "km": 1609})]
        );
        let bad = from_cdm(&ev, &mapping, &json!([{"make": "x"}]))
            .await
            .unwrap();
        assert_eq!((bad.records.len(), bad.invalid.len()), (0, 1));
    }
}

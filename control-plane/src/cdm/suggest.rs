//! Mapping suggestions: from a sample payload of a connector operation,
//! propose which native field feeds each CDM field of a domain.
//!
//! Each native leaf (a path to a scalar) is scored against each CDM field
//! by name (normalised equality, known synonyms, containment, shared
//! words), by type (a string where a number is expected scores low) and by
//! format (a value that is a valid VIN, email, E.164 phone, ISO currency,
//! country or date supports the field with that format). Each field takes
//! its best leaf above the threshold, each leaf feeds one field at most.
//! Every suggestion is **assumed** until a person confirms it.

use serde::Serialize;
use serde_json::Value;

use crate::cdm::{Domain, Field, check_format};

/// Below this a leaf is not proposed.
const THRESHOLD: f64 = 0.5;

/// One proposed field mapping.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Suggestion {
    /// The CDM field.
    pub field: String,
    /// The jq expression reading the native value, e.g. `.contact.email`.
    pub expression: String,
    /// 0 to 1.
    pub confidence: f64,
    /// Why, for the person confirming it.
    pub reason: String,
    /// Always `assumed` until confirmed.
    pub status: &'static str,
}

/// Common native names of CDM fields (normalised: lower-case, no separators).
const SYNONYMS: &[(&str, &[&str])] = &[
    (
        "vin",
        &[
            "vehicleidentificationnumber",
            "vinnumber",
            "chassisnumber",
            "vehicleid",
        ],
    ),
    ("make", &["brand", "manufacturer", "marque"]),
    ("year", &["modelyear", "my", "yearofmanufacture"]),
    ("body_class", &["bodystyle", "bodytype", "body"]),
    ("fuel_type", &["fuel", "fueltype", "energy"]),
    ("transmission", &["gearbox", "gear", "transmissiontype"]),
    (
        "exterior_colour",
        &["colour", "color", "colourext", "exteriorcolor", "paint"],
    ),
    (
        "interior_colour",
        &["colourint", "interiorcolor", "trimcolour", "upholstery"],
    ),
    (
        "mileage_km",
        &[
            "odometer",
            "odometerkm",
            "mileage",
            "km",
            "kilometres",
            "kilometers",
        ],
    ),
    (
        "stock_number",
        &["stockno", "stock", "stocknumber", "stockid"],
    ),
    (
        "first_registration_date",
        &[
            "firstregistered",
            "registrationdate",
            "firstregistration",
            "regdate",
        ],
    ),
    (
        "list_price",
        &[
            "price",
            "priceeur",
            "listprice",
            "msrp",
            "retailprice",
            "askingprice",
        ],
    ),
    (
        "registration_number",
        &[
            "plate",
            "licenseplate",
            "licenceplate",
            "registration",
            "regno",
        ],
    ),
    (
        "customer_id",
        &[
            "customerno",
            "customernumber",
            "custno",
            "clientid",
            "customer",
        ],
    ),
    ("customer_name", &["name", "fullname", "displayname"]),
    ("first_name", &["firstname", "givenname", "forename"]),
    ("last_name", &["lastname", "surname", "familyname"]),
    ("email", &["mail", "emailaddress", "email1"]),
    (
        "phone",
        &["telephone", "tel", "mobile", "phonenumber", "cell"],
    ),
    (
        "address_line_1",
        &["street", "address", "address1", "streetaddress", "line1"],
    ),
    ("address_line_2", &["address2", "line2"]),
    ("postal_code", &["postcode", "zip", "zipcode", "plz"]),
    ("state_province", &["state", "province", "region", "county"]),
    ("customer_type", &["type", "customerkind", "category"]),
    ("created_date", &["createdat", "created", "creationdate"]),
    ("job_id", &["jobno", "repairorder", "ronumber", "orderno"]),
    ("description", &["complaint", "desc", "text", "concern"]),
    ("labour_hours", &["labourhours", "laborhours", "hours"]),
    ("opened_at", &["openedat", "opened", "opendate"]),
    ("part_number", &["partno", "partnumber", "sku"]),
    (
        "quantity_on_hand",
        &["onhand", "qty", "quantity", "stocklevel"],
    ),
    ("bin_location", &["bin", "binlocation", "location"]),
    ("unit_price", &["unitprice", "unitpriceeur", "price"]),
    ("appointment_id", &["appointmentid", "bookingid", "booking"]),
    ("start", &["starttime", "startsat", "from", "begin"]),
];

fn normalise(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .flat_map(char::to_lowercase)
        .collect()
}

/// `firstName`, `first_name`, `First-Name` → `first`, `name`.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Scalar leaves of a sample: (jq path, last key, value).
fn leaves(v: &Value, path: String, key: &str, out: &mut Vec<(String, String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let simple = k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !k.starts_with(|c: char| c.is_ascii_digit());
                let p = if simple {
                    format!("{path}.{k}")
                } else {
                    format!("{path}[{}]", Value::String(k.clone()))
                };
                leaves(x, p, k, out);
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first()
                && (first.is_object() || first.is_array())
            {
                leaves(first, format!("{path}[0]"), key, out);
            } else if !items.is_empty() {
                out.push((path, key.to_owned(), v.clone()));
            }
        }
        Value::Null => {}
        _ => out.push((
            if path.is_empty() { ".".into() } else { path },
            key.to_owned(),
            v.clone(),
        )),
    }
}

fn name_score(field: &str, key: &str) -> (f64, &'static str) {
    let (f, k) = (normalise(field), normalise(key));
    if k.is_empty() {
        return (0.0, "");
    }
    if f == k {
        return (1.0, "same name");
    }
    if SYNONYMS
        .iter()
        .any(|(name, syn)| *name == field && syn.contains(&k.as_str()))
    {
        return (0.9, "a usual name for it");
    }
    if f.len() >= 4 && k.len() >= 4 && (f.contains(&k) || k.contains(&f)) {
        return (0.7, "similar name");
    }
    let fw = words(field);
    let kw = words(key);
    let shared = fw.iter().filter(|w| kw.contains(w)).count();
    if shared > 0 {
        let union = fw.len() + kw.len() - shared;
        return (0.6 * shared as f64 / union as f64 + 0.1, "shared words");
    }
    (0.0, "")
}

fn type_fits(f: &Field, v: &Value) -> bool {
    match f.kind.as_str() {
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => v.is_string(),
    }
}

fn score(f: &Field, key: &str, v: &Value) -> (f64, String) {
    let (mut s, why) = name_score(&f.name, key);
    let mut reasons = Vec::new();
    if s > 0.0 {
        reasons.push(why.to_owned());
    }
    if let (Some(format), Some(text)) = (&f.format, v.as_str()) {
        if check_format(format, text).is_ok() {
            s = (s + if s > 0.0 { 0.3 } else { 0.6 }).min(1.0);
            reasons.push(format!("the value is a valid {format}"));
        } else if s > 0.0 {
            s *= 0.6;
            reasons.push(format!("but the value is not a valid {format}"));
        }
    }
    if !type_fits(f, v) {
        // A number held as text can still be converted with tonumber.
        let convertible = matches!(f.kind.as_str(), "number" | "integer")
            && v.as_str().is_some_and(|t| t.trim().parse::<f64>().is_ok());
        s *= if convertible { 0.8 } else { 0.3 };
        reasons.push(format!("the value is not of type {}", f.kind));
    }
    (s, reasons.join("; "))
}

/// Proposes mappings of `domain`'s fields from a sample native record.
pub fn suggest(domain: &Domain, sample: &Value) -> Vec<Suggestion> {
    let record = match sample {
        Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    let mut found = Vec::new();
    leaves(&record, String::new(), "", &mut found);
    let mut candidates: Vec<(f64, usize, usize, String)> = Vec::new();
    for (fi, f) in domain.fields.iter().enumerate() {
        for (li, (_, key, value)) in found.iter().enumerate() {
            let (s, why) = score(f, key, value);
            if s >= THRESHOLD {
                candidates.push((s, fi, li, why));
            }
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut used_fields = vec![false; domain.fields.len()];
    let mut used_leaves = vec![false; found.len()];
    let mut out = Vec::new();
    for (s, fi, li, why) in candidates {
        if used_fields[fi] || used_leaves[li] {
            continue;
        }
        used_fields[fi] = true;
        used_leaves[li] = true;
        let f = &domain.fields[fi];
        let (path, _, value) = &found[li];
        let numeric_text = matches!(f.kind.as_str(), "number" | "integer") && value.is_string();
        out.push(Suggestion {
            field: f.name.clone(),
            expression: if numeric_text {
                format!("{path} | tonumber")
            } else {
                path.clone()
            },
            confidence: (s * 100.0).round() / 100.0,
            reason: why,
            status: "assumed",
        });
    }
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dms_vehicle_maps_by_name_synonym_and_format() {
        let d = crate::cdm::domain("vehicle").unwrap();
        let sample = json!({"items": [{"chassis": "1HGCM82633A004352", "brand": "Honda", "model": "Accord",
            "modelYear": "2003", "odometerKm": 120000, "colourExt": "Blue", "stockNo": "S-1",
            "priceEur": 9000, "internalNote": "x"}]});
        let s = suggest(d, &sample["items"]);
        let by: std::collections::HashMap<&str, &Suggestion> =
            s.iter().map(|x| (x.field.as_str(), x)).collect();
        assert_eq!(by["vin"].expression, ".chassis", "found by its format");
        assert_eq!(by["model"].expression, ".model");
        assert_eq!(by["make"].expression, ".brand");
        assert_eq!(by["year"].expression, ".modelYear | tonumber");
        assert_eq!(by["mileage_km"].expression, ".odometerKm");
        assert_eq!(by["exterior_colour"].expression, ".colourExt");
        assert_eq!(by["stock_number"].expression, ".stockNo");
        assert_eq!(by["list_price"].expression, ".priceEur");
        assert!(s.iter().all(|x| x.status == "assumed"));
        assert!(!s.iter().any(|x| x.expression == ".internalNote"), "{s:?}");
    }

    #[test]
    fn nested_and_odd_keys_become_paths() {
        let d = crate::cdm::domain("customer").unwrap();
        let sample = json!({"id": "C1", "contact": {"e-mail": "jane@example.com", "tel": "+441632960001"},
                            "surname": "Doe"});
        let s = suggest(d, &sample);
        let by: std::collections::HashMap<&str, &str> = s
            .iter()
            .map(|x| (x.field.as_str(), x.expression.as_str()))
            .collect();
        assert_eq!(by["email"], ".contact[\"e-mail\"]");
        assert_eq!(by["phone"], ".contact.tel");
        assert_eq!(by["last_name"], ".surname");
    }
}

//! The Canonical Data Model: 22 domains, each a versioned JSON Schema in
//! `cdm/domains/<domain>.json`, compiled into the binary.
//!
//! Every field carries a type, a required flag, a PII class (`x-pii`:
//! `none`, `pii`, `sensitive_pii`), a description and, where a standard
//! exists, a format: `vin` (17 characters with the ISO 3779 / 49 CFR 565
//! check digit), `iso4217` (currency), `iso3166` (country, alpha-2),
//! `e164` (phone), `email`, `date-time` (RFC 3339) and `date` (ISO 8601).
//! Connector mappings produce records of a domain; [`validate`] checks one
//! and names each field and rule it breaks.

pub mod mapping;
pub mod pii;
pub mod suggest;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde::Serialize;
use serde_json::Value;

/// The schema files, in the order the docs list them.
const SOURCES: [&str; 22] = [
    include_str!("../../../cdm/domains/vehicle.json"),
    include_str!("../../../cdm/domains/customer.json"),
    include_str!("../../../cdm/domains/order.json"),
    include_str!("../../../cdm/domains/workshop_job.json"),
    include_str!("../../../cdm/domains/part.json"),
    include_str!("../../../cdm/domains/lead.json"),
    include_str!("../../../cdm/domains/vehicle_inspection.json"),
    include_str!("../../../cdm/domains/appointment.json"),
    include_str!("../../../cdm/domains/shipment.json"),
    include_str!("../../../cdm/domains/location.json"),
    include_str!("../../../cdm/domains/parking_event.json"),
    include_str!("../../../cdm/domains/vehicle_location.json"),
    include_str!("../../../cdm/domains/deal.json"),
    include_str!("../../../cdm/domains/finance_agreement.json"),
    include_str!("../../../cdm/domains/payroll_run.json"),
    include_str!("../../../cdm/domains/employee.json"),
    include_str!("../../../cdm/domains/eol_vehicle.json"),
    include_str!("../../../cdm/domains/auction_transaction.json"),
    include_str!("../../../cdm/domains/title_record.json"),
    include_str!("../../../cdm/domains/recycler_part.json"),
    include_str!("../../../cdm/domains/depollution_record.json"),
    include_str!("../../../cdm/domains/compliance_check.json"),
];

/// How personal a field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Pii {
    /// Not personal data.
    None,
    /// Personal data: redacted for roles without `view_pii`.
    Pii,
    /// Special or financial personal data: also masked in logs.
    SensitivePii,
}

/// One field of a domain.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Field {
    /// Name (snake_case).
    pub name: String,
    /// `string`, `number`, `integer`, `boolean`, `date-time`, `array` or `object`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether a record must have it.
    pub required: bool,
    /// PII class.
    pub pii: Pii,
    /// What it means.
    pub description: String,
    /// A standard format (`vin`, `iso4217`, `iso3166`, `e164`, `email`, `date-time`, `date`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Allowed values.
    #[serde(rename = "enum", skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

/// A CDM domain.
#[derive(Debug, Clone)]
pub struct Domain {
    /// Name (`vehicle`, `workshop_job`, …).
    pub name: String,
    /// Title for people.
    pub title: String,
    /// `core`, `operational`, `financial` or `recycling`.
    pub group: String,
    /// Schema version (semver).
    pub version: String,
    /// What a record is.
    pub description: String,
    /// Where the fields' meanings come from.
    pub source: String,
    /// Its fields, by name.
    pub fields: Vec<Field>,
    /// The JSON Schema document.
    pub schema: Value,
}

impl Domain {
    /// A field by name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

fn parse(source: &str) -> Domain {
    let schema: Value = serde_json::from_str(source).expect("CDM schemas are valid JSON");
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let fields = schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, p)| {
            let format = p["format"].as_str().map(str::to_owned);
            let kind = match (p["type"].as_str(), format.as_deref()) {
                (Some("string"), Some("date-time")) => "date-time",
                (Some(t), _) => t,
                (None, _) => "string",
            };
            Field {
                name: name.clone(),
                kind: kind.to_owned(),
                required: required.contains(&name.as_str()),
                pii: match p["x-pii"].as_str() {
                    Some("pii") => Pii::Pii,
                    Some("sensitive_pii") => Pii::SensitivePii,
                    _ => Pii::None,
                },
                description: p["description"].as_str().unwrap_or_default().to_owned(),
                format,
                values: p["enum"].as_array().map(|v| {
                    v.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                }),
            }
        })
        .collect();
    Domain {
        name: schema["x-domain"].as_str().unwrap_or_default().to_owned(),
        title: schema["title"].as_str().unwrap_or_default().to_owned(),
        group: schema["x-group"].as_str().unwrap_or_default().to_owned(),
        version: schema["x-version"].as_str().unwrap_or_default().to_owned(),
        description: schema["description"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        source: schema["x-source"].as_str().unwrap_or_default().to_owned(),
        fields,
        schema,
    }
}

/// Every domain.
pub fn domains() -> &'static [Domain] {
    static DOMAINS: OnceLock<Vec<Domain>> = OnceLock::new();
    DOMAINS.get_or_init(|| SOURCES.iter().map(|s| parse(s)).collect())
}

/// A domain by name.
pub fn domain(name: &str) -> Option<&'static Domain> {
    domains().iter().find(|d| d.name == name)
}

/// The required fields of a domain, or `None` for an unknown domain.
pub fn required_fields(domain_name: &str) -> Option<Vec<&'static str>> {
    domain(domain_name).map(|d| {
        d.fields
            .iter()
            .filter(|f| f.required)
            .map(|f| f.name.as_str())
            .collect()
    })
}

/// The names of every domain, for messages.
pub fn domain_names() -> String {
    domains()
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names of every field classified `pii` or `sensitive_pii` in any domain,
/// lower-case.
pub fn pii_field_names() -> &'static BTreeSet<String> {
    static NAMES: OnceLock<BTreeSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        domains()
            .iter()
            .flat_map(|d| &d.fields)
            .filter(|f| f.pii != Pii::None)
            .map(|f| f.name.to_ascii_lowercase())
            .collect()
    })
}

/// One rule a record breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// The field (`$` for the record itself).
    pub field: String,
    /// The rule: `required`, `type`, `format`, `enum` or `unknown_field`.
    pub rule: String,
    /// What is wrong, for a person (never the value of a PII field).
    pub message: String,
}

fn problem(field: &str, rule: &str, message: impl Into<String>) -> Problem {
    Problem {
        field: field.to_owned(),
        rule: rule.to_owned(),
        message: message.into(),
    }
}

/// Checks a record against its domain: every problem, empty when valid.
pub fn validate(d: &Domain, record: &Value) -> Vec<Problem> {
    let Some(obj) = record.as_object() else {
        return vec![problem(
            "$",
            "type",
            format!("a {} record must be an object", d.name),
        )];
    };
    let mut out = Vec::new();
    for f in &d.fields {
        match obj.get(&f.name) {
            None | Some(Value::Null) => {
                if f.required {
                    out.push(problem(&f.name, "required", "is required"));
                }
            }
            Some(v) => check_value(f, v, &mut out),
        }
    }
    for key in obj.keys() {
        if d.field(key).is_none() {
            out.push(problem(
                key,
                "unknown_field",
                format!("is not a field of the {} domain", d.name),
            ));
        }
    }
    out
}

fn check_value(f: &Field, v: &Value, out: &mut Vec<Problem>) {
    let shown = |v: &Value| {
        if f.pii == Pii::None {
            format!(" (got {})", clip(&v.to_string()))
        } else {
            String::new()
        }
    };
    let type_ok = match f.kind.as_str() {
        "string" | "date-time" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    };
    if !type_ok {
        out.push(problem(
            &f.name,
            "type",
            format!("must be of type {}{}", f.kind, shown(v)),
        ));
        return;
    }
    if let (Some(values), Some(s)) = (&f.values, v.as_str())
        && !values.iter().any(|x| x == s)
    {
        out.push(problem(
            &f.name,
            "enum",
            format!("must be one of {}{}", values.join(", "), shown(v)),
        ));
    }
    if let (Some(format), Some(s)) = (&f.format, v.as_str())
        && let Err(why) = check_format(format, s)
    {
        out.push(problem(&f.name, "format", format!("{why}{}", shown(v))));
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// Checks a string against a named format.
pub fn check_format(format: &str, s: &str) -> Result<(), String> {
    let ok = match format {
        "vin" => return check_vin(s),
        "iso4217" => CURRENCIES.split(' ').any(|c| c == s),
        "iso3166" => COUNTRIES.split(' ').any(|c| c == s),
        "e164" => {
            s.len() >= 3
                && s.len() <= 16
                && s.starts_with('+')
                && s[1..].bytes().all(|b| b.is_ascii_digit())
                && !s[1..].starts_with('0')
        }
        "email" => is_email(s),
        "date-time" => {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        }
        "date" => {
            time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).is_ok()
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(match format {
            "iso4217" => "must be an ISO 4217 currency code such as EUR".into(),
            "iso3166" => "must be an ISO 3166-1 alpha-2 country code such as DE".into(),
            "e164" => "must be an E.164 phone number such as +441632960001".into(),
            "email" => "must be an email address".into(),
            "date-time" => "must be an RFC 3339 date-time such as 2026-11-27T09:30:00Z".into(),
            "date" => "must be an ISO 8601 date such as 2026-11-27".into(),
            other => format!("must match the format {other}"),
        })
    }
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Checks a VIN: 17 characters of the VIN alphabet (no I, O, Q) with the
/// check digit in position 9.
pub fn check_vin(vin: &str) -> Result<(), String> {
    const ALPHABET: &str = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789";
    const WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    if vin.len() != 17 {
        return Err(format!(
            "must be a 17-character VIN (has {} characters)",
            vin.chars().count()
        ));
    }
    if let Some(bad) = vin.chars().find(|c| !ALPHABET.contains(*c)) {
        return Err(format!(
            "must be a VIN: `{bad}` is not allowed (upper-case letters except I, O, Q, and digits)"
        ));
    }
    let value = |c: u8| -> u32 {
        match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A' | b'J' => 1,
            b'B' | b'K' | b'S' => 2,
            b'C' | b'L' | b'T' => 3,
            b'D' | b'M' | b'U' => 4,
            b'E' | b'N' | b'V' => 5,
            b'F' | b'W' => 6,
            b'G' | b'P' | b'X' => 7,
            b'H' | b'Y' => 8,
            b'R' | b'Z' => 9,
            _ => 0,
        }
    };
    let sum: u32 = vin.bytes().zip(WEIGHTS).map(|(c, w)| value(c) * w).sum();
    let expected = match sum % 11 {
        10 => b'X',
        n => b'0' + n as u8,
    };
    if vin.as_bytes()[8] == expected {
        Ok(())
    } else {
        Err(format!(
            "must be a VIN with a valid check digit (position 9 should be {})",
            expected as char
        ))
    }
}

/// ISO 4217 active currency codes.
const CURRENCIES: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP \
BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ \
GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD \
MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR \
RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH \
UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG";

/// ISO 3166-1 alpha-2 country codes.
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ \
BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET \
FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR \
IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN \
MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY \
QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR \
TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn twenty_two_domains_with_the_promised_fields() {
        assert_eq!(domains().len(), 22);
        let names: BTreeSet<&str> = domains().iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names.len(), 22, "unique names");
        let vehicle = domain("vehicle").unwrap();
        for f in [
            "vin",
            "make",
            "model",
            "year",
            "trim",
            "body_class",
            "engine_type",
            "fuel_type",
            "transmission",
            "exterior_colour",
            "interior_colour",
            "mileage_km",
            "status",
            "stock_number",
            "first_registration_date",
            "list_price",
            "currency",
        ] {
            assert!(vehicle.field(f).is_some(), "vehicle.{f}");
        }
        assert_eq!(required_fields("vehicle").unwrap(), ["vin"]);
        let customer = domain("customer").unwrap();
        assert_eq!(required_fields("customer").unwrap(), ["customer_id"]);
        for f in [
            "customer_name",
            "first_name",
            "last_name",
            "email",
            "phone",
            "address_line_1",
            "city",
            "state_province",
            "postal_code",
        ] {
            assert_eq!(customer.field(f).unwrap().pii, Pii::Pii, "customer.{f}");
        }
        assert_eq!(customer.field("country").unwrap().pii, Pii::None);
        assert_eq!(
            customer
                .field("customer_type")
                .unwrap()
                .values
                .as_deref()
                .unwrap(),
            ["individual", "business", "fleet"]
        );
        assert_eq!(customer.field("created_date").unwrap().kind, "date-time");
        for d in domains() {
            assert!(!d.source.is_empty() && d.version == "1.0.0", "{}", d.name);
            assert!(
                d.fields.iter().any(|f| f.required),
                "{} requires a field",
                d.name
            );
        }
        assert!(pii_field_names().contains("email"));
        assert!(!pii_field_names().contains("vin"));
    }

    #[test]
    fn validation_names_the_field_and_the_rule() {
        let d = domain("vehicle").unwrap();
        assert!(
            validate(
                d,
                &json!({"vin": "1HGCM82633A004352", "year": 2003, "currency": "EUR"})
            )
            .is_empty()
        );
        let problems = validate(
            d,
            &json!({"vin": "1HGCM82633A004353", "year": "2003", "currency": "EURO", "colour": "red",
                    "fuel_type": "steam"}),
        );
        let rules: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.field.as_str(), p.rule.as_str()))
            .collect();
        assert_eq!(
            rules,
            [
                ("currency", "format"),
                ("fuel_type", "enum"),
                ("vin", "format"),
                ("year", "type"),
                ("colour", "unknown_field")
            ]
        );
        assert!(problems[2].message.contains("check digit"), "{problems:?}");
        let missing = validate(d, &json!({"make": "Honda"}));
        assert_eq!(missing[0], problem("vin", "required", "is required"));
        // A PII value is never echoed in a message.
        let c = domain("customer").unwrap();
        let p = validate(
            c,
            &json!({"customer_id": "C1", "email": "not-an-email", "phone": "0044 20"}),
        );
        assert_eq!(p.len(), 2);
        assert!(
            p.iter()
                .all(|p| !p.message.contains("not-an-email") && !p.message.contains("0044"))
        );
    }

    #[test]
    fn formats() {
        assert!(check_format("e164", "+441632960001").is_ok());
        assert!(check_format("e164", "01632 960001").is_err());
        assert!(check_format("email", "jane@example.com").is_ok());
        assert!(check_format("email", "jane@localhost").is_err());
        assert!(check_format("date-time", "2026-11-27T09:30:00Z").is_ok());
        assert!(check_format("date-time", "27/11/2026").is_err());
        assert!(check_format("date", "2026-02-29").is_err());
        assert!(check_format("iso3166", "DE").is_ok() && check_format("iso3166", "UK").is_err());
        assert!(check_vin("WVWZZZ1JZXW000001").is_err());
        assert!(check_vin("1M8GDM9AXKP042788").is_ok());
    }
}

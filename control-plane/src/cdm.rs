//! The Canonical Data Model's entities and the fields every mapping onto
//! them must fill. Connector definitions map operations onto these domains
//! (`mappings.<operation>.domain`); the pre-publication checklist checks
//! that an inbound mapping covers its domain's required fields.

/// (domain, required fields).
pub const DOMAINS: &[(&str, &[&str])] = &[
    ("vehicle", &["vin", "make", "model", "model_year"]),
    ("customer", &["customer_id", "last_name"]),
    ("dealer", &["dealer_id", "name"]),
    ("service_order", &["order_id", "vin", "status"]),
    ("part", &["part_number", "description"]),
    ("appointment", &["appointment_id", "start"]),
    (
        "finance_application",
        &["application_id", "customer_id", "amount"],
    ),
    ("lead", &["lead_id", "source"]),
];

/// The required fields of a domain, or `None` for an unknown domain.
pub fn required_fields(domain: &str) -> Option<&'static [&'static str]> {
    DOMAINS
        .iter()
        .find(|(d, _)| *d == domain)
        .map(|(_, fields)| *fields)
}

/// The names of every domain, for messages.
pub fn domain_names() -> String {
    DOMAINS
        .iter()
        .map(|(d, _)| *d)
        .collect::<Vec<_>>()
        .join(", ")
}

//! A connector definition parsed into types, once, after validation.
//!
//! `connector::validate` walks the document and reports every problem with
//! its path; [`Definition::checked`] runs it and then reads the document
//! into these types, so the call path (rendering, auth, resilience,
//! pagination) matches on enums and reads fields instead of indexing JSON.
//! Defaults the format documents (`docs/connectors.md`) are written here,
//! once. The raw document stays the stored form: versions, diffs and the
//! catalogue's pages show it as it was written.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::connector::{Problem, validate};

/// A validated connector definition.
#[derive(Debug, Clone, Deserialize)]
pub struct Definition {
    /// The system's display name.
    pub name: String,
    /// Where calls go unless a connection overrides it.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The auth schemes a connection may choose from.
    pub auth: Auth,
    /// The operations, in document order.
    pub operations: Vec<Operation>,
    /// The operation Test Connection and health checks call.
    #[serde(default)]
    pub health_check: Option<String>,
    /// Timeouts, retries, breaker and rate limit.
    #[serde(default)]
    pub resilience: Resilience,
    /// CDM mappings by operation id (evaluated by `cdm::mapping`).
    #[serde(default)]
    pub mappings: BTreeMap<String, Value>,
}

/// `auth`.
#[derive(Debug, Clone, Deserialize)]
pub struct Auth {
    /// Its schemes.
    pub schemes: Vec<AuthScheme>,
}

/// An auth scheme's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    /// No credentials.
    None,
    /// A static key in a header or the query.
    ApiKey,
    /// HTTP Basic.
    Basic,
    /// A static bearer token.
    Bearer,
    /// OAuth2 client credentials.
    Oauth2ClientCredentials,
    /// OAuth2 resource owner password.
    Oauth2Password,
    /// OAuth2 authorization code (a refresh token kept by the connection).
    Oauth2AuthorizationCode,
    /// OpenID Connect discovery, then client credentials.
    OpenidConnect,
    /// A key fetched from a login endpoint.
    DynamicApiKey,
    /// AWS Signature Version 4.
    AwsSigv4,
    /// A client certificate.
    MutualTls,
}

impl AuthType {
    /// Every type, in the format's order.
    pub const ALL: [AuthType; 11] = [
        AuthType::None,
        AuthType::ApiKey,
        AuthType::Basic,
        AuthType::Bearer,
        AuthType::Oauth2ClientCredentials,
        AuthType::Oauth2Password,
        AuthType::Oauth2AuthorizationCode,
        AuthType::OpenidConnect,
        AuthType::DynamicApiKey,
        AuthType::AwsSigv4,
        AuthType::MutualTls,
    ];

    /// Its name in the format and on a connection.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::None => "none",
            AuthType::ApiKey => "api_key",
            AuthType::Basic => "basic",
            AuthType::Bearer => "bearer",
            AuthType::Oauth2ClientCredentials => "oauth2_client_credentials",
            AuthType::Oauth2Password => "oauth2_password",
            AuthType::Oauth2AuthorizationCode => "oauth2_authorization_code",
            AuthType::OpenidConnect => "openid_connect",
            AuthType::DynamicApiKey => "dynamic_api_key",
            AuthType::AwsSigv4 => "aws_sigv4",
            AuthType::MutualTls => "mutual_tls",
        }
    }

    /// The type with this name.
    pub fn named(name: &str) -> Option<AuthType> {
        AuthType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The credential fields a scheme of this type takes unless it lists
    /// its own: (name, secret, required).
    fn default_fields(self) -> Vec<CredentialField> {
        let kind = self.as_str();
        super::connector::AUTH_TYPES
            .iter()
            .find(|(t, _)| *t == kind)
            .map(|(_, fields)| {
                fields
                    .iter()
                    .map(|(name, secret)| CredentialField {
                        name: (*name).to_owned(),
                        label: None,
                        secret: *secret,
                        required: !(*name == "session_token"
                            || (self == AuthType::OpenidConnect && *name == "client_secret")),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A credential a connection gives for a scheme.
#[derive(Debug, Clone, Deserialize)]
pub struct CredentialField {
    /// Its name (`client_id`).
    pub name: String,
    /// What forms show.
    #[serde(default)]
    pub label: Option<String>,
    /// Whether it is write-only.
    #[serde(default)]
    pub secret: bool,
    /// Whether a connection must give it.
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// How OAuth2 client credentials are sent to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthStyle {
    /// HTTP Basic (the default).
    #[default]
    ClientSecretBasic,
    /// In the form body.
    ClientSecretPost,
}

/// Scopes, as a list or one space-separated string.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Scopes {
    /// `["a", "b"]`.
    List(Vec<String>),
    /// `"a b"`.
    Text(String),
    /// None given.
    #[default]
    None,
}

impl Scopes {
    /// Each scope.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Scopes::List(l) => l.clone(),
            Scopes::Text(t) => t.split_whitespace().map(str::to_owned).collect(),
            Scopes::None => Vec::new(),
        }
    }
}

/// One auth scheme; which settings apply depends on its type (validation
/// requires the ones a type needs).
#[derive(Debug, Clone, Deserialize)]
pub struct AuthScheme {
    /// Its type.
    #[serde(rename = "type")]
    pub kind: AuthType,
    /// `api_key`, `dynamic_api_key`: the header the key goes in.
    #[serde(default)]
    pub header: Option<String>,
    /// `api_key`: the query parameter the key goes in.
    #[serde(default)]
    pub query: Option<String>,
    /// `api_key`, `dynamic_api_key`: text before the key.
    #[serde(default)]
    pub prefix: Option<String>,
    /// OAuth2: the token endpoint (absolute, or relative to the base URL).
    #[serde(default)]
    pub token_url: Option<String>,
    /// OAuth2 authorization code: where users consent.
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// OAuth2 and OpenID Connect scopes.
    #[serde(default)]
    pub scopes: Scopes,
    /// OAuth2: how the client authenticates at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuthStyle,
    /// OpenID Connect: the discovery document.
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// `dynamic_api_key`: the login request's method.
    #[serde(default)]
    pub method: Option<String>,
    /// `dynamic_api_key`: the login URL.
    #[serde(default)]
    pub url: Option<String>,
    /// `dynamic_api_key`: JSON Pointer to the key in the login answer.
    #[serde(default)]
    pub pointer: Option<String>,
    /// `aws_sigv4`: the region.
    #[serde(default)]
    pub region: Option<String>,
    /// `aws_sigv4`: the service.
    #[serde(default)]
    pub service: Option<String>,
    /// The credentials it takes, when not the type's usual ones.
    #[serde(default)]
    pub fields: Option<Vec<CredentialField>>,
}

impl AuthScheme {
    /// The credentials a connection gives for it.
    pub fn credential_fields(&self) -> Vec<CredentialField> {
        match &self.fields {
            Some(fields) => fields.clone(),
            None => self.kind.default_fields(),
        }
    }
}

/// An HTTP method an operation may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// HEAD.
    Head,
    /// OPTIONS.
    Options,
}

impl Method {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
        }
    }
}

/// One operation of the system's API.
#[derive(Debug, Clone, Deserialize)]
pub struct Operation {
    /// Its id (unique in the definition).
    pub id: String,
    /// Its display name.
    pub name: String,
    /// The HTTP method.
    pub method: Method,
    /// The path template (`/vehicles/{vin}`).
    pub path: String,
    /// Its parameters.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    /// JSON Schema of the request body.
    #[serde(default)]
    pub request_schema: Option<Value>,
    /// JSON Schema of the response body.
    #[serde(default)]
    pub response_schema: Option<Value>,
    /// How to fetch further pages.
    #[serde(default)]
    pub pagination: Option<Pagination>,
    /// Whether a failed try may be repeated although the method is not idempotent.
    #[serde(default)]
    pub safe_to_retry: bool,
}

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamIn {
    /// Into the path template.
    Path,
    /// Into the query string.
    Query,
    /// Into a header.
    Header,
    /// As the JSON body.
    Body,
}

impl ParamIn {
    /// Its name in the format.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamIn::Path => "path",
            ParamIn::Query => "query",
            ParamIn::Header => "header",
            ParamIn::Body => "body",
        }
    }
}

/// A parameter's JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// A string.
    String,
    /// An integer (or a string holding one).
    Integer,
    /// A number (or a string holding one).
    Number,
    /// true or false (or the strings).
    Boolean,
    /// A list.
    Array,
    /// An object.
    Object,
}

impl ParamType {
    /// Its name in the format.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
            ParamType::Object => "object",
        }
    }
}

/// An operation's parameter.
#[derive(Debug, Clone, Deserialize)]
pub struct Parameter {
    /// Its name.
    pub name: String,
    /// Where it goes.
    #[serde(rename = "in")]
    pub place: ParamIn,
    /// Its type, if declared.
    #[serde(default, rename = "type")]
    pub kind: Option<ParamType>,
    /// Whether a value is needed (path parameters always are).
    #[serde(default)]
    pub required: bool,
    /// The value used when none is given.
    #[serde(default)]
    pub default: Option<Value>,
}

impl Parameter {
    /// Whether a value is needed.
    pub fn is_required(&self) -> bool {
        self.required || self.place == ParamIn::Path
    }
}

/// A pagination style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaginationStyle {
    /// One page only.
    #[default]
    None,
    /// `offset` and `limit` parameters.
    OffsetLimit,
    /// `page` and `size` parameters.
    PageNumber,
    /// A cursor read from each answer.
    Cursor,
    /// RFC 8288 `Link: <…>; rel="next"`.
    LinkHeader,
}

/// `operations[].pagination`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Pagination {
    /// The style.
    pub style: PaginationStyle,
    /// `page_number`: the page parameter (`page`).
    #[serde(default)]
    pub page_param: Option<String>,
    /// `page_number`: the page-size parameter.
    #[serde(default)]
    pub size_param: Option<String>,
    /// `offset_limit`: the offset parameter (`offset`).
    #[serde(default)]
    pub offset_param: Option<String>,
    /// `offset_limit`: the limit parameter (`limit`).
    #[serde(default)]
    pub limit_param: Option<String>,
    /// `cursor`: the parameter the cursor goes in (`cursor`).
    #[serde(default)]
    pub cursor_param: Option<String>,
    /// `cursor`: JSON Pointer to the next cursor in an answer (`/next_cursor`).
    #[serde(default)]
    pub cursor_pointer: Option<String>,
    /// JSON Pointer to the records in an answer.
    #[serde(default)]
    pub items_pointer: Option<String>,
    /// At most this many pages per call.
    #[serde(default)]
    pub max_pages: Option<u32>,
}

/// `resilience`.
#[derive(Debug, Clone, Deserialize)]
pub struct Resilience {
    /// Each try's deadline.
    #[serde(default = "Resilience::default_timeout_ms")]
    pub timeout_ms: u32,
    /// Retries of failed tries.
    #[serde(default)]
    pub retries: Retries,
    /// Stop calling a failing system for a while.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// At most this many calls per second per connection.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// The header the system reads idempotency keys from.
    #[serde(default)]
    pub idempotency_header: Option<String>,
}

impl Resilience {
    fn default_timeout_ms() -> u32 {
        30_000
    }
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience {
            timeout_ms: Resilience::default_timeout_ms(),
            retries: Retries::default(),
            circuit_breaker: None,
            rate_limit: None,
            idempotency_header: None,
        }
    }
}

/// `resilience.retries`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct Retries {
    /// Tries in all (1: no retry).
    pub max_attempts: u32,
    /// The first pause.
    pub initial_backoff_ms: u32,
    /// The longest pause.
    pub max_backoff_ms: u32,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            max_attempts: 1,
            initial_backoff_ms: 200,
            max_backoff_ms: 5_000,
        }
    }
}

/// `resilience.circuit_breaker`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct CircuitBreaker {
    /// Failures in a row that open it.
    pub failure_threshold: u32,
    /// How long it stays open.
    #[serde(default = "CircuitBreaker::default_open_for_ms")]
    pub open_for_ms: u64,
}

impl CircuitBreaker {
    fn default_open_for_ms() -> u64 {
        60_000
    }
}

/// `resilience.rate_limit`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct RateLimit {
    /// Calls per second.
    pub requests_per_second: u32,
}

impl Definition {
    /// Validates `doc` and reads it into types: every problem with its
    /// path, or the definition.
    pub fn checked(doc: &Value) -> Result<Definition, Vec<Problem>> {
        let problems = validate(doc);
        if !problems.is_empty() {
            return Err(problems);
        }
        Definition::read(doc)
    }

    /// Reads a stored version's text (validated when it was saved).
    pub fn stored(text: &str) -> Result<Definition, Vec<Problem>> {
        let doc: Value = serde_json::from_str(text).map_err(|e| {
            vec![Problem {
                path: "$".into(),
                problem: format!("not valid JSON: {e}"),
            }]
        })?;
        Definition::read(&doc)
    }

    /// Reads a document validated before into types.
    pub fn read(doc: &Value) -> Result<Definition, Vec<Problem>> {
        Definition::deserialize(doc).map_err(|e| {
            vec![Problem {
                path: "$".into(),
                problem: format!("does not match the connector format: {e}"),
            }]
        })
    }

    /// The operation with this id.
    pub fn operation(&self, id: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| o.id == id)
    }

    /// The scheme named `auth_type`, if the connector offers it.
    pub fn scheme(&self, auth_type: &str) -> Option<&AuthScheme> {
        self.auth
            .schemes
            .iter()
            .find(|s| s.kind.as_str() == auth_type)
    }

    /// The roles a grant on a connection of this connector may name:
    /// `admin` and each HTTP method its operations use.
    pub fn grant_roles(&self) -> Vec<String> {
        let mut roles = vec!["admin".to_owned()];
        for op in &self.operations {
            let m = op.method.as_str();
            if !roles.iter().any(|r| r == m) {
                roles.push(m.to_owned());
            }
        }
        roles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_connector_reads_into_types() {
        for (file, text) in super::super::builtin::DEFINITIONS {
            let doc = super::super::connector::parse(text).unwrap();
            let d = Definition::checked(&doc).unwrap_or_else(|p| panic!("{file}: {p:?}"));
            assert!(!d.operations.is_empty(), "{file}");
        }
    }

    #[test]
    fn invalid_documents_give_every_problem_not_a_type() {
        let doc = serde_json::json!({"format": "dibop.connector/v1", "name": "X",
            "operations": [{"id": "a", "method": "FETCH", "path": "x"}]});
        let problems = Definition::checked(&doc).unwrap_err();
        assert!(problems.len() > 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.path == "operations[0].method"));
        assert!(problems.iter().any(|p| p.path == "operations[0].path"));
    }
}

//! The platform's shared vocabulary: closed sets of names (roles, plan
//! tiers, tenant statuses, step kinds) as enums, parsed once where text comes in (a
//! request, a row, a flag) and matched on everywhere else. Each maps to the
//! same snake_case text in JSON, in the database and on the command line.
//!
//! Also the few rules on shared shapes that several contexts apply: what
//! a valid name is, and how an orchestration's step tree is walked.
//!
//! This module sits at the bottom beside `store` and `support`: every
//! context may use it, and it uses none of them.

use std::fmt;
use std::str::FromStr;

/// Declares a closed set of names: the enum, its text, parsing with an
/// error that lists what is accepted, and serde through the text.
macro_rules! names {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Its text (as stored and sent).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        what: $what,
                        given: s.chars().take(64).collect(),
                        accepted: &[$($text),+],
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A text that names none of a set's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}`: use one of {}", accepted.join(", "))]
pub struct UnknownName {
    /// What was being named (`role`, `tier`, ...).
    pub what: &'static str,
    /// The text given (at most 64 characters of it).
    pub given: String,
    /// The accepted texts.
    pub accepted: &'static [&'static str],
}

names! {
    /// What a user or token may do. `platform_admin` exists only in the
    /// reserved platform tenant; every other tenant holds the other three.
    Role, "role" {
        /// Manages tenants and the shared catalogue; never sees a tenant's data.
        PlatformAdmin = "platform_admin",
        /// Everything within the tenant, users and tokens included.
        EnterpriseAdmin = "enterprise_admin",
        /// Builds and runs: connectors, connections, orchestrations.
        Operator = "operator",
        /// Reads only.
        Viewer = "viewer",
    }
}

impl Role {
    /// The roles a tenant's users and tokens may hold.
    pub const TENANT: [Role; 3] = [Role::EnterpriseAdmin, Role::Operator, Role::Viewer];

    /// Whether it may change anything (every role but `viewer`).
    pub fn writes(self) -> bool {
        self != Role::Viewer
    }

    /// Whether it administers its tenant (or the platform).
    pub fn is_admin(self) -> bool {
        matches!(self, Role::EnterpriseAdmin | Role::PlatformAdmin)
    }

    /// Whether personal data is shown to it unless withheld per user or token.
    pub fn sees_pii_by_default(self) -> bool {
        matches!(self, Role::EnterpriseAdmin | Role::Operator)
    }
}

names! {
    /// A tenant's plan: its quotas and limits.
    Tier, "tier" {
        /// The smallest quotas.
        Free = "free",
        /// The default for a new tenant.
        Standard = "standard",
        /// The largest quotas.
        Premium = "premium",
    }
}

names! {
    /// Whether a tenant may use the platform.
    TenantStatus, "tenant status" {
        /// Serving.
        Active = "active",
        /// Its tokens and sessions are refused until it is resumed.
        Suspended = "suspended",
    }
}

names! {
    /// The kinds of orchestration steps: parsed once from a definition's
    /// `type`, matched on by the engine (a new kind does not compile until
    /// the engine runs it).
    StepKind, "step type" {
        /// An operation of a connection.
        Call = "call",
        /// A jq expression over the execution's data.
        Transform = "transform",
        /// `if`/`then`/`else`, or `switch`/`cases`/`default`.
        Branch = "branch",
        /// Steps for each item, in sequence or in parallel.
        Foreach = "foreach",
        /// Branches run side by side.
        Parallel = "parallel",
        /// A durable wait.
        Delay = "delay",
        /// Another orchestration of the tenant.
        CallOrchestration = "call_orchestration",
        /// Values set from templates.
        Set = "set",
        /// Ends the execution as failed.
        Fail = "fail",
        /// A connection's records mapped onto the CDM.
        MapToCdm = "map_to_cdm",
        /// CDM records mapped onto a connection's shape.
        MapFromCdm = "map_from_cdm",
    }
}

impl StepKind {
    /// Whether it maps records between a connection and the CDM.
    pub fn maps(self) -> bool {
        matches!(self, StepKind::MapToCdm | StepKind::MapFromCdm)
    }
}

names! {
    /// Where an execution is in its life.
    ExecutionStatus, "execution status" {
        /// Waiting for a worker (or for its tenant's concurrency slot).
        Queued = "queued",
        /// Claimed by a node and running.
        Running = "running",
        /// Every step succeeded.
        Succeeded = "succeeded",
        /// It finished, with dead-lettered records or failed `foreach` items.
        PartiallySucceeded = "partially_succeeded",
        /// A step failed and nothing handled it.
        Failed = "failed",
        /// Cancelled by a person or a client.
        Cancelled = "cancelled",
    }
}

impl ExecutionStatus {
    /// Whether it has ended (nothing moves it any more).
    pub fn is_finished(self) -> bool {
        !matches!(self, ExecutionStatus::Queued | ExecutionStatus::Running)
    }

    /// Whether it ended with a result (fully or partly).
    pub fn succeeded(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Succeeded | ExecutionStatus::PartiallySucceeded
        )
    }
}

names! {
    /// Why a step or an execution failed. A call's classes are the
    /// protocol's (what the agent or the control plane found calling the
    /// system); the engine adds its own.
    ErrorClass, "error class" {
        /// The target refused the credentials (401/403).
        AuthFailure = "auth_failure",
        /// The call or the step did not finish within its deadline.
        Timeout = "timeout",
        /// Connection refused, reset, DNS failure and the like.
        NetworkError = "network_error",
        /// The TLS handshake with the target failed.
        TlsError = "tls_error",
        /// The agent's allow-list forbids the target.
        PolicyDenied = "policy_denied",
        /// No agent of the relay group could take the call.
        AgentUnavailable = "agent_unavailable",
        /// The target, or the tenant's quota, answered "too many".
        RateLimited = "rate_limited",
        /// The target answered with another error status.
        UpstreamError = "upstream_error",
        /// The request could not be made (bad URL, parameter or header).
        InvalidRequest = "invalid_request",
        /// The response exceeded the size limit.
        ResponseTooLarge = "response_too_large",
        /// The connection's circuit breaker is open: the call was not sent.
        CircuitOpen = "circuit_open",
        /// The connector's rate limit would have delayed the call past its deadline.
        Throttled = "throttled",
        /// An expression failed (jq error, wrong type, runaway evaluation).
        ExpressionError = "expression_error",
        /// A record did not satisfy the CDM's rules.
        ValidationError = "validation_error",
        /// A `fail` step, or a sub-orchestration that failed.
        Failed = "failed",
        /// The execution was cancelled.
        Cancelled = "cancelled",
        /// A step that did not run (its branch was not taken, the run ended).
        Skipped = "skipped",
        /// Something failed inside DIBOP.
        Internal = "internal",
    }
}

impl ErrorClass {
    /// The classes a step's retry policy may list as `non_retryable`.
    pub const RETRY_EXCLUDABLE: &'static [ErrorClass] = &[
        ErrorClass::AuthFailure,
        ErrorClass::Timeout,
        ErrorClass::NetworkError,
        ErrorClass::TlsError,
        ErrorClass::PolicyDenied,
        ErrorClass::AgentUnavailable,
        ErrorClass::RateLimited,
        ErrorClass::UpstreamError,
        ErrorClass::InvalidRequest,
        ErrorClass::ResponseTooLarge,
        ErrorClass::CircuitOpen,
        ErrorClass::Throttled,
        ErrorClass::ExpressionError,
        ErrorClass::ValidationError,
        ErrorClass::Internal,
    ];

    /// Whether trying the step again could help: not for a deliberate
    /// failure, a cancellation or an expression (it fails the same way).
    pub fn may_retry(self) -> bool {
        !matches!(
            self,
            ErrorClass::Failed
                | ErrorClass::Cancelled
                | ErrorClass::ExpressionError
                | ErrorClass::Skipped
        )
    }
}

impl From<dibop_protocol::ErrorClass> for ErrorClass {
    fn from(c: dibop_protocol::ErrorClass) -> Self {
        use dibop_protocol::ErrorClass as P;
        match c {
            P::AuthFailure => ErrorClass::AuthFailure,
            P::Timeout => ErrorClass::Timeout,
            P::NetworkError => ErrorClass::NetworkError,
            P::TlsError => ErrorClass::TlsError,
            P::PolicyDenied => ErrorClass::PolicyDenied,
            P::AgentUnavailable => ErrorClass::AgentUnavailable,
            P::RateLimited => ErrorClass::RateLimited,
            P::UpstreamError => ErrorClass::UpstreamError,
            P::InvalidRequest => ErrorClass::InvalidRequest,
            P::ResponseTooLarge => ErrorClass::ResponseTooLarge,
            P::Cancelled => ErrorClass::Cancelled,
            P::Internal => ErrorClass::Internal,
            P::CircuitOpen => ErrorClass::CircuitOpen,
            P::Throttled => ErrorClass::Throttled,
        }
    }
}

/// What is wrong with a name people give a resource (a connection, a
/// token, a group), if anything.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.chars().count() > 100 {
        Some("must be 1 to 100 characters")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters (such as NUL or a line break)")
    } else {
        None
    }
}

/// Every step of an orchestration definition's step list, nested ones too
/// (branches, cases, loops, error handlers), that `wanted` picks, with its
/// path (`$.steps[2].then[0]`). Orchestrations run them; connections and
/// connectors ask which steps name them.
pub fn steps_where<'a>(
    steps: &'a serde_json::Value,
    at: &str,
    out: &mut Vec<(String, &'a serde_json::Value)>,
    wanted: &dyn Fn(&serde_json::Value) -> bool,
) {
    for (i, s) in steps.as_array().into_iter().flatten().enumerate() {
        let path = format!("{at}[{i}]");
        if wanted(s) {
            out.push((path.clone(), s));
        }
        for key in ["then", "else", "default", "steps"] {
            if s.get(key).is_some() {
                steps_where(&s[key], &format!("{path}.{key}"), out, wanted);
            }
        }
        if let Some(h) = s.get("on_error").filter(|h| h.is_object()) {
            steps_where(&h["steps"], &format!("{path}.on_error.steps"), out, wanted);
        }
        for (k, v) in s["cases"].as_object().into_iter().flatten() {
            steps_where(v, &format!("{path}.cases.{k}"), out, wanted);
        }
        for (b, v) in s["branches"].as_array().into_iter().flatten().enumerate() {
            steps_where(v, &format!("{path}.branches[{b}]"), out, wanted);
        }
    }
}

/// What the `call` steps of an orchestration definition name as their
/// connection (a name or an id), nested steps included.
pub fn called_connections(definition: &serde_json::Value) -> Vec<String> {
    let mut calls = Vec::new();
    steps_where(&definition["steps"], "$.steps", &mut calls, &|s| {
        s["type"] == "call"
    });
    calls
        .iter()
        .filter_map(|(_, s)| s["connection"].as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(*role));
            let json = serde_json::to_string(role).unwrap();
            assert_eq!(serde_json::from_str::<Role>(&json).unwrap(), *role);
        }
        for tier in Tier::ALL {
            assert_eq!(tier.to_string().parse::<Tier>(), Ok(*tier));
        }
    }

    #[test]
    fn an_unknown_name_says_what_is_accepted() {
        let err = "owner".parse::<Role>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown role `owner`: use one of platform_admin, enterprise_admin, operator, viewer"
        );
        assert!(serde_json::from_str::<Tier>("\"gold\"").is_err());
    }
}

//! Tenants' plans: tiers and the limits they set (a tenant may carry
//! custom values instead). How the limits are enforced, across replicas,
//! is in [`crate::quotas`].

use serde::Serialize;

use crate::domain::Tier;
use crate::store::Tenant;

/// A tenant's effective limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Limits {
    /// Relayed calls per calendar month (UTC).
    pub calls_per_month: i64,
    /// API requests per minute.
    pub requests_per_minute: i64,
    /// Orchestration executions running at once (more wait in the queue).
    pub concurrent_executions: i64,
    /// Stored bytes (executions, step traces, call records, definitions)
    /// above which new work that stores data is refused.
    pub storage_bytes: i64,
    /// Days finished executions and call records are kept.
    pub retention_days: i64,
}

const MIB: i64 = 1024 * 1024;

/// The tiers and their limits.
pub const TIERS: [(Tier, Limits); 3] = [
    (
        Tier::Free,
        Limits {
            calls_per_month: 1_000,
            requests_per_minute: 10,
            concurrent_executions: 2,
            storage_bytes: 100 * MIB,
            retention_days: 7,
        },
    ),
    (
        Tier::Standard,
        Limits {
            calls_per_month: 100_000,
            requests_per_minute: 60,
            concurrent_executions: 10,
            storage_bytes: 10 * 1024 * MIB,
            retention_days: 30,
        },
    ),
    (
        Tier::Premium,
        Limits {
            calls_per_month: 1_000_000,
            requests_per_minute: 300,
            concurrent_executions: 50,
            storage_bytes: 100 * 1024 * MIB,
            retention_days: 90,
        },
    ),
];

/// The limits a tenant runs with: custom values, else its tier's.
pub fn limits_of(t: &Tenant) -> Limits {
    let tier = TIERS
        .iter()
        .find(|(n, _)| *n == t.tier)
        .map_or(TIERS[1].1, |(_, l)| *l);
    Limits {
        calls_per_month: t.calls_per_month.unwrap_or(tier.calls_per_month),
        requests_per_minute: t.requests_per_minute.unwrap_or(tier.requests_per_minute),
        concurrent_executions: t
            .concurrent_executions
            .unwrap_or(tier.concurrent_executions),
        storage_bytes: t.storage_bytes.unwrap_or(tier.storage_bytes),
        retention_days: t.retention_days.unwrap_or(tier.retention_days),
    }
}

/// A tenant row for unit tests.
#[cfg(test)]
pub(crate) fn test_tenant(tier: &str) -> Tenant {
    Tenant {
        id: "ten_1".into(),
        name: "acme".into(),
        created_at: 0,
        status: crate::domain::TenantStatus::Active,
        tier: tier.parse().unwrap(),
        calls_per_month: None,
        requests_per_minute: None,
        enterprise_publishing: 0,
        concurrent_executions: None,
        storage_bytes: None,
        retention_days: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(tier: &str) -> Tenant {
        test_tenant(tier)
    }

    #[test]
    fn tiers_and_custom_values() {
        assert_eq!(
            limits_of(&tenant("free")),
            Limits {
                calls_per_month: 1_000,
                requests_per_minute: 10,
                concurrent_executions: 2,
                storage_bytes: 100 * MIB,
                retention_days: 7,
            }
        );
        assert_eq!(limits_of(&tenant("premium")).requests_per_minute, 300);
        let mut t = tenant("standard");
        t.requests_per_minute = Some(5);
        assert_eq!(
            limits_of(&t),
            Limits {
                calls_per_month: 100_000,
                requests_per_minute: 5,
                concurrent_executions: 10,
                storage_bytes: 10 * 1024 * MIB,
                retention_days: 30,
            }
        );
    }
}

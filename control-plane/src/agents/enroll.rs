//! Enrollment tokens (single use, short-lived: how a new agent proves it
//! may join a group) and how an agent stands right now.

use dibop_protocol::EnrollmentToken;

use crate::Core;
use crate::identity::Principal;
use crate::store::{AgentRow, StoreError, now_unix};
use dibop_runtime::support::rfc3339;

/// The default lifetime of an enrollment token.
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;
/// The longest lifetime of an enrollment token.
pub const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// Why an agent was not revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// No such agent in the caller's tenant.
    #[error("agent `{0}` does not exist")]
    NoAgent(String),
    /// It was revoked before (when).
    #[error("agent {id} was already revoked at {}", rfc3339(*at))]
    AlreadyRevoked {
        /// The agent.
        id: String,
        /// When it was revoked.
        at: i64,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Revokes one of the caller's agents, audited in the transaction that
/// records it; the agent's tunnel is closed after the commit and it can
/// never connect again.
pub async fn revoke(core: &Core, p: &Principal, id: &str) -> Result<(), RevokeError> {
    match core.store.agent(&p.tenant_id, id).await? {
        None => return Err(RevokeError::NoAgent(id.to_owned())),
        Some(a) => {
            if let Some(at) = a.revoked_at {
                return Err(RevokeError::AlreadyRevoked {
                    id: id.to_owned(),
                    at,
                });
            }
        }
    }
    let tx = core.store.begin().await?;
    if !tx.revoke_agent(&p.tenant_id, id, now_unix()).await? {
        return Err(RevokeError::NoAgent(id.to_owned()));
    }
    crate::identity::audit::record_by(
        &tx,
        p,
        "agent.revoke",
        ("agent", id),
        serde_json::Value::Null,
    )
    .await?;
    tx.commit().await?;
    core.registry.disconnect(
        id,
        dibop_protocol::codes::CLOSE_REVOKED,
        "this agent was revoked by an administrator",
    );
    tracing::info!(agent_id = %id, tenant_id = %p.tenant_id, "agent revoked");
    Ok(())
}

/// Why no enrollment token was issued.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// No such group in the caller's tenant.
    #[error("no agent group `{0}`")]
    NoGroup(String),
    /// The lifetime asked for is out of range.
    #[error("ttl_secs = {0} must be between 1 and 2592000 (30 days)")]
    Ttl(u64),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An issued enrollment token: its secret is in `token` and nowhere else.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Its id (`enr_…`).
    pub id: String,
    /// The group an agent enrolled with it joins.
    pub group_id: String,
    /// That group's name.
    pub group_name: String,
    /// The token to hand to the dealer (address, secret, CA fingerprint).
    pub token: String,
    /// When it stops working (Unix seconds).
    pub expires_at: i64,
}

impl Issued {
    /// The one command to paste at the dealer site.
    pub fn install_command(&self) -> String {
        format!(
            "dibop-agent enroll '{}' && dibop-agent run --config /etc/dibop-agent/agent.toml",
            self.token
        )
    }
}

/// Issues an enrollment token for one of the caller's groups, audited in
/// the transaction that stores it.
pub async fn issue_token(
    core: &Core,
    p: &Principal,
    group_id: &str,
    ttl_secs: Option<u64>,
) -> Result<Issued, EnrollError> {
    let group = core
        .store
        .group(&p.tenant_id, group_id)
        .await?
        .ok_or_else(|| EnrollError::NoGroup(group_id.to_owned()))?;
    let ttl = ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if !(1..=MAX_TTL_SECS).contains(&ttl) {
        return Err(EnrollError::Ttl(ttl));
    }
    let secret = crate::support::ids::new_secret("");
    let id = crate::support::ids::new_id("enr");
    let expires_at = now_unix() + ttl as i64;
    let tx = core.store.begin().await?;
    tx.create_enrollment_token(
        &id,
        &p.tenant_id,
        &group.id,
        &crate::support::ids::hash_secret(&secret),
        expires_at,
    )
    .await?;
    crate::identity::audit::record_by(
        &tx,
        p,
        "enrollment_token.create",
        ("enrollment_token", &id),
        serde_json::json!({"group_id": group.id, "expires_at": rfc3339(expires_at)}),
    )
    .await?;
    tx.commit().await?;
    let token = EnrollmentToken {
        address: core.settings.public_tunnel_addr.clone(),
        secret,
        ca_sha256: core.ca.fingerprint(),
        expires_at_unix: expires_at,
    }
    .encode();
    Ok(Issued {
        id,
        group_id: group.id,
        group_name: group.name,
        token,
        expires_at,
    })
}

/// How an agent stands: from its live tunnel when it has one, else from
/// what the database last heard.
#[derive(Debug, Clone)]
pub struct AgentState {
    /// `online`, `offline` or `revoked`.
    pub status: &'static str,
    /// When it was last heard from (Unix seconds).
    pub last_seen: Option<i64>,
    /// Calls it is running now.
    pub in_flight: u32,
    /// The version it reported.
    pub version: String,
    /// The host it runs on.
    pub hostname: String,
}

/// The state of `a` now.
pub fn state_of(core: &Core, a: &AgentRow) -> AgentState {
    use std::sync::atomic::Ordering::Relaxed;
    match (core.registry.get(&a.id), a.revoked_at) {
        (_, Some(_)) => AgentState {
            status: "revoked",
            last_seen: a.last_seen,
            in_flight: 0,
            version: a.version.clone(),
            hostname: a.hostname.clone(),
        },
        (Some(live), None) => AgentState {
            status: "online",
            last_seen: Some(live.last_seen.load(Relaxed)),
            in_flight: live.in_flight.load(Relaxed),
            version: live.version.clone(),
            hostname: live.hostname.clone(),
        },
        (None, None) => AgentState {
            status: "offline",
            last_seen: a.last_seen,
            in_flight: 0,
            version: a.version.clone(),
            hostname: a.hostname.clone(),
        },
    }
}

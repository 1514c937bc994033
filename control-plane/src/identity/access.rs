//! Managing who has access to a tenant: users (create, change role,
//! disable, `view_pii`) and API tokens (create, revoke). The rules the JSON
//! API and the console share; every change is audited in the transaction
//! that makes it, and a change to a user or a revocation takes effect on
//! their next request (this node's caches are dropped at once).

use serde_json::json;

use super::audit::record_by;
use super::users::{new_user, tenant_role};
use super::{IdentityError, Principal, Role};
use crate::Core;
use crate::store::{ApiTokenRow, UserRow, now_unix};

/// The longest an API token may live (10 years).
pub const MAX_TOKEN_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// Refuses all but enterprise (or platform) admins, saying what they tried.
pub fn require_admin(p: &Principal, what: &str) -> Result<(), IdentityError> {
    if p.role.is_admin() {
        Ok(())
    } else {
        Err(IdentityError::Forbidden(format!(
            "the `{}` role cannot {what}: that needs the enterprise_admin role",
            p.role
        )))
    }
}

/// Creates a user of the caller's tenant with a password (Argon2id).
pub async fn create_user(
    core: &Core,
    p: &Principal,
    email: &str,
    password: &str,
    role: &str,
) -> Result<UserRow, IdentityError> {
    require_admin(p, "make changes")?;
    let user = new_user(&core.store, &p.tenant_id, email, password, role).await?;
    let tx = core.store.begin().await?;
    tx.create_user(&user).await?;
    record_by(
        &tx,
        p,
        "user.create",
        ("user", &user.id),
        json!({"email": user.email, "role": user.role}),
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

/// A change to a user: each part left `None` stays as it is.
#[derive(Debug, Default, Clone)]
pub struct UserChange {
    /// A new role (text, checked here).
    pub role: Option<String>,
    /// Disable (`true`) or enable (`false`).
    pub disabled: Option<bool>,
    /// Give (`Some(true)`), withhold (`Some(false)`) or return to the
    /// role's default (`None`) the `view_pii` permission.
    pub view_pii: Option<Option<bool>>,
}

/// Changes a user's role, state or `view_pii`; sessions see it on their
/// next request. An admin cannot lock themselves out (disable themselves or
/// give up the admin role).
pub async fn update_user(
    core: &Core,
    p: &Principal,
    id: &str,
    change: UserChange,
) -> Result<UserRow, IdentityError> {
    require_admin(p, "make changes")?;
    let role = match &change.role {
        None => None,
        Some(role) => Some(tenant_role(p.is_platform_admin(), role).map_err(|problem| {
            IdentityError::Invalid {
                message: "the change is invalid".into(),
                problems: vec![json!({"field": "role", "problem": problem})],
            }
        })?),
    };
    if p.user_id.as_deref() == Some(id)
        && (change.disabled == Some(true) || role.is_some_and(|r| !r.is_admin()))
    {
        return Err(IdentityError::Conflict {
            code: "own_access",
            message:
                "you cannot disable yourself or give up your own admin role: another admin can"
                    .into(),
        });
    }
    let disabled_at = change.disabled.map(|d| d.then(now_unix));
    let tx = core.store.begin().await?;
    let user = tx
        .update_user(
            &p.tenant_id,
            id,
            role,
            disabled_at,
            change.view_pii.map(|v| v.map(i64::from)),
        )
        .await?
        .ok_or_else(|| IdentityError::NotFound {
            what: "user",
            id: id.to_owned(),
        })?;
    let sessions = tx.session_ids_of(&user.id).await?;
    record_by(
        &tx,
        p,
        "user.update",
        ("user", &user.id),
        json!({"role": change.role, "disabled": change.disabled, "view_pii": change.view_pii}),
    )
    .await?;
    tx.commit().await?;
    // Sessions cached on this node must see the change on their next request.
    for session in sessions {
        core.tokens.forget(&session);
    }
    Ok(user)
}

/// What an API token is made with.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// For people (`reporting`, `DMS sync`).
    pub name: String,
    /// Its role (text, checked here).
    pub role: String,
    /// Lifetime in seconds; `None`: no expiry.
    pub ttl_secs: Option<u64>,
    /// Give or withhold `view_pii`; `None`: the role decides.
    pub view_pii: Option<bool>,
}

/// Creates an API token of the caller's tenant: its row and the secret,
/// which is shown once and stored only as a hash.
pub async fn create_token(
    core: &Core,
    p: &Principal,
    new: NewToken,
) -> Result<(ApiTokenRow, String), IdentityError> {
    require_admin(p, "make changes")?;
    let mut problems = Vec::new();
    let name = new.name.trim();
    if let Some(problem) = crate::domain::name_problem(name) {
        problems.push(json!({"field": "name", "problem": problem}));
    }
    let role = tenant_role(p.is_platform_admin(), &new.role);
    if let Err(problem) = &role {
        problems.push(json!({"field": "role", "problem": problem}));
    }
    if let Some(ttl) = new.ttl_secs
        && !(60..=MAX_TOKEN_TTL_SECS).contains(&ttl)
    {
        problems.push(
            json!({"field": "ttl_secs", "problem": "must be between 60 and 315360000 (10 years)"}),
        );
    }
    let (true, Ok(role)) = (problems.is_empty(), role) else {
        return Err(IdentityError::Invalid {
            message: "the API token is invalid".into(),
            problems,
        });
    };
    let expires_at = new.ttl_secs.map(|t| now_unix() + t as i64);
    let tx = core.store.begin().await?;
    let (mut row, secret) =
        super::tokens::issue_token(&tx, &p.tenant_id, name, role, expires_at).await?;
    if let Some(v) = new.view_pii {
        tx.set_token_view_pii(&row.id, i64::from(v)).await?;
        row.view_pii = Some(i64::from(v));
    }
    record_by(
        &tx,
        p,
        "api_token.create",
        ("api_token", &row.id),
        json!({"name": row.name, "role": row.role, "view_pii": new.view_pii}),
    )
    .await?;
    tx.commit().await?;
    Ok((row, secret))
}

/// Revokes an API token of the caller's tenant: it stops working at once on
/// this node.
pub async fn revoke_token(
    core: &Core,
    p: &Principal,
    id: &str,
) -> Result<ApiTokenRow, IdentityError> {
    require_admin(p, "make changes")?;
    let not_found = || IdentityError::NotFound {
        what: "API token",
        id: id.to_owned(),
    };
    match core.store.api_token(&p.tenant_id, id).await? {
        None => return Err(not_found()),
        Some(t) if t.revoked_at.is_some() => {
            return Err(IdentityError::Conflict {
                code: "already_revoked",
                message: format!(
                    "API token `{}` was already revoked at {}",
                    t.prefix,
                    dibop_runtime::support::rfc3339(t.revoked_at.unwrap_or_default())
                ),
            });
        }
        Some(_) => {}
    }
    let tx = core.store.begin().await?;
    let row = tx
        .revoke_api_token(&p.tenant_id, id, now_unix())
        .await?
        .ok_or_else(not_found)?;
    record_by(
        &tx,
        p,
        "api_token.revoke",
        ("api_token", &row.id),
        json!({"name": row.name}),
    )
    .await?;
    tx.commit().await?;
    core.tokens.forget(&row.id);
    Ok(row)
}

/// Whether a role may be given by the caller (platform admins only give
/// `platform_admin`; tenants never do).
pub fn assignable_roles(p: &Principal) -> &'static [Role] {
    if p.is_platform_admin() {
        &[Role::PlatformAdmin]
    } else {
        &[Role::EnterpriseAdmin, Role::Operator, Role::Viewer]
    }
}

//! People: users, their passwords and sign-in.
//!
//! Passwords are hashed with Argon2id (OWASP baseline parameters, PHC
//! strings so they can be raised later) on the blocking pool, at most
//! [`MAX_CONCURRENT_HASHES`] at once: each hash takes about 19 MiB, so a
//! login flood cannot exhaust memory. A session is an API token linked to
//! its user (12 hours): the user's current role applies on the next request,
//! and disabling the user ends every session.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::Semaphore;

use super::{IdentityError, PLATFORM_TENANT, Role};
use crate::store::{ApiTokenRow, Store, StoreError, UserRow, now_unix};

/// Hashes running at once (each allocates about 19 MiB).
pub const MAX_CONCURRENT_HASHES: usize = 2;

/// Lifetime of a session.
pub const SESSION_TTL_SECS: i64 = 12 * 3600;

/// A session left unused this long ends (seconds).
pub const SESSION_IDLE_SECS: i64 = 30 * 60;

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;

static HASHING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(MAX_CONCURRENT_HASHES));

/// A hash to compare against when the email is unknown, so that unknown and
/// known emails take the same time.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    argon2::Argon2::default()
        .hash_password(b"dibop-timing-equaliser")
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// Hashes a password off the async threads.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    let _permit = HASHING.acquire().await?;
    let hash = tokio::task::spawn_blocking(move || {
        argon2::Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await?
    .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    Ok(hash)
}

/// Checks a password against a PHC string off the async threads.
pub async fn verify_password(password: String, hash: String) -> bool {
    let Ok(_permit) = HASHING.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

fn email_problem(email: &str) -> Option<&'static str> {
    let ok = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    (!ok).then_some("must be an email address")
}

fn password_problem(password: &str) -> Option<String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        Some(format!("must be at least {MIN_PASSWORD_LEN} characters"))
    } else if n > 1024 {
        Some("must be at most 1024 characters".into())
    } else {
        None
    }
}

/// `role` parsed for a tenant (the platform tenant when `platform`), or
/// why it cannot exist there: the platform tenant holds platform admins
/// only, every other tenant the enterprise roles only.
pub fn tenant_role(platform: bool, role: &str) -> Result<Role, String> {
    let parsed = role.parse::<Role>().ok();
    if platform {
        parsed.filter(|r| *r == Role::PlatformAdmin).ok_or_else(|| {
            format!(
                "the platform tenant holds platform admins only: must be {}",
                Role::PlatformAdmin
            )
        })
    } else {
        parsed.filter(|r| Role::TENANT.contains(r)).ok_or_else(|| {
            let names: Vec<&str> = Role::TENANT.iter().map(|r| r.as_str()).collect();
            format!("must be one of {}", names.join(", "))
        })
    }
}

/// A checked user with its password hashed, not yet stored: every problem
/// of the email, password and role, or the row to insert (hashing happens
/// before, not inside, the transaction that stores it).
pub async fn new_user(
    store: &Store,
    tenant_id: &str,
    email: &str,
    password: &str,
    role: &str,
) -> Result<UserRow, IdentityError> {
    let email = normalize_email(email);
    let mut problems = Vec::new();
    if let Some(p) = email_problem(&email) {
        problems.push(serde_json::json!({"field": "email", "problem": p}));
    }
    if let Some(p) = password_problem(password) {
        problems.push(serde_json::json!({"field": "password", "problem": p}));
    }
    let platform = store
        .tenant(tenant_id)
        .await?
        .is_some_and(|t| t.name == PLATFORM_TENANT);
    let role = tenant_role(platform, role);
    if let Err(problem) = &role {
        problems.push(serde_json::json!({"field": "role", "problem": problem}));
    }
    let (true, Ok(role)) = (problems.is_empty(), role) else {
        return Err(IdentityError::Invalid {
            message: "the user is invalid".into(),
            problems,
        });
    };
    let password_hash = hash_password(password.to_owned())
        .await
        .map_err(|e| IdentityError::Internal(format!("cannot hash the password: {e}")))?;
    let user = UserRow {
        id: crate::support::ids::new_id("usr"),
        tenant_id: tenant_id.to_owned(),
        email,
        password_hash,
        role,
        created_at: now_unix(),
        disabled_at: None,
        view_pii: None,
    };
    Ok(user)
}

/// Checks, hashes and stores a user (see [`new_user`]).
pub async fn create_user(
    store: &Store,
    tenant_id: &str,
    email: &str,
    password: &str,
    role: &str,
) -> Result<UserRow, IdentityError> {
    let user = new_user(store, tenant_id, email, password, role).await?;
    store.create_user(&user).await?;
    Ok(user)
}

/// The user these credentials belong to, or `None` for wrong credentials
/// or a disabled user (unknown emails take as long as known ones).
pub async fn check_credentials(
    store: &Store,
    email: &str,
    password: &str,
) -> Result<Option<UserRow>, StoreError> {
    let user = store.user_by_email(&normalize_email(email)).await?;
    let hash = user
        .as_ref()
        .map_or_else(|| DUMMY_HASH.clone(), |u| u.password_hash.clone());
    let matches = verify_password(password.to_owned(), hash).await;
    Ok(user.filter(|u| matches && u.disabled_at.is_none()))
}

/// Starts a session of `user`: its token row and the secret to hand out.
pub async fn start_session(
    store: &Store,
    user: &UserRow,
) -> Result<(ApiTokenRow, String), StoreError> {
    let secret = crate::support::ids::new_secret("dibop_");
    let row = ApiTokenRow {
        id: crate::support::ids::new_id("tok"),
        tenant_id: user.tenant_id.clone(),
        name: format!("session of {}", user.email),
        role: user.role,
        prefix: secret.chars().take(12).collect(),
        created_at: now_unix(),
        expires_at: Some(now_unix() + SESSION_TTL_SECS),
        revoked_at: None,
        last_used_at: None,
        user_id: Some(user.id.clone()),
        view_pii: None,
    };
    store
        .create_session(&row, &user.id, &crate::support::ids::hash_secret(&secret))
        .await?;
    Ok((row, secret))
}

/// Signs a user in: checks the credentials and starts a session, audited
/// in the transaction that stores it. `None` for wrong credentials or a
/// disabled user. The secret is handed out once and stored only as a hash.
pub async fn sign_in(
    store: &Store,
    email: &str,
    password: &str,
) -> Result<Option<(SignedIn, String)>, StoreError> {
    let Some(user) = check_credentials(store, email, password).await? else {
        return Ok(None);
    };
    let tx = store.begin().await?;
    let (session, secret) = start_session(&tx, &user).await?;
    super::audit::record(
        &tx,
        Some(&user.tenant_id),
        &format!("user:{}", user.id),
        "session.create",
        ("session", &session.id),
        serde_json::Value::Null,
    )
    .await?;
    tx.commit().await?;
    Ok(Some((SignedIn { user, session }, secret)))
}

/// A user signed in, and their session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Who signed in.
    pub user: UserRow,
    /// The session (an API token row bound to the user).
    pub session: ApiTokenRow,
}

/// Ends the caller's session or revokes the token it used: it stops working
/// at once on this node (within the token cache's time elsewhere).
pub async fn sign_out(core: &crate::Core, p: &super::Principal) -> Result<(), StoreError> {
    let tx = core.store.begin().await?;
    tx.revoke_api_token(&p.tenant_id, &p.token_id, now_unix())
        .await?;
    super::audit::record_by(
        &tx,
        p,
        "session.revoke",
        ("session", &p.token_id),
        serde_json::Value::Null,
    )
    .await?;
    tx.commit().await?;
    core.tokens.forget(&p.token_id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ_per_salt() {
        let a = hash_password("correct horse battery".into()).await.unwrap();
        let b = hash_password("correct horse battery".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify_password("correct horse battery".into(), a.clone()).await);
        assert!(!verify_password("wrong horse battery".into(), a).await);
    }

    #[test]
    fn emails_and_passwords_are_checked() {
        assert!(email_problem("ana@dealer.example").is_none());
        assert!(email_problem("ana@localhost").is_some());
        assert!(email_problem("ana dealer@x.y").is_some());
        assert!(password_problem("short").is_some());
        assert!(password_problem("long enough password").is_none());
    }
}

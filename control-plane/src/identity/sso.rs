//! Single sign-on with an enterprise's own identity provider: OpenID
//! Connect, authorization code flow with PKCE (S256), a nonce, and the ID
//! token's signature checked against the provider's published keys.
//!
//! An enterprise admin sets the provider (issuer, client id, client secret
//! sealed in the vault), the email domains it signs in (each domain belongs
//! to one tenant, so an email finds its provider), and who may sign in the
//! first time: only users an admin created, or anyone of those domains with
//! a default role. A sign-in starts from the person's email: the console
//! sends them to their provider with a fresh state, nonce and PKCE verifier,
//! kept here for ten minutes and used once; the provider sends them back
//! with a code, exchanged for tokens by the control plane itself.

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::audit::{record, record_by};
use super::users::{SignedIn, start_session, tenant_role};
use super::{IdentityError, PLATFORM_TENANT, Principal};
use crate::Core;
use crate::store::{SsoLoginRow, SsoRow, StoreError, UserRow, now_unix};
use crate::support::ids::{hash_secret, new_id, new_secret};
use crate::vault::Secret;

/// How long a sign-in may take at the provider.
pub const LOGIN_TTL_SECS: i64 = 600;

/// The vault's owner and field for the client secret.
const SECRET_OWNER: &str = "sso";
const SECRET_FIELD: &str = "client_secret";

/// What a sign-in through a provider refuses (said to the person signing in).
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    /// The email is not an email.
    #[error("`{0}` is not an email address")]
    BadEmail(String),
    /// No tenant signs in this domain through a provider.
    #[error("single sign-on is not set up for {0}: sign in with your email and password")]
    NoProvider(String),
    /// The provider could not be reached, or answered what OpenID Connect does not allow.
    #[error("the identity provider failed: {0}")]
    Provider(String),
    /// The provider said no (the person cancelled, or is not allowed).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    /// The state is unknown, used or too old.
    #[error("this sign-in has expired or was already used: start again")]
    Expired,
    /// Nobody created an account for this person and the tenant lets no one in by themselves.
    #[error("{0} has no account here yet: ask your administrator to add you")]
    NotInvited(String),
    /// The account is disabled.
    #[error("the account of {0} is disabled: ask your administrator")]
    Disabled(String),
    /// The provider vouched for an email outside the tenant's domains.
    #[error(
        "the identity provider signed you in as {0}, which is not an address of this enterprise"
    )]
    WrongDomain(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something on our side failed (logged).
    #[error("{0}")]
    Internal(String),
}

/// A tenant's provider as admins see it (never the secret).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SsoView {
    /// The provider's issuer URL.
    pub issuer: String,
    /// The client registered at the provider.
    pub client_id: String,
    /// Whether a client secret is stored (it is never shown).
    pub client_secret_set: bool,
    /// The email domains it signs in.
    pub domains: Vec<String>,
    /// The role of someone signing in for the first time; `null`: only users
    /// an admin created may sign in.
    pub default_role: Option<String>,
    /// Whether sign-in through it is on.
    pub enabled: bool,
    /// Last change.
    pub updated_at: String,
}

/// What an admin sets.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoSettings {
    /// The provider's issuer URL (`https://login.example.com/realms/dealers`);
    /// its `/.well-known/openid-configuration` must answer.
    pub issuer: String,
    /// The client registered at the provider for DIBOP.
    pub client_id: String,
    /// Its secret (write-only); leave it out to keep the stored one.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The email domains that sign in through it (`dealer.example`).
    pub domains: Vec<String>,
    /// The role of someone signing in for the first time; `null` or absent:
    /// only users an admin created may sign in.
    #[serde(default)]
    pub default_role: Option<String>,
    /// Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// The HTTP client towards providers: no redirects (a provider's answer
/// must come from where discovery said), a short timeout.
static HTTP: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
});

/// What discovery says of a provider.
#[derive(Debug, Clone)]
struct Provider {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    userinfo_endpoint: Option<String>,
    /// Send the client secret in the form instead of Basic authentication.
    secret_in_form: bool,
}

/// Why an issuer URL cannot be one: https, or http on this machine only.
pub fn issuer_problem(issuer: &str) -> Option<String> {
    let Ok(url) = reqwest::Url::parse(issuer) else {
        return Some("must be a URL such as https://login.example.com".into());
    };
    let loopback = matches!(
        url.host_str(),
        Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
    );
    match url.scheme() {
        "https" => None,
        "http" if loopback => None,
        "http" => Some("must use https (http is allowed on this machine only)".into()),
        _ => Some("must be an https URL".into()),
    }
    .or_else(|| {
        (url.query().is_some() || url.fragment().is_some())
            .then(|| "must have no query or fragment".into())
    })
}

/// A URL a provider advertises, held to the same rule as its issuer.
fn endpoint(doc: &Value, key: &str) -> Result<String, SsoError> {
    let url = doc[key]
        .as_str()
        .ok_or_else(|| SsoError::Provider(format!("its configuration has no {key}")))?;
    if let Some(p) = issuer_problem(url) {
        return Err(SsoError::Provider(format!("its {key} {p}")));
    }
    Ok(url.to_owned())
}

/// Reads a provider's `/.well-known/openid-configuration`.
async fn discover(issuer: &str) -> Result<Provider, SsoError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc: Value = get_json(&url).await?;
    let advertised = doc["issuer"].as_str().unwrap_or_default();
    if advertised.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(SsoError::Provider(format!(
            "{url} names the issuer `{advertised}`, not `{issuer}`"
        )));
    }
    let methods: Vec<&str> = doc["token_endpoint_auth_methods_supported"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    Ok(Provider {
        issuer: advertised.to_owned(),
        authorization_endpoint: endpoint(&doc, "authorization_endpoint")?,
        token_endpoint: endpoint(&doc, "token_endpoint")?,
        jwks_uri: endpoint(&doc, "jwks_uri")?,
        userinfo_endpoint: endpoint(&doc, "userinfo_endpoint").ok(),
        secret_in_form: !methods.is_empty()
            && !methods.contains(&"client_secret_basic")
            && methods.contains(&"client_secret_post"),
    })
}

async fn get_json(url: &str) -> Result<Value, SsoError> {
    let resp = HTTP
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| SsoError::Provider(format!("{url} could not be reached ({e})")))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(SsoError::Provider(format!("{url} answered {status}")));
    }
    resp.json()
        .await
        .map_err(|_| SsoError::Provider(format!("{url} answered no JSON")))
}

/// An email's domain, lowercased.
fn domain_of(email: &str) -> Option<String> {
    let (local, domain) = email.trim().rsplit_once('@')?;
    (!local.is_empty() && domain.contains('.')).then(|| domain.to_ascii_lowercase())
}

/// Why a domain cannot be one.
fn domain_problem(d: &str) -> Option<String> {
    let ok = d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    (!ok).then(|| format!("`{d}` is not a domain such as dealer.example"))
}

fn view(row: &SsoRow, domains: Vec<String>) -> SsoView {
    SsoView {
        issuer: row.issuer.clone(),
        client_id: row.client_id.clone(),
        client_secret_set: !row.client_secret.is_empty(),
        domains,
        default_role: row.default_role.clone(),
        enabled: row.enabled != 0,
        updated_at: dibop_runtime::support::rfc3339(row.updated_at),
    }
}

/// The caller's tenant's provider, if it has one.
pub async fn settings_of(core: &Core, p: &Principal) -> Result<Option<SsoView>, IdentityError> {
    super::access::require_admin(p, "read the single sign-on settings")?;
    let Some(row) = core.store.sso(&p.tenant_id).await? else {
        return Ok(None);
    };
    let domains = core.store.sso_domains(&p.tenant_id).await?;
    Ok(Some(view(&row, domains)))
}

/// Sets the caller's tenant's provider: checks every field (and that the
/// provider answers discovery), seals the secret, audits the change.
pub async fn configure(
    core: &Core,
    p: &Principal,
    s: SsoSettings,
) -> Result<SsoView, IdentityError> {
    super::access::require_admin(p, "make changes")?;
    if p.is_platform_admin() {
        return Err(IdentityError::Forbidden(format!(
            "single sign-on is set up per enterprise; the {PLATFORM_TENANT} tenant signs in with passwords"
        )));
    }
    let mut problems = Vec::new();
    let issuer = s.issuer.trim().trim_end_matches('/').to_owned();
    if let Some(problem) = issuer_problem(&issuer) {
        problems.push(json!({"field": "issuer", "problem": problem}));
    }
    let client_id = s.client_id.trim().to_owned();
    if client_id.is_empty() || client_id.len() > 255 {
        problems.push(json!({"field": "client_id", "problem": "must be 1 to 255 characters"}));
    }
    let stored = core.store.sso(&p.tenant_id).await?;
    let secret = s.client_secret.filter(|c| !c.is_empty());
    let replaced = secret.is_some();
    if secret.is_none() && stored.is_none() {
        problems.push(json!({"field": "client_secret", "problem": "is required"}));
    }
    if secret.as_ref().is_some_and(|c| c.len() > 4096) {
        problems
            .push(json!({"field": "client_secret", "problem": "must be at most 4096 characters"}));
    }
    let mut domains: Vec<String> = s
        .domains
        .iter()
        .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
        .collect();
    domains.sort();
    domains.dedup();
    if domains.is_empty() {
        problems.push(json!({"field": "domains", "problem": "name at least one email domain"}));
    }
    for d in &domains {
        if let Some(problem) = domain_problem(d) {
            problems.push(json!({"field": "domains", "problem": problem}));
        }
    }
    let taken = core.store.sso_domains_taken(&p.tenant_id, &domains).await?;
    if !taken.is_empty() {
        problems.push(json!({"field": "domains", "problem": format!(
            "{} already sign(s) in through another enterprise's provider",
            taken.join(", ")
        )}));
    }
    let default_role = s
        .default_role
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if let Some(role) = &default_role {
        match tenant_role(false, role) {
            Ok(_) => {}
            Err(problem) => problems.push(json!({"field": "default_role", "problem": problem})),
        }
    }
    if problems.is_empty()
        && let Err(e) = discover(&issuer).await
    {
        problems.push(json!({"field": "issuer", "problem": e.to_string()}));
    }
    if !problems.is_empty() {
        return Err(IdentityError::Invalid {
            message: "the single sign-on settings are invalid".into(),
            problems,
        });
    }
    let client_secret = match secret {
        Some(c) => core
            .vault
            .seal(
                &core.store,
                &p.tenant_id,
                SECRET_OWNER,
                SECRET_FIELD,
                &Secret::new(c),
            )
            .await
            .map_err(|e| IdentityError::Internal(format!("cannot seal the client secret: {e}")))?,
        None => stored.map(|r| r.client_secret).unwrap_or_default(),
    };
    let row = SsoRow {
        tenant_id: p.tenant_id.clone(),
        issuer,
        client_id,
        client_secret,
        default_role,
        enabled: i64::from(s.enabled),
        updated_at: now_unix(),
    };
    let tx = core.store.begin().await?;
    tx.put_sso(&row, &domains).await?;
    record_by(
        &tx,
        p,
        "sso.configure",
        ("sso", &p.tenant_id),
        json!({"issuer": row.issuer, "client_id": row.client_id, "domains": domains,
               "default_role": row.default_role, "enabled": s.enabled,
               "client_secret_replaced": replaced}),
    )
    .await?;
    tx.commit().await?;
    Ok(view(&row, domains))
}

/// Removes the caller's tenant's provider: its users sign in with passwords again.
pub async fn remove(core: &Core, p: &Principal) -> Result<(), IdentityError> {
    super::access::require_admin(p, "make changes")?;
    let tx = core.store.begin().await?;
    if !tx.delete_sso(&p.tenant_id).await? {
        return Err(IdentityError::NotFound {
            what: "single sign-on",
            id: p.tenant_id.clone(),
        });
    }
    record_by(&tx, p, "sso.remove", ("sso", &p.tenant_id), Value::Null).await?;
    tx.commit().await?;
    Ok(())
}

/// A sign-in sent to its provider.
#[derive(Debug)]
pub struct Started {
    /// Where to send the browser.
    pub authorize_url: String,
    /// The state (the browser keeps it in a cookie, to prove the answer is
    /// for this browser).
    pub state: String,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Starts a sign-in for `email`: finds its tenant's provider and where to
/// send the browser, with `redirect_uri` to come back to and `next` to go
/// to afterwards.
pub async fn begin(
    core: &Core,
    email: &str,
    next: &str,
    redirect_uri: &str,
) -> Result<Started, SsoError> {
    let domain = domain_of(email).ok_or_else(|| SsoError::BadEmail(email.trim().to_owned()))?;
    let Some(tenant_id) = core.store.sso_tenant_of(&domain).await? else {
        return Err(SsoError::NoProvider(domain));
    };
    let row = match core.store.sso(&tenant_id).await? {
        Some(r) if r.enabled != 0 => r,
        _ => return Err(SsoError::NoProvider(domain)),
    };
    let provider = discover(&row.issuer).await?;
    let (state, nonce, verifier) = (new_secret(""), new_secret(""), new_secret(""));
    let challenge = b64url(&sha256(verifier.as_bytes()));
    let now = now_unix();
    core.store
        .create_sso_login(
            &SsoLoginRow {
                state_hash: hash_secret(&state),
                tenant_id,
                verifier,
                nonce: nonce.clone(),
                next_path: next.to_owned(),
                created_at: now,
            },
            now - LOGIN_TTL_SECS,
        )
        .await?;
    let mut url = reqwest::Url::parse(&provider.authorization_endpoint)
        .map_err(|_| SsoError::Provider("its authorization_endpoint is not a URL".into()))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &row.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "openid email profile")
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("login_hint", email.trim());
    Ok(Started {
        authorize_url: url.to_string(),
        state,
    })
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// Finishes a sign-in the provider sent back with `code`: exchanges it,
/// checks the ID token, finds (or, where the tenant allows, creates) the
/// user and starts their session. The secret of the session is handed out
/// once.
pub async fn finish(
    core: &Core,
    state: &str,
    code: &str,
    redirect_uri: &str,
) -> Result<(SignedIn, String, String), SsoError> {
    let login = core
        .store
        .take_sso_login(&hash_secret(state))
        .await?
        .filter(|l| l.created_at >= now_unix() - LOGIN_TTL_SECS)
        .ok_or(SsoError::Expired)?;
    let row = match core.store.sso(&login.tenant_id).await? {
        Some(r) if r.enabled != 0 => r,
        _ => return Err(SsoError::Expired),
    };
    let secret = core
        .vault
        .open(
            &core.store,
            &row.tenant_id,
            SECRET_OWNER,
            SECRET_FIELD,
            &row.client_secret,
        )
        .await
        .map_err(|e| SsoError::Internal(format!("cannot open the SSO client secret: {e}")))?;
    let provider = discover(&row.issuer).await?;
    let tokens = exchange(&provider, &row, secret.expose(), code, redirect_uri, &login).await?;
    let id_token = tokens["id_token"]
        .as_str()
        .ok_or_else(|| SsoError::Provider("its token answer has no id_token".into()))?;
    let jwks = get_json(&provider.jwks_uri).await?;
    let claims = verify_jwt(id_token, &jwks).map_err(SsoError::Provider)?;
    check_claims(&claims, &provider.issuer, &row.client_id, &login.nonce)
        .map_err(SsoError::Provider)?;
    let (email, verified) = email_of(&provider, &claims, &tokens).await?;
    if !verified {
        return Err(SsoError::Refused(format!(
            "it has not verified the address {email}"
        )));
    }
    let domains = core.store.sso_domains(&row.tenant_id).await?;
    if !domain_of(&email).is_some_and(|d| domains.contains(&d)) {
        return Err(SsoError::WrongDomain(email));
    }
    let user = match core.store.user_by_email(&email).await? {
        Some(u) if u.tenant_id != row.tenant_id => return Err(SsoError::NotInvited(email)),
        Some(u) if u.disabled_at.is_some() => return Err(SsoError::Disabled(email)),
        Some(u) => u,
        None => match &row.default_role {
            Some(role) => create_from_provider(core, &row, &email, role).await?,
            None => return Err(SsoError::NotInvited(email)),
        },
    };
    let tx = core.store.begin().await?;
    let (session, secret) = start_session(&tx, &user).await?;
    record(
        &tx,
        Some(&user.tenant_id),
        &format!("user:{}", user.id),
        "session.create",
        ("session", &session.id),
        json!({"sso": row.issuer}),
    )
    .await?;
    tx.commit().await?;
    Ok((SignedIn { user, session }, secret, login.next_path))
}

/// A user the provider vouched for, on their first sign-in.
async fn create_from_provider(
    core: &Core,
    row: &SsoRow,
    email: &str,
    role: &str,
) -> Result<UserRow, SsoError> {
    let role = tenant_role(false, role).map_err(SsoError::Internal)?;
    // No password signs in as them: the hash is of a secret nobody holds.
    let unusable = super::users::hash_password(new_secret(""))
        .await
        .map_err(|e| SsoError::Internal(format!("cannot hash: {e}")))?;
    let user = UserRow {
        id: new_id("usr"),
        tenant_id: row.tenant_id.clone(),
        email: email.to_owned(),
        password_hash: unusable,
        role,
        created_at: now_unix(),
        disabled_at: None,
        view_pii: None,
    };
    let tx = core.store.begin().await?;
    tx.create_user(&user).await?;
    record(
        &tx,
        Some(&row.tenant_id),
        &format!("sso:{}", row.issuer),
        "user.create",
        ("user", &user.id),
        json!({"email": user.email, "role": user.role, "sso": true}),
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

/// The authorization code exchanged for tokens at the token endpoint.
async fn exchange(
    provider: &Provider,
    row: &SsoRow,
    secret: &str,
    code: &str,
    redirect_uri: &str,
    login: &SsoLoginRow,
) -> Result<Value, SsoError> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", login.verifier.as_str()),
        ("client_id", row.client_id.as_str()),
    ];
    let mut request = HTTP.post(&provider.token_endpoint);
    if provider.secret_in_form {
        form.push(("client_secret", secret));
    } else {
        let enc = |s: &str| {
            serde_urlencoded::to_string([("", s)])
                .map(|t| t.trim_start_matches('=').to_owned())
                .unwrap_or_default()
        };
        request = request.basic_auth(enc(&row.client_id), Some(enc(secret)));
    }
    let body = serde_urlencoded::to_string(&form).unwrap_or_default();
    let resp = request
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            SsoError::Provider(format!("its token endpoint could not be reached ({e})"))
        })?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let error = answer["error"].as_str().unwrap_or("no error code");
        let description = answer["error_description"].as_str().unwrap_or_default();
        return Err(SsoError::Refused(format!(
            "its token endpoint answered {status} ({error}{}{description})",
            if description.is_empty() { "" } else { ": " }
        )));
    }
    Ok(answer)
}

/// The email of the person signed in, and whether the provider verified it:
/// from the ID token, else from the userinfo endpoint (some providers keep
/// claims there).
async fn email_of(
    provider: &Provider,
    claims: &Value,
    tokens: &Value,
) -> Result<(String, bool), SsoError> {
    let from = |c: &Value| {
        c["email"].as_str().map(|e| {
            (
                e.trim().to_ascii_lowercase(),
                c["email_verified"].as_bool().unwrap_or(true),
            )
        })
    };
    if let Some(found) = from(claims) {
        return Ok(found);
    }
    let (Some(url), Some(access)) = (&provider.userinfo_endpoint, tokens["access_token"].as_str())
    else {
        return Err(SsoError::Provider(
            "it gave no email address (ask for the `email` scope)".into(),
        ));
    };
    let resp = HTTP
        .get(url)
        .bearer_auth(access)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| {
            SsoError::Provider(format!("its userinfo endpoint could not be reached ({e})"))
        })?;
    let info: Value = resp
        .json()
        .await
        .map_err(|_| SsoError::Provider("its userinfo endpoint answered no JSON".into()))?;
    if info["sub"] != claims["sub"] {
        return Err(SsoError::Provider(
            "its userinfo is about someone else than the ID token".into(),
        ));
    }
    from(&info).ok_or_else(|| {
        SsoError::Provider("it gave no email address (ask for the `email` scope)".into())
    })
}

/// The claims of a compact JWS whose signature one of `jwks`' keys checks
/// (RS256, PS256 or ES256).
fn verify_jwt(token: &str, jwks: &Value) -> Result<Value, String> {
    use aws_lc_rs::signature;
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("its ID token is not a signed JWT".into());
    };
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| "its ID token is not base64url".to_owned())
    };
    let header: Value =
        serde_json::from_slice(&decode(h)?).map_err(|_| "its ID token's header is not JSON")?;
    let sig = decode(s)?;
    let alg = header["alg"].as_str().unwrap_or_default();
    let kty = match alg {
        "RS256" | "PS256" => "RSA",
        "ES256" => "EC",
        other => {
            return Err(format!(
                "its ID token is signed with {other:?}, which DIBOP does not accept (RS256, PS256, ES256)"
            ));
        }
    };
    let kid = header["kid"].as_str();
    let key = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| {
            k["kty"] == kty
                && kid.is_none_or(|kid| k["kid"] == kid)
                && k["use"].as_str().is_none_or(|u| u == "sig")
        })
        .ok_or_else(|| format!("its keys have none for this ID token (kid {kid:?})"))?;
    let field = |name: &str| decode(key[name].as_str().unwrap_or_default());
    let message = format!("{h}.{p}");
    let verified = match alg {
        "RS256" | "PS256" => {
            let params: &signature::RsaParameters = if alg == "RS256" {
                &signature::RSA_PKCS1_2048_8192_SHA256
            } else {
                &signature::RSA_PSS_2048_8192_SHA256
            };
            let (n, e) = (field("n")?, field("e")?);
            signature::RsaPublicKeyComponents { n: &n, e: &e }
                .verify(params, message.as_bytes(), &sig)
                .is_ok()
        }
        _ => {
            if key["crv"] != "P-256" {
                return Err("its EC key is not on P-256".into());
            }
            let mut point = vec![4u8];
            point.extend(field("x")?);
            point.extend(field("y")?);
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(message.as_bytes(), &sig)
                .is_ok()
        }
    };
    if !verified {
        return Err("its ID token's signature does not verify".into());
    }
    serde_json::from_slice(&decode(p)?).map_err(|_| "its ID token's claims are not JSON".into())
}

/// The ID token is for us, from the provider, fresh, and for this sign-in.
fn check_claims(claims: &Value, issuer: &str, client_id: &str, nonce: &str) -> Result<(), String> {
    if claims["iss"].as_str().map(|i| i.trim_end_matches('/')) != Some(issuer.trim_end_matches('/'))
    {
        return Err(format!(
            "its ID token was issued by {}, not {issuer}",
            claims["iss"]
        ));
    }
    let audience_ok = match &claims["aud"] {
        Value::String(a) => a == client_id,
        Value::Array(a) => {
            a.iter().any(|x| x == client_id)
                && (a.len() == 1 || claims["azp"].as_str() == Some(client_id))
        }
        _ => false,
    };
    if !audience_ok {
        return Err("its ID token is not for DIBOP's client".into());
    }
    let now = now_unix();
    match claims["exp"].as_i64() {
        Some(exp) if exp + 60 >= now => {}
        Some(_) => return Err("its ID token has expired".into()),
        None => return Err("its ID token has no expiry".into()),
    }
    if claims["iat"].as_i64().is_some_and(|iat| iat > now + 300) {
        return Err("its ID token was issued in the future".into());
    }
    if claims["nonce"].as_str() != Some(nonce) {
        return Err("its ID token is not for this sign-in (nonce)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_https_or_on_this_machine() {
        assert_eq!(issuer_problem("https://login.example.com/realms/x"), None);
        assert_eq!(issuer_problem("http://127.0.0.1:8080"), None);
        assert!(issuer_problem("http://login.example.com").is_some());
        assert!(issuer_problem("ftp://x.example").is_some());
        assert!(issuer_problem("not a url").is_some());
        assert!(issuer_problem("https://x.example/?a=b").is_some());
    }

    #[test]
    fn domains_are_checked() {
        assert_eq!(domain_problem("dealer.example"), None);
        assert!(domain_problem("localhost").is_some());
        assert!(domain_problem("-x.example").is_some());
        assert!(domain_problem("a..example").is_some());
        assert_eq!(
            domain_of("Pat@Dealer.Example"),
            Some("dealer.example".into())
        );
        assert_eq!(domain_of("pat"), None);
    }

    #[test]
    fn claims_must_be_for_us_and_this_sign_in() {
        let now = now_unix();
        let good = json!({"iss": "https://idp.example", "aud": "dibop", "exp": now + 60,
                          "iat": now, "nonce": "n1", "sub": "1"});
        assert_eq!(
            check_claims(&good, "https://idp.example/", "dibop", "n1"),
            Ok(())
        );
        let mut c = good.clone();
        c["nonce"] = json!("other");
        assert!(check_claims(&c, "https://idp.example", "dibop", "n1").is_err());
        let mut c = good.clone();
        c["aud"] = json!(["dibop", "other"]);
        assert!(
            check_claims(&c, "https://idp.example", "dibop", "n1").is_err(),
            "azp missing"
        );
        c["azp"] = json!("dibop");
        assert_eq!(
            check_claims(&c, "https://idp.example", "dibop", "n1"),
            Ok(())
        );
        let mut c = good.clone();
        c["exp"] = json!(now - 3600);
        assert!(check_claims(&c, "https://idp.example", "dibop", "n1").is_err());
        let mut c = good;
        c["iss"] = json!("https://evil.example");
        assert!(check_claims(&c, "https://idp.example", "dibop", "n1").is_err());
    }

    #[test]
    fn signatures_are_checked_with_the_published_key() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref();
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
            "x": b64url(&public[1..33]), "y": b64url(&public[33..65])}]});
        let header = b64url(br#"{"alg":"ES256","kid":"k1"}"#);
        let payload = b64url(br#"{"sub":"1","email":"pat@dealer.example"}"#);
        let input = format!("{header}.{payload}");
        let sig = pair.sign(&rng, input.as_bytes()).unwrap();
        let token = format!("{input}.{}", b64url(sig.as_ref()));
        let claims = verify_jwt(&token, &jwks).unwrap();
        assert_eq!(claims["email"], "pat@dealer.example");
        // Another payload under the same signature does not verify.
        let forged = format!(
            "{header}.{}.{}",
            b64url(br#"{"sub":"1","email":"boss@dealer.example"}"#),
            b64url(sig.as_ref())
        );
        assert!(verify_jwt(&forged, &jwks).is_err());
        // Unsigned tokens are refused.
        let none = format!("{}.{payload}.", b64url(br#"{"alg":"none"}"#));
        assert!(
            verify_jwt(&none, &jwks)
                .unwrap_err()
                .contains("does not accept")
        );
    }
}

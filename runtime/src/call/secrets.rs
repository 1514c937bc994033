//! Secrets that never leave the dealer's site.
//!
//! A relay agent keeps named secrets in its data directory
//! (`secrets/NAME`, one file each, readable by the agent's user only),
//! written with `dibop-agent secret set NAME` from standard input. A
//! connection's credential field may hold the reference `agent-secret:NAME`
//! instead of a value: the control plane stores and sends only that text,
//! and the agent puts the secret in its place when it performs the call.
//! A secret is read when a call needs it, so a changed one takes effect on
//! the next call. A missing one fails the call, saying which and how to set
//! it; the control plane's own cloud runtime has no local secrets.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use dibop_protocol::{CallAuth, InvokeRequest};
use serde_json::Value;

/// What a credential value starts with to name a local secret.
pub const PREFIX: &str = "agent-secret:";

/// Where the agent's secrets are, if it has any.
#[derive(Debug, Clone, Default)]
pub struct LocalSecrets {
    dir: Option<PathBuf>,
}

/// Why a secret's name cannot be one.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 64 {
        Some("must be 1 to 64 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with('.')
    {
        Some("may hold letters, digits, `-`, `_` and `.` (not first)")
    } else {
        None
    }
}

/// The folder of an agent's secrets in its data directory.
pub fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets")
}

/// Stores a secret (replacing one of that name), readable by this user only.
pub fn set(data_dir: &Path, name: &str, value: &str) -> Result<(), String> {
    if let Some(p) = name_problem(name) {
        return Err(format!("the secret's name `{name}` {p}"));
    }
    if value.is_empty() {
        return Err("the secret is empty: give its value on standard input".into());
    }
    let dir = dir_of(data_dir);
    crate::support::create_private_dir(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.new"));
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&temp)?;
        file.write_all(value.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Removes a secret; whether there was one.
pub fn remove(data_dir: &Path, name: &str) -> Result<bool, String> {
    if let Some(p) = name_problem(name) {
        return Err(format!("the secret's name `{name}` {p}"));
    }
    let path = dir_of(data_dir).join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

/// The names of the stored secrets, sorted (never their values).
pub fn list(data_dir: &Path) -> Result<Vec<String>, String> {
    let dir = dir_of(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| name_problem(n).is_none())
        .collect();
    names.sort();
    Ok(names)
}

impl LocalSecrets {
    /// An agent's secrets, in its data directory.
    pub fn in_data_dir(data_dir: &Path) -> LocalSecrets {
        LocalSecrets {
            dir: Some(dir_of(data_dir)),
        }
    }

    /// The secret a value names, if it names one: `Ok(None)` for a plain value.
    fn lookup(&self, value: &str) -> Result<Option<String>, String> {
        let Some(name) = value.strip_prefix(PREFIX) else {
            return Ok(None);
        };
        let Some(dir) = &self.dir else {
            return Err(format!(
                "`{PREFIX}{name}` names a secret kept by a relay agent, and this call runs in the cloud: \
                 run the connection through a relay group"
            ));
        };
        if name_problem(name).is_some() {
            return Err(format!("`{PREFIX}{name}` is not a valid secret name"));
        }
        match std::fs::read_to_string(dir.join(name)) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "this agent has no local secret `{name}`: set it on the agent's machine with \
                 `dibop-agent secret set {name}` (the value on standard input)"
            )),
            Err(e) => Err(format!("the local secret `{name}` cannot be read: {e}")),
        }
    }

    /// Replaces a field that names a secret with the secret.
    fn field(&self, value: &mut String, changed: &mut bool) -> Result<(), String> {
        if let Some(secret) = self.lookup(value)? {
            *value = secret;
            *changed = true;
        }
        Ok(())
    }

    /// Replaces string values of a JSON document that name secrets.
    fn json(&self, value: &mut Value, changed: &mut bool) -> Result<(), String> {
        match value {
            Value::String(s) => self.field(s, changed),
            Value::Array(items) => items.iter_mut().try_for_each(|v| self.json(v, changed)),
            Value::Object(map) => map.values_mut().try_for_each(|v| self.json(v, changed)),
            _ => Ok(()),
        }
    }

    /// The request with every credential that names a local secret
    /// replaced by it: `Ok(None)` when none does (nothing copied), `Err`
    /// with what to do when one is missing.
    pub fn resolve(&self, request: &InvokeRequest) -> Result<Option<InvokeRequest>, String> {
        if !mentions(request) {
            return Ok(None);
        }
        let mut r = request.clone();
        let mut changed = false;
        match &mut r.auth {
            CallAuth::None => {}
            CallAuth::ApiKey { key, .. } => self.field(key, &mut changed)?,
            CallAuth::Basic { username, password } => {
                self.field(username, &mut changed)?;
                self.field(password, &mut changed)?;
            }
            CallAuth::Bearer { token } => self.field(token, &mut changed)?,
            CallAuth::OAuth2(o) => {
                for f in [
                    &mut o.client_id,
                    &mut o.client_secret,
                    &mut o.username,
                    &mut o.password,
                    &mut o.refresh_token,
                ] {
                    self.field(f, &mut changed)?;
                }
            }
            CallAuth::DynamicApiKey(d) => {
                if let Ok(mut body) = serde_json::from_str::<Value>(&d.body) {
                    self.json(&mut body, &mut changed)?;
                    d.body = body.to_string();
                }
            }
            CallAuth::AwsSigV4(a) => {
                for f in [
                    &mut a.access_key_id,
                    &mut a.secret_access_key,
                    &mut a.session_token,
                ] {
                    self.field(f, &mut changed)?;
                }
            }
        }
        if let Some(p) = &mut r.proxy {
            self.field(&mut p.password, &mut changed)?;
        }
        self.field(&mut r.tls.client_key_pem, &mut changed)?;
        Ok(changed.then_some(r))
    }
}

/// Whether anything in the request's credentials names a local secret
/// (checked before copying it).
fn mentions(request: &InvokeRequest) -> bool {
    let hit = |s: &str| s.contains(PREFIX);
    let auth = match &request.auth {
        CallAuth::None => false,
        CallAuth::ApiKey { key, .. } => hit(key),
        CallAuth::Basic { username, password } => hit(username) || hit(password),
        CallAuth::Bearer { token } => hit(token),
        CallAuth::OAuth2(o) => [
            &o.client_id,
            &o.client_secret,
            &o.username,
            &o.password,
            &o.refresh_token,
        ]
        .iter()
        .any(|f| hit(f)),
        CallAuth::DynamicApiKey(d) => hit(&d.body),
        CallAuth::AwsSigV4(a) => {
            hit(&a.access_key_id) || hit(&a.secret_access_key) || hit(&a.session_token)
        }
    };
    auth || request.proxy.as_ref().is_some_and(|p| hit(&p.password))
        || hit(&request.tls.client_key_pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dibop_protocol::{CallRequest, KeyPlacement, RetryPolicy, TlsOptions};

    fn request(auth: CallAuth) -> InvokeRequest {
        InvokeRequest {
            call: CallRequest {
                call_id: 1,
                method: "GET".into(),
                url: "http://127.0.0.1:1/x".into(),
                headers: Vec::new(),
                body: Vec::new(),
                timeout_ms: 1000,
            },
            auth,
            auth_cache_key: "con_1:1".into(),
            tls: TlsOptions::default(),
            proxy: None,
            retry: RetryPolicy::default(),
        }
    }

    #[test]
    fn references_are_replaced_and_plain_values_kept() {
        let dir = tempfile::tempdir().unwrap();
        set(dir.path(), "dms-key", "s3cret").unwrap();
        let local = LocalSecrets::in_data_dir(dir.path());
        let r = request(CallAuth::ApiKey {
            placement: KeyPlacement::Header("X-API-Key".into()),
            prefix: String::new(),
            key: "agent-secret:dms-key".into(),
        });
        let resolved = local.resolve(&r).unwrap().unwrap();
        assert!(matches!(resolved.auth, CallAuth::ApiKey { ref key, .. } if key == "s3cret"));
        let plain = request(CallAuth::Bearer {
            token: "not a reference".into(),
        });
        assert!(
            local.resolve(&plain).unwrap().is_none(),
            "copied for nothing"
        );
        assert_eq!(list(dir.path()).unwrap(), ["dms-key"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir_of(dir.path()).join("dms-key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_missing_secret_says_how_to_set_it_and_the_cloud_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let r = request(CallAuth::Basic {
            username: "dealer".into(),
            password: "agent-secret:dms-password".into(),
        });
        let err = LocalSecrets::in_data_dir(dir.path())
            .resolve(&r)
            .unwrap_err();
        assert!(err.contains("dibop-agent secret set dms-password"), "{err}");
        let cloud = LocalSecrets::default().resolve(&r).unwrap_err();
        assert!(cloud.contains("runs in the cloud"), "{cloud}");
    }

    #[test]
    fn names_are_checked_and_secrets_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(set(dir.path(), "../etc/passwd", "x").is_err());
        assert!(set(dir.path(), ".hidden", "x").is_err());
        assert!(set(dir.path(), "ok", "").is_err());
        set(dir.path(), "ok", "v").unwrap();
        assert!(remove(dir.path(), "ok").unwrap());
        assert!(!remove(dir.path(), "ok").unwrap());
    }
}

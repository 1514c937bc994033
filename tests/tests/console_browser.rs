//! The web console in real Chromium (Debian's `chromium`, driven by
//! `playwright-core` from npm), against `dibop dev`: a real control plane,
//! relay agent and DMS simulator as separate processes. The walk itself is
//! `tests/browser/console.mjs` (sign in, each page checked with axe-core,
//! search the catalogue, open an integration, connect it with a wrong key
//! then the right one, deactivate, reactivate, rotate and delete the
//! connection, add a relay and run the command it shows, create an API
//! token, sign out, then sign in again through the enterprise's own OpenID
//! Connect provider (`oidc-provider` from npm) with single sign-on).

use dibop_e2e::harness::DevStack;
use std::path::{Path, PathBuf};

/// Where `scripts/test` installs the npm test packages.
fn node_modules() -> PathBuf {
    std::env::var("DIBOP_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-deps"))
        .join("node_modules")
}

fn chromium() -> PathBuf {
    std::env::var("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/bin/chromium"))
}

#[tokio::test]
async fn an_admin_walks_the_console_in_chromium() {
    let modules = node_modules();
    if !chromium().exists() || !modules.join("playwright-core").exists() {
        eprintln!(
            "SKIPPED: needs Debian's chromium at {} and playwright-core under {} (scripts/test installs both)",
            chromium().display(),
            modules.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let dev = DevStack::start(&data).await.unwrap();
    let (creds, credentials) = (&dev.credentials, &dev.credentials_path);
    // The enterprise's own identity provider, for single sign-on.
    let api = creds["api_url"].as_str().unwrap();
    let (issuer, _provider) =
        dibop_e2e::harness::oidc_provider(&modules, &[format!("{api}/sign-in/sso/callback")])
            .await
            .unwrap();
    let set = reqwest::Client::new()
        .put(format!("{api}/api/v1/sso"))
        .bearer_auth(creds["api_token"].as_str().unwrap())
        .json(&serde_json::json!({"issuer": issuer, "client_id": "dibop-console",
            "client_secret": "console-secret", "domains": ["sso.example"], "default_role": "operator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200, "{}", set.text().await.unwrap());
    // A name that is markup, to show as text (no alert may run).
    let xss = "<img src=x onerror=alert(1)>";
    let group = reqwest::Client::new()
        .post(format!("{api}/api/v1/agent-groups"))
        .bearer_auth(creds["api_token"].as_str().unwrap())
        .json(&serde_json::json!({"name": xss}))
        .send()
        .await
        .unwrap();
    assert_eq!(group.status(), 201);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/console.mjs");
    let mut walk = tokio::process::Command::new("node");
    walk.arg(&script)
        .arg(creds["api_url"].as_str().unwrap())
        .arg(credentials)
        .env("NODE_PATH", &modules)
        .env("CHROMIUM", chromium())
        .env("DIBOP_AGENT_BIN", dibop_e2e::harness::bin("dibop-agent"))
        .env("DIBOP_WALK_DIR", dir.path())
        .env("DIBOP_SSO_EMAIL", "pat@sso.example")
        .env("DIBOP_XSS_NAME", xss)
        .kill_on_drop(true);
    // `DIBOP_SCREENSHOTS=docs/console` regenerates the console tour's pictures.
    if let Ok(shots) = std::env::var("DIBOP_SCREENSHOTS") {
        walk.arg(shots);
    }
    let out = walk.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walk through the console failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("{\"ok\":true}"), "{stdout}");
    assert!(
        stdout.contains("\"signed_in_with_sso\":\"pat@sso.example\""),
        "single sign-on did not sign in:\n{stdout}"
    );
    assert!(
        stdout.contains("\"second_agent_online\":true"),
        "the command shown by Add a relay was not run:\n{stdout}"
    );
    // Every page was checked: no serious or critical accessibility problem.
    for page in [
        "sign-in",
        "dashboard",
        "integrations",
        "integration",
        "connect",
        "connections",
        "connection",
        "relays",
        "users",
        "sso",
        "audit",
    ] {
        assert!(
            stdout.contains(&format!("\"page\":\"{page}\"")),
            "{page} was not visited:\n{stdout}"
        );
    }
}

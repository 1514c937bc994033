//! OAuth2 and OpenID Connect against a real provider: the npm package
//! `oidc-provider` (installed by `scripts/test`), run with Node.js. A small
//! resource server accepts a bearer token only when the provider's
//! introspection endpoint says it is active, so revocation at the provider
//! is felt by the connection.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

use dibop_control_plane::testing::TestCp;

fn test_deps() -> PathBuf {
    std::env::var("DIBOP_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-deps"))
}

/// Starts the provider; returns its issuer URL and the process.
async fn provider(token_lifetime_secs: u32) -> (String, tokio::process::Child) {
    let lib = test_deps().join("node_modules/oidc-provider/lib/index.js");
    assert!(
        lib.exists(),
        "{} is missing: run scripts/test (it installs oidc-provider with npm) or set DIBOP_TEST_DEPS",
        lib.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/oidc/server.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg(script)
        .arg(lib)
        .arg(token_lifetime_secs.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed (scripts/test installs it)");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(url) = line.strip_prefix("listening ") {
            // Keep reading, so the provider never writes into a closed pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (url.to_owned(), child);
        }
    }
    panic!("the OpenID provider did not start");
}

#[derive(Clone)]
struct Resource {
    issuer: String,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn vehicles(
    State(r): State<Resource>,
    headers: HeaderMap,
) -> (StatusCode, axum::Json<Value>) {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let introspection: Value = reqwest::Client::new()
        .post(format!("{}/token/introspection", r.issuer))
        .basic_auth("api", Some("api-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r.seen.lock().unwrap().push(token);
    if introspection["active"] == true {
        (
            StatusCode::OK,
            axum::Json(json!({"items": [{"vin": "WVWZZZ1JZXW000001"}]})),
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_token"})),
        )
    }
}

#[tokio::test]
async fn client_credentials_and_discovery_against_a_real_provider() {
    let (issuer, _provider) = provider(600).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/vehicles", get(vehicles))
        .with_state(Resource {
            issuer: issuer.clone(),
            seen: seen.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let cp = TestCp::start().await;
    let send = |method: &'static str, path: &str, body: Value| {
        cp.send(method, path.to_owned(), Some(body))
    };
    let definition = json!({
        "format": "dibop.connector/v1", "name": "Fleet API", "slug": "fleet-api",
        "description": "A fleet API behind an OpenID Connect provider.", "category": "telematics",
        "base_url": api_url, "documentation_url": "https://fleet.example/docs",
        "auth": {"schemes": [
            {"type": "openid_connect", "discovery_url": format!("{issuer}/.well-known/openid-configuration")},
            {"type": "oauth2_client_credentials", "token_url": format!("{issuer}/token"), "client_auth": "client_secret_basic"}
        ]},
        "health_check": "health",
        "resilience": {"timeout_ms": 5000, "retries": {"max_attempts": 1}},
        "operations": [
            {"id": "health", "name": "Health", "method": "GET", "path": "/health", "response_schema": {"type": "object"}},
            {"id": "listVehicles", "name": "Vehicles", "method": "GET", "path": "/vehicles",
             "parameters": [{"name": "page", "in": "query", "type": "integer"}], "response_schema": {"type": "object"}}
        ]
    });
    let connector = cp.publish(definition).await;

    for auth_type in ["openid_connect", "oauth2_client_credentials"] {
        let (status, c) = send(
            "POST",
            "/connections",
            json!({"connector_id": connector, "name": auth_type, "auth_type": auth_type, "activate": true,
                   "credentials": {"client_id": "dibop", "client_secret": "dibop-oidc-secret"}}),
        )
        .await;
        assert_eq!(status, 201, "{c}");
        let id = c["id"].as_str().unwrap().to_owned();
        let invoke = format!("/connections/{id}/operations/listVehicles/invoke");
        let (_, first) = send("POST", &invoke, json!({})).await;
        assert_eq!(
            (first["ok"].as_bool(), first["tokenFetches"].as_u64()),
            (Some(true), Some(1)),
            "{auth_type}: {first}"
        );
        let (_, second) = send("POST", &invoke, json!({})).await;
        assert_eq!(
            (second["ok"].as_bool(), second["tokenFetches"].as_u64()),
            (Some(true), Some(0)),
            "{auth_type}: {second}"
        );

        // The provider revokes the token: the next call meets a 401, gets a
        // fresh token once, and succeeds.
        let token = seen.lock().unwrap().last().cloned().unwrap();
        let revoked = reqwest::Client::new()
            .post(format!("{issuer}/token/revocation"))
            .basic_auth("dibop", Some("dibop-oidc-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
            .await
            .unwrap();
        assert!(revoked.status().is_success());
        let (_, third) = send("POST", &invoke, json!({})).await;
        assert_eq!(
            (third["ok"].as_bool(), third["tokenFetches"].as_u64()),
            (Some(true), Some(1)),
            "{auth_type}: {third}"
        );
        assert_ne!(
            seen.lock().unwrap().last().cloned().unwrap(),
            token,
            "a new token was used"
        );

        // A wrong client secret: Test Connection says auth failure, from the token endpoint.
        let (_, tested) = send(
            "POST",
            "/connections/test",
            json!({"connector_id": connector, "auth_type": auth_type,
                   "credentials": {"client_id": "dibop", "client_secret": "wrong-canary"}}),
        )
        .await;
        assert_eq!(tested["outcome"], "auth_failure", "{auth_type}: {tested}");
        let detail = tested["detail"].as_str().unwrap();
        assert!(
            detail.contains("invalid_client") && !detail.contains("wrong-canary"),
            "{detail}"
        );
    }
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire() {
    // Tokens of 10 s are inside the 30 s renewal window: every call renews.
    let (issuer, _provider) = provider(10).await;
    let cp = TestCp::start().await;
    let app = axum::Router::new().route(
        "/health",
        get(|| async { axum::Json(json!({"status": "ok"})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let connector = cp
        .publish(json!({
            "format": "dibop.connector/v1", "name": "Short tokens", "slug": "short-tokens",
            "description": "Tokens that live ten seconds.", "category": "telematics",
            "base_url": api_url, "documentation_url": "https://fleet.example/docs",
            "auth": {"schemes": [{"type": "oauth2_client_credentials", "token_url": format!("{issuer}/token")}]},
            "health_check": "health", "resilience": {"timeout_ms": 5000, "retries": {"max_attempts": 1}},
            "operations": [{"id": "health", "name": "Health", "method": "GET", "path": "/health",
                "parameters": [{"name": "x", "in": "query"}], "response_schema": {"type": "object"}}]
        }))
        .await;
    let (_, c) = cp
        .post(
            "/connections",
            json!({"connector_id": connector, "activate": true,
                "credentials": {"client_id": "dibop", "client_secret": "dibop-oidc-secret"}}),
        )
        .await;
    let invoke = format!(
        "/connections/{}/operations/health/invoke",
        c["id"].as_str().unwrap()
    );
    for _ in 0..2 {
        let (_, r) = cp.post(invoke.clone(), json!({})).await;
        assert_eq!(
            (r["ok"].as_bool(), r["tokenFetches"].as_u64()),
            (Some(true), Some(1)),
            "{r}"
        );
    }
}

/// OpenID Connect discovery that cannot be read is a normalized call
/// result (`network_error`, with what failed), like any failed call: not a
/// 422 blaming the request.
#[tokio::test]
async fn a_failed_discovery_is_a_normalized_network_error() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let cp = TestCp::start().await;
    let definition = json!({
        "format": "dibop.connector/v1", "name": "Lost IdP", "slug": "lost-idp",
        "description": "An API whose OpenID Connect provider is down.", "category": "telematics",
        "base_url": closed, "documentation_url": "https://fleet.example/docs",
        "auth": {"schemes": [
            {"type": "openid_connect", "discovery_url": format!("{closed}/.well-known/openid-configuration")}
        ]},
        "health_check": "health",
        "resilience": {"timeout_ms": 5000, "retries": {"max_attempts": 1}},
        "operations": [
            {"id": "health", "name": "Health", "method": "GET", "path": "/health", "response_schema": {"type": "object"}},
            {"id": "listVehicles", "name": "Vehicles", "method": "GET", "path": "/vehicles",
             "parameters": [{"name": "page", "in": "query", "type": "integer"}], "response_schema": {"type": "object"}}
        ]
    });
    let connector = cp.publish(definition).await;
    let (status, c) = cp
        .post("/connections", json!({"connector_id": connector, "name": "lost", "auth_type": "openid_connect", "activate": true,
                   "credentials": {"client_id": "dibop", "client_secret": "s3cret-canary"}}))
        .await;
    assert_eq!(status, 201, "{c}");
    let id = c["id"].as_str().unwrap();
    let (status, result) = cp
        .post(
            format!("/connections/{id}/operations/health/invoke"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["error"]["class"], "network_error", "{result}");
    let message = result["error"]["message"].as_str().unwrap();
    assert!(message.contains("OpenID Connect discovery"), "{message}");
    assert!(!result.to_string().contains("s3cret-canary"));
    let (_, tested) = cp
        .send("POST", format!("/connections/{id}/test"), None)
        .await;
    assert_eq!(tested["outcome"], "network_error", "{tested}");
}

/// The sign-in page's answer to a single sign-on start for `email`.
async fn sso_start(cp: &TestCp, email: &str) -> (u16, String) {
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/sign-in/sso", cp.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "email={}&next=%2Fconnections",
            email.replace('@', "%40")
        ))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test]
async fn single_sign_on_is_set_per_enterprise_and_starts_with_pkce() {
    let (issuer, _provider) = provider(600).await;
    let cp = TestCp::start().await;
    // Bad settings: every problem named, the provider checked.
    let (status, bad) = cp
        .put(
            "/sso",
            json!({"issuer": "http://idp.example", "client_id": "", "domains": ["not a domain"],
                   "default_role": "owner"}),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    let fields: Vec<&str> = bad["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["field"].as_str())
        .collect();
    for f in [
        "issuer",
        "client_id",
        "client_secret",
        "domains",
        "default_role",
    ] {
        assert!(fields.contains(&f), "{f} not named: {bad}");
    }
    let (status, unreachable) = cp
        .put(
            "/sso",
            json!({"issuer": "http://127.0.0.1:9", "client_id": "c", "client_secret": "s",
                   "domains": ["dealer.example"]}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        unreachable.to_string().contains("could not be reached"),
        "{unreachable}"
    );

    // Good settings: stored, the secret never shown, audited without it.
    let (status, set) = cp
        .put(
            "/sso",
            json!({"issuer": issuer, "client_id": "dibop-console", "client_secret": "console-secret",
                   "domains": ["Dealer.Example", "@group.example"], "default_role": "operator"}),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["domains"], json!(["dealer.example", "group.example"]));
    assert_eq!(set["client_secret_set"], true);
    assert!(!set.to_string().contains("console-secret"));
    let (_, got) = cp.get("/sso").await;
    assert_eq!(got["issuer"], issuer.as_str());
    let (_, audit) = cp.get("/audit?action=sso.configure").await;
    assert_eq!(audit.as_array().unwrap().len(), 1);
    assert!(!audit.to_string().contains("console-secret"));
    // Keeping the stored secret: no secret in the change.
    let (status, _) = cp
        .put(
            "/sso",
            json!({"issuer": issuer, "client_id": "dibop-console", "domains": ["dealer.example"]}),
        )
        .await;
    assert_eq!(status, 200);
    // A domain belongs to one enterprise.
    let (_, other) = cp.tenant("globex").await;
    let (status, taken) = cp
        .put_as(
            &other,
            "/sso",
            json!({"issuer": issuer, "client_id": "x", "client_secret": "y", "domains": ["dealer.example"]}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(taken.to_string().contains("another enterprise"), "{taken}");
    assert_eq!(
        cp.get_as(&other, "/sso").await.0,
        404,
        "globex sees acme's settings"
    );
    // Viewers cannot read or change them.
    let (_, v) = cp
        .post("/api-tokens", json!({"name": "v", "role": "viewer"}))
        .await;
    assert_eq!(cp.get_as(v["token"].as_str().unwrap(), "/sso").await.0, 403);

    // Starting a sign-in: the provider's authorize URL with PKCE (S256), a
    // state and a nonce, through a page (the console's form-action policy
    // forbids a form's redirect to another origin).
    let (status, page) = sso_start(&cp, "pat@dealer.example").await;
    assert_eq!(status, 200, "{page}");
    let refresh = page
        .split("http-equiv=\"refresh\" content=\"0;url=")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    let url = reqwest::Url::parse(&refresh).unwrap();
    assert!(refresh.starts_with(&issuer), "{refresh}");
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "dibop-console");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!(q["redirect_uri"].ends_with("/sign-in/sso/callback"));
    assert!(q["scope"].contains("openid") && q["scope"].contains("email"));
    assert!(q["state"].len() >= 32 && q["nonce"].len() >= 32);
    // The provider knows the client and its redirect URI is asked for.
    // Unknown domains, non-emails: said on the sign-in page.
    let (status, page) = sso_start(&cp, "sam@elsewhere.example").await;
    assert_eq!(status, 404);
    assert!(page.contains("not set up for elsewhere.example"));
    assert_eq!(sso_start(&cp, "nobody").await.0, 422);
    // An answer without its state cookie, or an error from the provider, signs nobody in.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let forged = client
        .get(format!(
            "{}/sign-in/sso/callback?code=abc&state={}",
            cp.base, q["state"]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(
        forged
            .text()
            .await
            .unwrap()
            .contains("expired or was already used")
    );
    let denied = client
        .get(format!(
            "{}/sign-in/sso/callback?error=access_denied&error_description=End-User+aborted&state=x",
            cp.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    assert!(denied.text().await.unwrap().contains("End-User aborted"));
    // Removed: the domain signs in with passwords again.
    assert_eq!(cp.delete("/sso").await.0, 204);
    assert_eq!(sso_start(&cp, "pat@dealer.example").await.0, 404);
}

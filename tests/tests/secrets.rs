//! Canary: secrets given to or shown once by the control plane appear in no
//! later API response, no log line (at debug level) and no database file.

use dibop_e2e::harness::{Api, ControlPlane};
use serde_json::{Value, json};

#[tokio::test]
async fn secrets_leave_no_trace_in_responses_logs_or_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut cp = ControlPlane::start_with(&dir.path().join("cp"), any, any, &[])
        .await
        .unwrap();
    let api = cp.tenant("canary-motors").await.unwrap();
    let password = "CANARY-password-5f1e2d3c";

    let (status, _) = api
        .send(
            "POST",
            "/users",
            Some(
                json!({"email": "canary@dealer.example", "password": password, "role": "operator"}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    let login: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", cp.http))
        .json(&json!({"email": "canary@dealer.example", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = login["token"].as_str().unwrap().to_owned();
    let (_, token) = api
        .send(
            "POST",
            "/api-tokens",
            Some(json!({"name": "canary", "role": "viewer"})),
        )
        .await
        .unwrap();
    let api_token = token["token"].as_str().unwrap().to_owned();
    let group = api.create_group("site").await.unwrap();
    let enrollment = api.enrollment_token(&group, None).await.unwrap();
    let enrollment_secret = dibop_protocol::EnrollmentToken::decode(&enrollment)
        .unwrap()
        .secret;
    // Use the secrets, and fail with them, so they pass through the code paths that log.
    for t in [&session, &api_token] {
        dibop_e2e::harness::Api::new(&cp.http, t)
            .send("GET", "/agents", None)
            .await
            .unwrap();
    }
    dibop_e2e::harness::Api::new(&cp.http, &format!("{api_token}x"))
        .send("GET", "/agents", None)
        .await
        .unwrap();
    let _ = dibop_e2e::harness::enroll(&format!("{enrollment}A"), &dir.path().join("a")).await;

    // Later responses: lists and audit.
    let mut later = String::new();
    for path in [
        "/api-tokens",
        "/users",
        "/audit",
        "/agents",
        "/agent-groups",
    ] {
        let (_, body) = api.send("GET", path, None).await.unwrap();
        later.push_str(&body.to_string());
    }
    cp.terminate().await.unwrap();
    let log = cp.log_text();
    assert!(log.len() > 100, "the log has content to search");
    let mut database = Vec::new();
    for entry in std::fs::read_dir(&cp.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("dibop.db"))
        {
            database.extend(std::fs::read(path).unwrap());
        }
    }
    for (what, secret) in [
        ("password", password),
        ("session token", &session),
        ("API token", &api_token),
        ("enrollment secret", &enrollment_secret),
    ] {
        assert!(!later.contains(secret), "{what} in a later API response");
        assert!(!log.contains(secret), "{what} in the log");
        assert!(
            !database
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "{what} in the database files"
        );
    }
}

/// Every credential field of every auth scheme that makes calls, and a
/// proxy password: created, used (successfully or not), tested, rotated,
/// and then searched for in every response, the log (debug level) and the
/// database files.
#[tokio::test]
async fn connection_credentials_of_every_scheme_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut cp = ControlPlane::start_with(
        &dir.path().join("cp"),
        any,
        any,
        &["--cloud-agent-allow", "127.0.0.0/8"],
    )
    .await
    .unwrap();
    let api = cp.tenant("canary-motors").await.unwrap();
    let dms = dibop_e2e::harness::Dms::start().await.unwrap();
    let schemes = json!([
        {"type": "none"},
        {"type": "api_key", "header": "X-API-Key"},
        {"type": "basic"},
        {"type": "bearer"},
        {"type": "oauth2_client_credentials", "token_url": "/oauth/token"},
        {"type": "oauth2_password", "token_url": "/oauth/token", "client_auth": "client_secret_post"},
        {"type": "oauth2_authorization_code", "token_url": "/oauth/token", "authorize_url": "/oauth/authorize"},
        {"type": "openid_connect", "discovery_url": "/.well-known/openid-configuration"},
        {"type": "dynamic_api_key", "url": "/login", "pointer": "/token"},
        {"type": "aws_sigv4", "region": "eu-central-1", "service": "execute-api"},
        {"type": "mutual_tls"}
    ]);
    let definition = json!({
        "format": "dibop.connector/v1", "name": "Canary DMS", "slug": "canary-dms",
        "description": "Every auth scheme.", "category": "dms", "base_url": dms.url,
        "documentation_url": "https://docs.example/canary",
        "auth": {"schemes": schemes}, "health_check": "health",
        "resilience": {"timeout_ms": 3000, "retries": {"max_attempts": 1}},
        "operations": [
            {"id": "health", "name": "Health", "method": "GET", "path": "/health", "response_schema": {"type": "object"}},
            {"id": "listVehicles", "name": "Vehicles", "method": "GET", "path": "/api/v1/vehicles",
             "parameters": [{"name": "page", "in": "query", "type": "integer"}], "response_schema": {"type": "object"}}
        ]
    });
    let (status, connector) = api
        .send("POST", "/connectors", Some(definition))
        .await
        .unwrap();
    assert_eq!(status, 201, "{connector}");
    let connector = connector["id"].as_str().unwrap().to_owned();
    let (status, published) = api
        .send(
            "POST",
            &format!("/connectors/{connector}/publish"),
            Some(json!({"scope": "enterprise"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{published}");

    let fields: &[(&str, &[&str])] = &[
        ("none", &[]),
        ("api_key", &["api_key"]),
        ("basic", &["username", "password"]),
        ("bearer", &["token"]),
        ("oauth2_client_credentials", &["client_id", "client_secret"]),
        (
            "oauth2_password",
            &["client_id", "client_secret", "username", "password"],
        ),
        (
            "oauth2_authorization_code",
            &["client_id", "client_secret", "refresh_token"],
        ),
        ("openid_connect", &["client_id", "client_secret"]),
        ("dynamic_api_key", &["username", "password"]),
        (
            "aws_sigv4",
            &["access_key_id", "secret_access_key", "session_token"],
        ),
        ("mutual_tls", &["client_certificate", "client_key"]),
    ];
    let secret_fields = [
        "secret_access_key",
        "session_token",
        "api_key",
        "password",
        "token",
        "client_secret",
        "refresh_token",
        "client_key",
    ];
    let mut canaries: Vec<String> = Vec::new();
    let mut seen = String::new();
    for (round, (scheme, names)) in fields.iter().enumerate() {
        let creds = |generation: &str| -> (Value, Vec<String>) {
            let mut map = serde_json::Map::new();
            let mut secrets = Vec::new();
            for name in names.iter() {
                let value = format!("CANARY-{round}-{name}-{generation}-9e8d7c");
                if secret_fields.contains(name) {
                    secrets.push(value.clone());
                }
                map.insert((*name).to_owned(), json!(value));
            }
            (Value::Object(map), secrets)
        };
        let (first, secrets) = creds("a");
        canaries.extend(secrets);
        let body = json!({"connector_id": connector, "name": scheme, "auth_type": scheme,
                          "credentials": first, "activate": true, "settings": {"log_level": "debug"}});
        let (status, created) = api
            .send("POST", "/connections", Some(body.clone()))
            .await
            .unwrap();
        assert_eq!(status, 201, "{scheme}: {created}");
        seen.push_str(&created.to_string());
        let id = created["id"].as_str().unwrap().to_owned();
        for (method, path, body) in [
            (
                "POST",
                format!("/connections/{id}/operations/listVehicles/invoke"),
                Some(json!({})),
            ),
            ("POST", format!("/connections/{id}/test"), None),
            ("POST", "/connections/test".to_owned(), Some(body.clone())),
            ("GET", format!("/connections/{id}"), None),
        ] {
            let (_, answer) = api.send(method, &path, body).await.unwrap();
            seen.push_str(&answer.to_string());
        }
        let (rotated, secrets) = creds("b");
        canaries.extend(secrets);
        let (status, answer) = api
            .send(
                "PUT",
                &format!("/connections/{id}/credentials"),
                Some(json!({"credentials": rotated})),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{scheme}: {answer}");
        seen.push_str(&answer.to_string());
        let (_, answer) = api
            .send(
                "POST",
                &format!("/connections/{id}/operations/listVehicles/invoke"),
                Some(json!({})),
            )
            .await
            .unwrap();
        seen.push_str(&answer.to_string());
    }
    // A proxy password too.
    let proxy_password = "CANARY-proxy-password-9e8d7c".to_owned();
    let (status, answer) = api
        .send(
            "POST",
            "/connections",
            Some(json!({"connector_id": connector, "name": "proxied", "auth_type": "none", "activate": true,
                "execution_mode": "proxy", "proxy": {"url": "http://127.0.0.1:9", "username": "p", "password": proxy_password}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{answer}");
    let (_, answer) = api
        .send(
            "POST",
            &format!(
                "/connections/{}/operations/listVehicles/invoke",
                answer["id"].as_str().unwrap()
            ),
            Some(json!({})),
        )
        .await
        .unwrap();
    seen.push_str(&answer.to_string());
    canaries.push(proxy_password);
    for path in ["/connections", "/api-calls", "/audit"] {
        let (_, body) = api.send("GET", path, None).await.unwrap();
        seen.push_str(&body.to_string());
    }
    cp.terminate().await.unwrap();
    let log = cp.log_text();
    let mut database = Vec::new();
    for entry in std::fs::read_dir(&cp.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("dibop.db"))
        {
            database.extend(std::fs::read(path).unwrap());
        }
    }
    assert!(canaries.len() > 20, "{canaries:?}");
    for canary in &canaries {
        assert!(
            !seen.contains(canary.as_str()),
            "{canary} in an API response"
        );
        assert!(!log.contains(canary.as_str()), "{canary} in the log");
        assert!(
            !database
                .windows(canary.len())
                .any(|w| w == canary.as_bytes()),
            "{canary} in the database files"
        );
    }
}

#[tokio::test]
async fn a_cdm_customers_email_and_phone_reach_no_log_and_no_viewer() {
    let dir = tempfile::tempdir().unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut cp = ControlPlane::start_with(
        &dir.path().join("cp"),
        any,
        any,
        &["--cloud-agent-allow", "127.0.0.0/8"],
    )
    .await
    .unwrap();
    let api = cp.tenant("pii-motors").await.unwrap();
    let dms = dibop_e2e::harness::Dms::start().await.unwrap();
    let (_, catalogue) = api.send("GET", "/catalogue?q=dms-sim", None).await.unwrap();
    let (status, c) = api
        .send(
            "POST",
            "/connections",
            Some(
                json!({"connector_id": catalogue[0]["id"], "name": "DMS", "auth_type": "api_key",
                "credentials": {"api_key": "dms-demo-key"}, "base_url": dms.url, "activate": true}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{c}");
    let orchestration = r#"
format: dibop.orchestration/v1
name: customer-to-cdm
steps:
  - { id: list, type: call, connection: DMS, operation: listCustomers, parameters: { page_size: 5 } }
  - { id: cdm, type: map_to_cdm, connection: DMS, operation: listCustomers, from: .steps.list.response }
"#;
    let created = api.create_orchestration(orchestration).await.unwrap();
    let (_, e) = api
        .send(
            "POST",
            &format!("/orchestrations/{}/execute", created),
            Some(json!({"wait_ms": 30000})),
        )
        .await
        .unwrap();
    assert_eq!(e["status"], "succeeded", "{e}");
    let records = e["steps"][1]["output"]["records"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(records.len(), 5);
    let mut canaries = Vec::new();
    for r in &records {
        canaries.push(r["email"].as_str().unwrap().to_owned());
        canaries.push(r["phone"].as_str().unwrap().to_owned());
    }
    let (_, token) = api
        .send(
            "POST",
            "/api-tokens",
            Some(json!({"name": "auditor", "role": "viewer"})),
        )
        .await
        .unwrap();
    let viewer = Api::new(&cp.http, token["token"].as_str().unwrap());
    let mut seen = String::new();
    for path in [
        format!("/executions/{}", e["id"].as_str().unwrap()),
        "/executions".into(),
        "/executions/export".into(),
        "/api-calls".into(),
    ] {
        let resp = reqwest::Client::new()
            .get(format!("{}/api/v1{path}", cp.http))
            .bearer_auth(viewer.token())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}");
        seen.push_str(&resp.text().await.unwrap());
    }
    assert!(seen.contains("[redacted]"));
    cp.terminate().await.unwrap();
    let log = cp.log_text();
    assert!(!log.is_empty(), "the log has content");
    for canary in &canaries {
        assert!(
            !seen.contains(canary.as_str()),
            "{canary} shown to a viewer"
        );
        assert!(!log.contains(canary.as_str()), "{canary} in the log");
    }
}

/// A credential kept by the relay agent (`agent-secret:NAME`): the control
/// plane stores, sends and shows only the reference; the agent puts the
/// secret in when it calls. The real key reaches no control-plane response,
/// log line or database file, and the calls that use it succeed.
#[tokio::test]
async fn agent_secrets_stay_at_the_dealer_site() {
    use dibop_e2e::harness::{Agent, Dms, bin};
    let dir = tempfile::tempdir().unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut cp = ControlPlane::start_with(&dir.path().join("cp"), any, any, &[])
        .await
        .unwrap();
    let api = cp.tenant("site-secrets").await.unwrap();
    let dms = Dms::start().await.unwrap();
    let key = dibop_dms_sim::SimAuth::default().api_key;
    let group = api.create_group("showroom").await.unwrap();
    let token = api.enrollment_token(&group, None).await.unwrap();
    let agent = Agent::enroll_and_start(dir.path(), "agent", &token, &[dms.addr.to_string()])
        .await
        .unwrap();
    api.wait_online(&agent.id).await.unwrap();
    // The dealer sets the key on the agent's machine, from standard input.
    let set = |name: &'static str, value: String| {
        let data_dir = agent.data_dir.clone();
        async move {
            let mut child = tokio::process::Command::new(bin("dibop-agent"))
                .args(["secret", "set", name, "--data-dir"])
                .arg(&data_dir)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use tokio::io::AsyncWriteExt as _;
            let mut stdin = child.stdin.take().unwrap();
            stdin
                .write_all(format!("{value}\n").as_bytes())
                .await
                .unwrap();
            drop(stdin);
            child.wait_with_output().await.unwrap()
        }
    };
    let out = set("dms-key", key.clone()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = std::process::Command::new(bin("dibop-agent"))
        .args(["secret", "list", "--data-dir"])
        .arg(&agent.data_dir)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(
        listed.contains("dms-key") && !listed.contains(&key),
        "{listed}"
    );

    let (_, catalogue) = api.send("GET", "/catalogue?q=dms-sim", None).await.unwrap();
    let connector = catalogue[0]["id"].clone();
    // In the cloud there is no agent to keep it: refused with the reason.
    let (status, refused) = api
        .send(
            "POST",
            "/connections",
            Some(
                json!({"connector_id": connector, "name": "cloud", "auth_type": "api_key",
                "credentials": {"api_key": "agent-secret:dms-key"}, "base_url": dms.url}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{refused}");
    assert!(refused.to_string().contains("relay group"), "{refused}");
    let (status, c) = api
        .send(
            "POST",
            "/connections",
            Some(
                json!({"connector_id": connector, "name": "showroom dms", "auth_type": "api_key",
                "credentials": {"api_key": "agent-secret:dms-key"}, "base_url": dms.url,
                "execution_mode": "agent_group", "agent_group_id": group, "activate": true}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{c}");
    let id = c["id"].as_str().unwrap().to_owned();
    let invoke = format!("/connections/{id}/operations/listVehicles/invoke");
    let (status, called) = api.send("POST", &invoke, Some(json!({}))).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(called["ok"], true, "{called}");
    let (_, tested) = api
        .send("POST", &format!("/connections/{id}/test"), None)
        .await
        .unwrap();
    assert_eq!(tested["outcome"], "success", "{tested}");
    // Without the secret on the agent, the call says what to do.
    let out = std::process::Command::new(bin("dibop-agent"))
        .args(["secret", "remove", "dms-key", "--data-dir"])
        .arg(&agent.data_dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let (_, missing) = api.send("POST", &invoke, Some(json!({}))).await.unwrap();
    assert_eq!(missing["ok"], false);
    assert!(
        missing
            .to_string()
            .contains("dibop-agent secret set dms-key"),
        "{missing}"
    );

    let mut later = String::new();
    for path in [
        format!("/connections/{id}"),
        "/api-calls".into(),
        "/audit".into(),
    ] {
        let (_, body) = api.send("GET", &path, None).await.unwrap();
        later.push_str(&body.to_string());
    }
    drop(agent);
    cp.terminate().await.unwrap();
    let log = cp.log_text();
    let mut database = Vec::new();
    for entry in std::fs::read_dir(&cp.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("dibop.db"))
        {
            database.extend(std::fs::read(path).unwrap());
        }
    }
    assert!(!later.contains(&key), "the key in a control-plane response");
    assert!(!log.contains(&key), "the key in the control plane's log");
    assert!(
        !database.windows(key.len()).any(|w| w == key.as_bytes()),
        "the key in the control plane's database"
    );
}

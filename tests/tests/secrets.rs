//! Canary: secrets given to or shown once by the control plane appear in no
//! later API response, no log line (at debug level) and no database file.

use dibop_e2e::harness::ControlPlane;
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

//! Connections against httpbin (the PyPI package, installed by
//! `scripts/test`), a real HTTP test service: Bearer tokens, API keys in the
//! query (and out of the call log), Basic auth, retried status codes and
//! timeouts.

use std::path::PathBuf;

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

use dibop_control_plane::testing::TestCp;

async fn httpbin() -> (String, tokio::process::Child) {
    let deps = std::env::var("DIBOP_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-deps"));
    let py = deps.join("py");
    assert!(
        py.join("httpbin").exists(),
        "{} has no httpbin: run scripts/test (it installs httpbin with pip) or set DIBOP_TEST_DEPS",
        py.display()
    );
    let mut child = tokio::process::Command::new("python3")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/httpbin/serve.py"))
        .env("PYTHONPATH", &py)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs httpbin");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(url) = line.strip_prefix("listening ") {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (url.to_owned(), child);
        }
    }
    panic!("httpbin did not start");
}

#[tokio::test]
async fn bearer_query_keys_basic_retries_and_timeouts_against_httpbin() {
    let (bin, _httpbin) = httpbin().await;
    let cp = TestCp::start().await;
    let send = |method: &'static str, path: &str, body: Option<Value>| {
        cp.send(method, path.to_owned(), body)
    };
    let definition = json!({
        "format": "dibop.connector/v1", "name": "httpbin", "slug": "httpbin",
        "description": "HTTP request and response service.", "category": "reference",
        "base_url": bin, "documentation_url": "https://httpbin.org/",
        "auth": {"schemes": [{"type": "bearer"}, {"type": "api_key", "query": "api_key"}, {"type": "basic"}]},
        "health_check": "echo",
        "resilience": {"timeout_ms": 5000, "retries": {"max_attempts": 3, "initial_backoff_ms": 10, "max_backoff_ms": 50}},
        "operations": [
            {"id": "echo", "name": "Echo", "method": "GET", "path": "/get",
             "parameters": [{"name": "q", "in": "query", "type": "string"}], "response_schema": {"type": "object"}},
            {"id": "bearer", "name": "Bearer", "method": "GET", "path": "/bearer"},
            {"id": "basic", "name": "Basic", "method": "GET", "path": "/basic-auth/{user}/{passwd}",
             "parameters": [{"name": "user", "in": "path", "type": "string"}, {"name": "passwd", "in": "path", "type": "string"}]},
            {"id": "status", "name": "Status", "method": "GET", "path": "/status/{code}",
             "parameters": [{"name": "code", "in": "path", "type": "integer"}]},
            {"id": "delay", "name": "Delay", "method": "GET", "path": "/delay/{seconds}",
             "parameters": [{"name": "seconds", "in": "path", "type": "integer"}]}
        ]
    });
    let connector = cp.publish(definition).await;
    let connect = |name: &str, auth: &str, credentials: Value, settings: Value| {
        send(
            "POST",
            "/connections",
            Some(
                json!({"connector_id": connector, "name": name, "auth_type": auth, "credentials": credentials,
                        "activate": true, "settings": settings}),
            ),
        )
    };
    let invoke = |id: String, op: &'static str, parameters: Value| {
        send(
            "POST",
            &format!("/connections/{id}/operations/{op}/invoke"),
            Some(json!({"parameters": parameters})),
        )
    };

    // Bearer.
    let (_, c) = connect(
        "bearer",
        "bearer",
        json!({"token": "httpbin-bearer-token"}),
        json!({}),
    )
    .await;
    let bearer = c["id"].as_str().unwrap().to_owned();
    let (_, r) = invoke(bearer.clone(), "bearer", json!({})).await;
    assert_eq!(
        (r["status"].as_u64(), r["body"]["authenticated"].as_bool()),
        (Some(200), Some(true)),
        "{r}"
    );

    // An API key in the query reaches the system, and stays out of the call log.
    let (_, c) = connect(
        "query key",
        "api_key",
        json!({"api_key": "query-key-canary"}),
        json!({}),
    )
    .await;
    let keyed = c["id"].as_str().unwrap().to_owned();
    let (_, r) = invoke(keyed.clone(), "echo", json!({"q": "golf gti"})).await;
    assert_eq!(
        r["body"]["args"],
        json!({"api_key": "query-key-canary", "q": "golf gti"}),
        "{r}"
    );
    assert!(
        !r["url"].as_str().unwrap().contains("canary"),
        "the result's URL is the one without the key: {r}"
    );
    let (_, calls) = send("GET", &format!("/api-calls?connection_id={keyed}"), None).await;
    assert!(
        calls[0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/get?q=golf+gti"),
        "{calls}"
    );
    assert!(!calls.to_string().contains("canary"));

    // Basic: right and wrong.
    let (_, c) = connect(
        "basic",
        "basic",
        json!({"username": "dealer", "password": "s3cret"}),
        json!({}),
    )
    .await;
    let basic = c["id"].as_str().unwrap().to_owned();
    let (_, ok) = invoke(
        basic.clone(),
        "basic",
        json!({"user": "dealer", "passwd": "s3cret"}),
    )
    .await;
    assert_eq!(ok["status"], 200, "{ok}");
    let (_, wrong) = invoke(
        basic.clone(),
        "basic",
        json!({"user": "dealer", "passwd": "other"}),
    )
    .await;
    assert_eq!(
        (wrong["status"].as_u64(), wrong["error"]["class"].as_str()),
        (Some(401), Some("auth_failure")),
        "{wrong}"
    );

    // 503 and 429 are retried up to the connector's three tries; 500 is not.
    for (code, attempts) in [(503, 3), (429, 3), (500, 1)] {
        let (_, r) = invoke(basic.clone(), "status", json!({"code": code})).await;
        assert_eq!(
            (r["status"].as_u64(), r["attempts"].as_u64()),
            (Some(code), Some(attempts)),
            "{code}: {r}"
        );
    }
    // A slow answer is a timeout; the connection's setting wins over the connector's.
    let (_, c) = connect(
        "impatient",
        "bearer",
        json!({"token": "t"}),
        json!({"timeout_ms": 300, "max_retries": 0}),
    )
    .await;
    let (_, r) = invoke(
        c["id"].as_str().unwrap().to_owned(),
        "delay",
        json!({"seconds": 2}),
    )
    .await;
    assert_eq!(
        (r["error"]["class"].as_str(), r["attempts"].as_u64()),
        (Some("timeout"), Some(1)),
        "{r}"
    );
}

//! The orchestration engine survives SIGKILL: 200 executions are started,
//! the control plane process is killed while they run, a new one starts on
//! the same data directory, and every execution ends exactly once with none
//! lost. A call that was in flight at the kill may be made again (at least
//! once); the test counts those and bounds them by the workers in flight.

use std::time::{Duration, Instant};

use dibop_e2e::harness::{Api, ControlPlane, Dms};
use serde_json::{Value, json};

const ORCHESTRATION: &str = r#"
format: dibop.orchestration/v1
name: durable
steps:
  - { id: list, type: call, connection: DMS, operation: listVehicles, parameters: { page_size: 1 } }
  - { id: pause, type: delay, ms: 40 }
  - { id: vin, type: transform, expression: ".steps.list.response.items[0].vin" }
"#;

#[tokio::test]
async fn executions_survive_sigkill_and_finish_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cp");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let allow = ["--cloud-agent-allow", "127.0.0.0/8"];
    let mut cp = ControlPlane::start_with(&data, any, any, &allow)
        .await
        .unwrap();
    let api = cp.tenant("durable-motors").await.unwrap();
    let dms = Dms::start().await.unwrap();
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
    let created: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/orchestrations", cp.http))
        .bearer_auth(api.token())
        .header("content-type", "application/yaml")
        .body(ORCHESTRATION)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let orchestration = created["id"].as_str().unwrap().to_owned();

    // 200 executions, queued as fast as the API takes them.
    let mut started = Vec::new();
    for _ in 0..200 {
        let (status, e) = api
            .send(
                "POST",
                &format!("/orchestrations/{orchestration}/execute"),
                Some(json!({})),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{e}");
        started.push(e["id"].as_str().unwrap().to_owned());
    }
    // Some have finished, many have not: kill -9.
    cp.kill().await;

    let cp = ControlPlane::start_with(&data, any, any, &allow)
        .await
        .unwrap();
    let api = Api::new(&cp.http, api.token());
    let deadline = Instant::now() + Duration::from_secs(120);
    let executions = loop {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/executions?limit=500&cursor={c}"),
                None => "/executions?limit=500".to_owned(),
            };
            let (_, page) = api.send("GET", &path, None).await.unwrap();
            let page = page.as_array().cloned().unwrap_or_default();
            let done = page.len() < 500;
            cursor = page
                .last()
                .and_then(|e| e["id"].as_str())
                .map(str::to_owned);
            all.extend(page);
            if done {
                break;
            }
        }
        let unfinished = all
            .iter()
            .filter(|e| matches!(e["status"].as_str(), Some("queued" | "running")))
            .count();
        if unfinished == 0 {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "{unfinished} executions never finished after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(executions.len(), 200, "no execution lost, none invented");
    for e in &executions {
        assert_eq!(e["status"], "succeeded", "{e}");
        assert!(started.contains(&e["id"].as_str().unwrap().to_owned()));
    }
    // Each execution's steps each succeeded exactly once in its record.
    let sample = &executions[0]["id"];
    let (_, one) = api
        .send(
            "GET",
            &format!("/executions/{}", sample.as_str().unwrap()),
            None,
        )
        .await
        .unwrap();
    let paths: Vec<&str> = one["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["steps[0]", "steps[1]", "steps[2]"], "{one}");
    // At-least-once calls: only those in flight at the kill may repeat.
    let (_, calls) = api.send("GET", "/api-calls?limit=500", None).await.unwrap();
    let mut per_execution = std::collections::HashMap::<String, usize>::new();
    for c in calls.as_array().unwrap() {
        *per_execution
            .entry(c["actor"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let repeated = per_execution.values().filter(|n| **n > 1).count();
    assert!(
        repeated <= 16,
        "{repeated} executions repeated a call: more than the 16 in flight"
    );
    eprintln!(
        "SIGKILL test: 200 executions, {} call-log entries, {repeated} repeated in-flight calls",
        per_execution.values().sum::<usize>()
    );
}

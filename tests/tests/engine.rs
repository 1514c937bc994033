//! The orchestration engine survives SIGKILL: 200 executions are started,
//! the control plane process is killed while they run, a new one starts on
//! the same data directory, and every execution ends exactly once with none
//! lost. A call that was in flight at the kill may be made again (at least
//! once); the test counts those and bounds them by the workers in flight,
//! and the creating call carries the step's idempotency key, so the DMS
//! creates each appointment once however often the call is repeated.

use std::time::{Duration, Instant};

use dibop_e2e::harness::{Api, ControlPlane, Dms};
use serde_json::{Value, json};

const ORCHESTRATION: &str = r#"
format: dibop.orchestration/v1
name: durable
steps:
  - { id: list, type: call, connection: DMS, operation: listVehicles, parameters: { page_size: 1 } }
  - { id: pause, type: delay, ms: 40 }
  - id: book
    type: call
    connection: DMS
    operation: createAppointment
    parameters:
      appointment: { start: "2026-12-01T09:00:00Z", service: durable, reference: "{{ .ctx.execution_id }}" }
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
    let orchestration = api.create_orchestration(ORCHESTRATION).await.unwrap();

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
    assert_eq!(
        paths,
        ["steps[0]", "steps[1]", "steps[2]", "steps[3]"],
        "{one}"
    );
    let key = format!("{}.steps[2]", sample.as_str().unwrap());
    assert_eq!(one["steps"][2]["input"]["idempotency_key"], key.as_str());
    // At-least-once calls: only those in flight at the kill may repeat.
    let mut per_step = std::collections::HashMap::<(String, String), usize>::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api-calls?limit=500&cursor={c}"),
            None => "/api-calls?limit=500".to_owned(),
        };
        let (_, page) = api.send("GET", &path, None).await.unwrap();
        let page = page.as_array().cloned().unwrap_or_default();
        for c in &page {
            *per_step
                .entry((
                    c["actor"].as_str().unwrap().to_owned(),
                    c["operation"].as_str().unwrap().to_owned(),
                ))
                .or_default() += 1;
        }
        if page.len() < 500 {
            break;
        }
        cursor = page
            .last()
            .and_then(|c| c["id"].as_str())
            .map(str::to_owned);
    }
    let repeated = per_step.values().filter(|n| **n > 1).count();
    assert!(
        repeated <= 16,
        "{repeated} calls were repeated: more than the 16 in flight"
    );
    let repeated_creations = per_step
        .iter()
        .filter(|((_, op), n)| op == "createAppointment" && **n > 1)
        .count();
    // Each execution booked exactly one appointment, repeats included.
    let mut references = Vec::new();
    for page in 1..=3 {
        let body: Value = reqwest::Client::new()
            .get(format!(
                "{}/api/v1/appointments?service=durable&page_size=200&page={page}",
                dms.url
            ))
            .header("X-API-Key", "dms-demo-key")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for a in body["items"].as_array().unwrap() {
            references.push(a["reference"].as_str().unwrap().to_owned());
        }
    }
    let distinct: std::collections::HashSet<&String> = references.iter().collect();
    assert_eq!(
        (references.len(), distinct.len()),
        (200, 200),
        "one appointment per execution"
    );
    eprintln!(
        "SIGKILL test: 200 executions, {} call-log entries, {repeated} repeated in-flight calls \
         ({repeated_creations} of them creations, deduplicated by their idempotency keys)",
        per_step.values().sum::<usize>()
    );
}

const WAITING: &str = r#"
format: dibop.orchestration/v1
name: waits for its agent
steps:
  - { id: list, type: call, connection: Site DMS, operation: listVehicles, parameters: { page_size: 1 } }
  - { id: vin, type: transform, expression: ".steps.list.response.items[0].vin" }
"#;

/// Executions whose relay group has no agent online wait for one (their step
/// shows `waiting`), across a SIGKILL and restart of the control plane, and
/// all succeed once the site's agent is back: none fails for want of a retry
/// policy long enough to cover the restart.
#[tokio::test]
async fn executions_wait_for_the_sites_agent_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cp");
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut cp = ControlPlane::start_with(&data, any, any, &[])
        .await
        .unwrap();
    let api = cp.tenant("waiting-motors").await.unwrap();
    let dms = Dms::start().await.unwrap();
    let group = api.create_group("site-w").await.unwrap();
    let token = api.enrollment_token(&group, None).await.unwrap();
    let allow = [dms.addr.to_string()];
    let mut agent = dibop_e2e::harness::Agent::enroll_and_start(dir.path(), "gw", &token, &allow)
        .await
        .unwrap();
    api.wait_online(&agent.id).await.unwrap();
    let (_, catalogue) = api.send("GET", "/catalogue?q=dms-sim", None).await.unwrap();
    let (status, c) = api
        .send(
            "POST",
            "/connections",
            Some(json!({"connector_id": catalogue[0]["id"], "name": "Site DMS", "auth_type": "api_key",
                "credentials": {"api_key": "dms-demo-key"}, "base_url": dms.url,
                "execution_mode": "agent_group", "agent_group_id": group, "activate": true})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{c}");
    let orchestration = api.create_orchestration(WAITING).await.unwrap();
    api.send(
        "POST",
        &format!("/orchestrations/{orchestration}/activate"),
        None,
    )
    .await
    .unwrap();

    // The site goes dark, then 40 executions start: they wait.
    agent.terminate().await.unwrap();
    let mut started = Vec::new();
    for _ in 0..40 {
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
    // (The tenant's concurrency limit lets some run, and wait, while the others queue.)
    let waiting_step = |api: Api| async move {
        let (_, running) = api
            .send("GET", "/executions?status=running", None)
            .await
            .unwrap();
        for e in running.as_array().cloned().unwrap_or_default() {
            let id = e["id"].as_str().unwrap();
            let (_, e) = api
                .send("GET", &format!("/executions/{id}"), None)
                .await
                .unwrap();
            if e["steps"][0]["status"] == "waiting" {
                return Some(e);
            }
        }
        None
    };
    let e = dibop_e2e::harness::eventually(
        "a step waiting for the agent",
        Duration::from_secs(30),
        || waiting_step(Api::new(&cp.http, api.token())),
    )
    .await
    .unwrap();
    assert_eq!(e["status"], "running", "{e}");
    assert!(
        e["steps"][0]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("waiting for an agent"),
        "{e}"
    );

    // The control plane is killed and restarted on the same addresses.
    let (http, tunnel) = (cp.http_addr, cp.tunnel_addr);
    cp.kill().await;
    let cp = ControlPlane::start_with(&data, http, tunnel, &[])
        .await
        .unwrap();
    let api = Api::new(&cp.http, api.token());
    dibop_e2e::harness::eventually(
        "steps waiting again after the restart",
        Duration::from_secs(30),
        || waiting_step(Api::new(&cp.http, api.token())),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, failed) = api
        .send("GET", "/executions?status=failed", None)
        .await
        .unwrap();
    assert_eq!(failed, json!([]), "nothing fails while the agent is away");

    // An API call made now, just after the restart, waits for the site's
    // agent (the start-up grace) instead of failing at once.
    let connection = c["id"].as_str().unwrap().to_owned();
    let waiting_call = {
        let api = api.clone();
        tokio::spawn(async move {
            api.send(
                "POST",
                &format!("/connections/{connection}/operations/listVehicles/invoke"),
                Some(json!({})),
            )
            .await
            .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The agent comes back: the waiting call and every execution succeed, once.
    let _agent = dibop_e2e::harness::Agent::start(&agent.data_dir, &allow)
        .await
        .unwrap();
    let (status, answered) = waiting_call.await.unwrap();
    assert_eq!(status, 200, "{answered}");
    assert_eq!(
        answered["ok"], true,
        "the call waited for the agent: {answered}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, all) = api
            .send("GET", "/executions?limit=100", None)
            .await
            .unwrap();
        let all = all.as_array().cloned().unwrap_or_default();
        assert_eq!(all.len(), 40, "none lost, none invented");
        if all.iter().all(|e| e["status"] == "succeeded") {
            break;
        }
        assert!(
            all.iter().all(|e| matches!(
                e["status"].as_str(),
                Some("queued" | "running" | "succeeded")
            )),
            "{all:?}"
        );
        assert!(Instant::now() < deadline, "never all succeeded: {all:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

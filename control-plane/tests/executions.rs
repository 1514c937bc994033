//! The orchestration engine against a real DMS simulator: steps, retries,
//! error handling, traces, cancellation, and resuming after a restart.

use serde_json::{Value, json};

use dibop_control_plane::domain::ExecutionStatus;
use dibop_control_plane::testing::TestCp;

const EXAMPLE: &str = include_str!("../../catalogue/orchestrations/vin-decode-and-enrich.yaml");

struct Setup {
    cp: TestCp,
    sim: String,
    connection: String,
}

async fn setup() -> Setup {
    // Schedules are driven by the tests, with their own clock.
    let cp = TestCp::start_with(|s| s.run_scheduler = false).await;
    let (sim, connection) = cp.demo_dms().await;
    Setup {
        connection,
        cp,
        sim,
    }
}

/// An execution that was running when its node stopped, as a restart finds it.
async fn interrupted(core: &dibop_control_plane::Core, exe: &str, orchestration: &str, name: &str) {
    let tenant = core.store.tenant_by_name("acme").await.unwrap().unwrap().id;
    let row = dibop_control_plane::store::ExecutionRow {
        id: exe.into(),
        tenant_id: tenant,
        orchestration_id: orchestration.into(),
        orchestration_name: name.into(),
        version: 1,
        status: ExecutionStatus::Running,
        parameters: "{}".into(),
        output: None,
        error: None,
        trigger_type: "api".into(),
        created_by: "test".into(),
        created_at: 1,
        started_at: Some(1),
        finished_at: None,
        rerun_of: None,
        dead_letter: None,
    };
    core.store.create_execution(&row).await.unwrap();
    // Held by a node that is still alive as far as the lease says, so this
    // control plane's own sweep (every 5 s) leaves it to the test, which
    // resumes it by hand once its step records are written.
    let until = 4_000_000_000;
    let held = core
        .store
        .claim_execution(exe, &row.tenant_id, "a-node-that-stopped", 1, until, 1_000)
        .await
        .unwrap();
    assert!(held, "the test holds the execution");
}

async fn create(cp: &TestCp, body: &str) -> String {
    cp.create_orchestration(body).await
}

async fn run(cp: &TestCp, id: &str, parameters: Value) -> Value {
    cp.run(id, parameters).await
}

async fn vin(sim: &str, status: &str) -> String {
    let v: Value = reqwest::Client::new()
        .get(format!(
            "{sim}/api/v1/vehicles?page_size=50&status={status}"
        ))
        .header("X-API-Key", "dms-demo-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"][0]["vin"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_example_runs_branches_and_traces_every_step() {
    let s = setup().await;
    let id = create(&s.cp, EXAMPLE).await;
    let in_stock = vin(&s.sim, "in_stock").await;
    let e = run(&s.cp, &id, json!({"vin": in_stock})).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["output"]["branch"], "then");
    assert!(
        e["output"]["output"]["headline"]
            .as_str()
            .unwrap()
            .contains("EUR"),
        "{e}"
    );
    assert_eq!(
        e["output"]["output"]["channel"], "web",
        "the default applied"
    );
    let traces: Vec<(&str, &str)> = e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["path"].as_str().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        traces,
        [
            ("steps[0]", "succeeded"),
            ("steps[1]", "succeeded"),
            ("steps[2]", "succeeded"),
            ("steps[3]", "succeeded"),
            ("steps[3].else[0]", "skipped"),
            ("steps[3].then[0]", "succeeded")
        ]
    );
    // The branch not taken is in the trace, saying why it did not run.
    assert_eq!(
        e["steps"][4]["error"]["message"], "not run: the branch took `then`",
        "{e}"
    );
    // The DMS's vehicle became a valid CDM vehicle (kilometres, euros, vPIC body class).
    let cdm = &e["steps"][1]["output"];
    assert_eq!(cdm["domain"], "vehicle", "{cdm}");
    let v = &cdm["records"][0];
    assert_eq!(v["vin"], in_stock.as_str());
    assert_eq!(v["currency"], "EUR");
    assert_eq!(v["status"], "in_stock");
    assert!(v["mileage_km"].is_number() && v["year"].is_number(), "{v}");
    assert!(v.get("modelYear").is_none(), "{v}");
    let call = &e["steps"][0];
    assert_eq!(
        call["input"]["parameters"]["vin"],
        in_stock.as_str(),
        "the input after resolution"
    );
    assert_eq!(call["output"]["status_code"], 200);
    // The call is in the API-call log, made by the execution.
    let (_, calls) =
        s.cp.get(format!("/api-calls?connection_id={}", s.connection))
            .await;
    assert_eq!(
        calls[0]["actor"],
        format!("execution:{}", e["id"].as_str().unwrap())
    );

    // Not in stock: the else branch fails the run with the rendered message.
    let sold = vin(&s.sim, "sold").await;
    let e = run(&s.cp, &id, json!({"vin": sold})).await;
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["error"]["step"], "unavailable");
    assert_eq!(e["error"]["message"], format!("{sold} is not in stock"));

    // An unknown VIN: the call fails (404), is retried by the step's policy, and fails the run.
    let e = run(&s.cp, &id, json!({"vin": "WVWZZZ00000000000"})).await;
    assert_eq!(
        (e["status"].as_str(), e["error"]["step"].as_str()),
        (Some("failed"), Some("vehicle")),
        "{e}"
    );
    assert_eq!(e["steps"][0]["attempts"], 3, "{e}");

    // Parameters are checked before anything runs.
    let (status, answer) =
        s.cp.post(
            format!("/orchestrations/{id}/execute"),
            json!({"parameters": {"vim": 1}}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    let details = answer["error"]["details"].to_string();
    assert!(
        details.contains("parameters.vim") && details.contains("parameters.vin"),
        "{details}"
    );
}

#[tokio::test]
async fn foreach_in_parallel_on_error_continue_and_cancel() {
    let s = setup().await;
    let id = create(
        &s.cp,
        r#"
format: dibop.orchestration/v1
name: Stock check
steps:
  - id: list
    type: call
    connection: Demo DMS
    operation: listVehicles
    parameters: { page_size: 6 }
  - id: each
    type: foreach
    items: .steps.list.response.items
    mode: parallel
    concurrency: 3
    steps:
      - id: one
        type: call
        connection: Demo DMS
        operation: getVehicle
        parameters: { vin: "{{ .item.vin }}" }
      - id: price
        type: transform
        expression: .steps.one.response.priceEur
  - id: broken
    type: transform
    expression: .steps.list.response.items | .nope.deeper + 1
    on_error: continue
  - id: total
    type: transform
    expression: "[.steps.each[]] | add"
"#,
    )
    .await;
    let e = run(&s.cp, &id, json!({})).await;
    assert_eq!(e["status"], "partially_succeeded", "{e}");
    let each = e["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["path"]
                .as_str()
                .unwrap()
                .starts_with("steps[1].steps[0]#")
        })
        .count();
    assert_eq!(each, 6, "one call per item");
    assert!(e["output"].as_f64().unwrap() > 0.0, "{e}");

    // Cancel a long run: the next step never starts.
    let slow = create(
        &s.cp,
        "format: dibop.orchestration/v1\nname: slow\nsteps:\n  - {id: wait, type: delay, ms: 1500}\n  - {id: after, type: transform, expression: '1'}\n",
    )
    .await;
    let mut rx = s.cp.core.engine.subscribe();
    let (_, started) =
        s.cp.post(format!("/orchestrations/{slow}/execute"), json!({}))
            .await;
    let exe = started["id"].as_str().unwrap().to_owned();
    let (status, cancelled) =
        s.cp.send("POST", format!("/executions/{exe}/cancel"), None)
            .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(done) = rx.recv().await {
            if done == exe {
                break;
            }
        }
    })
    .await;
    let (_, after) = s.cp.get(format!("/executions/{exe}")).await;
    assert_eq!(after["status"], "cancelled");
    assert!(
        after["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["step_id"] != "after"),
        "{after}"
    );
    let (status, _) =
        s.cp.send("POST", format!("/executions/{exe}/cancel"), None)
            .await;
    assert_eq!(status, 409);
}

/// Steps after a failure are in the trace as skipped, with why; a step
/// that continues on error has its error as its output.
#[tokio::test]
async fn skipped_steps_and_continued_errors_are_traced() {
    let s = setup().await;
    let id = create(
        &s.cp,
        r#"
format: dibop.orchestration/v1
name: skips
steps:
  - { id: tolerant, type: transform, expression: "error(\"tolerated\")", on_error: continue }
  - { id: breaks, type: transform, expression: "\"text\" + 1" }
  - { id: never, type: transform, expression: "1" }
  - { id: neither, type: delay, ms: 1 }
"#,
    )
    .await;
    let e = run(&s.cp, &id, json!({})).await;
    assert_eq!(e["status"], "failed", "{e}");
    let steps = e["steps"].as_array().unwrap();
    let traces: Vec<(&str, &str)> = steps
        .iter()
        .map(|t| {
            (
                t["step_id"].as_str().unwrap(),
                t["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        traces,
        [
            ("tolerant", "failed"),
            ("breaks", "failed"),
            ("never", "skipped"),
            ("neither", "skipped")
        ],
        "{e}"
    );
    assert_eq!(
        steps[0]["output"]["error"]["class"], "expression_error",
        "the continued step's output is its error: {e}"
    );
    assert_eq!(
        steps[2]["error"]["message"], "not run: step `breaks` failed before it",
        "{e}"
    );
}

/// A delay resumed after a restart waits only what is left of it: its end
/// time is stored when it starts.
#[tokio::test]
async fn a_resumed_delay_waits_only_what_is_left() {
    let s = setup().await;
    let id = create(
        &s.cp,
        "format: dibop.orchestration/v1
name: long wait
steps:
  - {id: wait, type: delay, ms: 600000}
  - {id: after, type: transform, expression: '1'}
",
    )
    .await;
    let core = &s.cp.core;
    interrupted(core, "exe_delayed", &id, "long wait").await;
    // The ten-minute delay started ten minutes and one second ago, then the node stopped.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let step = dibop_control_plane::store::StepRow {
        execution_id: "exe_delayed".into(),
        path: "steps[0]".into(),
        seq: 1,
        step_id: "wait".into(),
        step_type: "delay".into(),
        status: "running".into(),
        input: Some(json!({"ms": 600000, "until_ms": now_ms - 1000}).to_string()),
        output: None,
        error: None,
        attempts: 1,
        started_at: 1,
        finished_at: None,
        duration_ms: None,
    };
    core.store.start_step(&step).await.unwrap();
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        dibop_control_plane::orchestration::engine::execute(core, "exe_delayed", 0),
    )
    .await
    .expect("the delay started over instead of resuming")
    .unwrap();
    assert_eq!(ended.status, ExecutionStatus::Succeeded);
}

#[tokio::test]
async fn a_resumed_execution_does_not_repeat_completed_steps() {
    let s = setup().await;
    let id = create(
        &s.cp,
        "format: dibop.orchestration/v1\nname: resume\nsteps:\n  - {id: list, type: call, connection: Demo DMS, operation: listVehicles}\n  - {id: count, type: transform, expression: '.steps.list.response.items | length'}\n",
    )
    .await;
    // An execution interrupted after its first step: as a restart finds it.
    let core = &s.cp.core;
    interrupted(core, "exe_resumed", &id, "resume").await;
    core.store
        .update_execution("exe_resumed", ExecutionStatus::Running, None, None, 1)
        .await
        .unwrap();
    let step = dibop_control_plane::store::StepRow {
        execution_id: "exe_resumed".into(),
        path: "steps[0]".into(),
        seq: 1,
        step_id: "list".into(),
        step_type: "call".into(),
        status: "running".into(),
        input: None,
        output: None,
        error: None,
        attempts: 1,
        started_at: 1,
        finished_at: None,
        duration_ms: None,
    };
    core.store.start_step(&step).await.unwrap();
    core.store
        .finish_step(
            "exe_resumed",
            "steps[0]",
            "succeeded",
            None,
            Some(r#"{"response": {"items": [1, 2, 3]}}"#),
            None,
            1,
            2,
            5,
        )
        .await
        .unwrap();
    let ended = dibop_control_plane::orchestration::engine::execute(core, "exe_resumed", 0)
        .await
        .unwrap();
    assert_eq!(ended.status, ExecutionStatus::Succeeded);
    assert_eq!(
        ended.output.as_deref(),
        Some("3"),
        "the recorded output of step 1 was used"
    );
    let (_, calls) =
        s.cp.get(format!("/api-calls?connection_id={}", s.connection))
            .await;
    assert_eq!(calls, json!([]), "the completed call was not made again");
}

#[tokio::test]
async fn dead_letters_replay_from_the_failed_step() {
    let s = setup().await;
    let (_, catalogue) = s.cp.get("/catalogue?q=dms-sim").await;
    let (_, second) =
        s.cp.post(
            "/connections",
            json!({"connector_id": catalogue[0]["id"], "name": "Second", "auth_type": "api_key",
                "credentials": {"api_key": "dms-demo-key"}, "base_url": s.sim}),
        )
        .await;
    let second = second["id"].as_str().unwrap().to_owned();
    let id = create(
        &s.cp,
        r#"
format: dibop.orchestration/v1
name: two systems
steps:
  - { id: a, type: call, connection: Demo DMS, operation: listVehicles, parameters: { page_size: 1 } }
  - { id: b, type: call, connection: Second, operation: getVehicle, parameters: { vin: "{{ .steps.a.response.items[0].vin }}" } }
"#,
    )
    .await;
    // `Second` is inactive: the run fails at b and lands in the dead-letter queue.
    let failed = run(&s.cp, &id, json!({})).await;
    assert_eq!(
        (failed["status"].as_str(), failed["error"]["step"].as_str()),
        (Some("failed"), Some("b")),
        "{failed}"
    );
    let exe = failed["id"].as_str().unwrap().to_owned();
    let (_, letters) = s.cp.get("/dead-letters").await;
    assert_eq!(letters[0]["id"], exe.as_str(), "{letters}");
    assert_eq!(letters[0]["dead_letter"], "open");

    // Fixed: replay from the failed step; a's call is not made again.
    s.cp.send("POST", format!("/connections/{second}/activate"), None)
        .await;
    let (_, calls_before) =
        s.cp.get(format!("/api-calls?connection_id={}", s.connection))
            .await;
    let (status, replayed) =
        s.cp.send("POST", format!("/dead-letters/{exe}/replay"), None)
            .await;
    assert_eq!(status, 201, "{replayed}");
    let new_id = replayed["id"].as_str().unwrap().to_owned();
    let mut rx = s.cp.core.engine.subscribe();
    let (_, mut now) = s.cp.get(format!("/executions/{new_id}")).await;
    while !matches!(now["status"].as_str(), Some("succeeded" | "failed")) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv()).await;
        now = s.cp.get(format!("/executions/{new_id}")).await.1;
    }
    assert_eq!(
        (now["status"].as_str(), now["rerun_of"].as_str()),
        (Some("succeeded"), Some(exe.as_str())),
        "{now}"
    );
    let (_, calls_after) =
        s.cp.get(format!("/api-calls?connection_id={}", s.connection))
            .await;
    assert_eq!(
        calls_after.as_array().unwrap().len(),
        calls_before.as_array().unwrap().len(),
        "step a was reused"
    );
    let (_, letters) = s.cp.get("/dead-letters").await;
    assert_eq!(letters, json!([]));
    assert_eq!(
        s.cp.send("POST", format!("/dead-letters/{exe}/replay"), None)
            .await
            .0,
        404,
        "replayed once"
    );

    // A failed execution re-run with success is settled: its dead letter closes.
    s.cp.send("POST", format!("/connections/{second}/deactivate"), None)
        .await;
    let failed_again = run(&s.cp, &id, json!({})).await;
    assert_eq!(failed_again["status"], "failed", "{failed_again}");
    let failed_id = failed_again["id"].as_str().unwrap().to_owned();
    let (_, letters) = s.cp.get("/dead-letters").await;
    assert_eq!(letters[0]["id"], failed_id.as_str(), "{letters}");
    s.cp.send("POST", format!("/connections/{second}/activate"), None)
        .await;
    let (status, rerun) =
        s.cp.post(
            format!("/executions/{failed_id}/rerun"),
            json!({"from": "failed_step", "wait_ms": 30000}),
        )
        .await;
    assert_eq!(
        (status, rerun["status"].as_str()),
        (201, Some("succeeded")),
        "{rerun}"
    );
    let (_, letters) = s.cp.get("/dead-letters").await;
    assert_eq!(letters, json!([]), "the successful re-run closed it");
    let (_, settled) = s.cp.get(format!("/executions/{failed_id}")).await;
    assert_eq!(settled["dead_letter"], "resolved");

    // A re-run from the start makes every call again; discard closes a dead letter.
    s.cp.send("POST", format!("/connections/{second}/deactivate"), None)
        .await;
    let again = run(&s.cp, &id, json!({})).await;
    let again_id = again["id"].as_str().unwrap().to_owned();
    let (status, rerun) =
        s.cp.post(
            format!("/executions/{again_id}/rerun"),
            json!({"from": "start", "wait_ms": 30000}),
        )
        .await;
    assert_eq!(
        (status, rerun["status"].as_str()),
        (201, Some("failed")),
        "{rerun}"
    );
    assert_eq!(
        s.cp.send("POST", format!("/dead-letters/{again_id}/discard"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        s.cp.send("POST", format!("/dead-letters/{again_id}/discard"), None)
            .await
            .0,
        404
    );
    let (status, answer) =
        s.cp.post(
            format!("/executions/{again_id}/rerun"),
            json!({"from": "middle"}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
}

#[tokio::test]
async fn a_tenant_runs_at_most_its_concurrent_executions() {
    let s = setup().await;
    let core = &s.cp.core;
    let mut tenant = core.store.tenant_by_name("acme").await.unwrap().unwrap();
    tenant.concurrent_executions = Some(1);
    // The test polls quickly: no request rate in the way.
    tenant.requests_per_minute = Some(1_000_000);
    core.store.update_tenant_plan(&tenant).await.unwrap();
    core.quotas.forget(&tenant.id);
    let id = create(
        &s.cp,
        "format: dibop.orchestration/v1\nname: slow\nsteps:\n  - {id: wait, type: delay, ms: 300}\n",
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, e) =
            s.cp.post(format!("/orchestrations/{id}/execute"), json!({}))
                .await;
        ids.push(e["id"].as_str().unwrap().to_owned());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut most = 0;
    loop {
        let (_, running) = s.cp.get("/executions?status=running").await;
        most = most.max(running.as_array().unwrap().len());
        let (_, done) = s.cp.get("/executions?status=succeeded").await;
        if done.as_array().unwrap().len() == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the executions did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        most <= 1,
        "{most} executions of a tenant limited to 1 ran at once"
    );
    let (_, view) = s.cp.get("/executions").await;
    assert_eq!(view.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn schedules_fire_once_per_time_in_their_zone_and_skip_overlaps() {
    let s = setup().await;
    let id = create(
        &s.cp,
        "format: dibop.orchestration/v1\nname: every five\ntrigger: {type: schedule, cron: '*/5 * * * *', timezone: Europe/Berlin}\nsteps:\n  - {id: wait, type: delay, ms: 3000}\n",
    )
    .await;
    let core = &s.cp.core;
    let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap().as_second();
    let fire = |t: i64| dibop_control_plane::orchestration::scheduler::fire_due(core, t);
    // A draft does not fire.
    assert!(fire(at("2026-11-28T10:02:30Z")).await.unwrap().is_empty());
    s.cp.send("POST", format!("/orchestrations/{id}/activate"), None)
        .await;
    // Planned: the first firing after now is 10:05.
    assert!(fire(at("2026-11-28T10:02:30Z")).await.unwrap().is_empty());
    assert!(fire(at("2026-11-28T10:04:59Z")).await.unwrap().is_empty());
    let started = fire(at("2026-11-28T10:05:01Z")).await.unwrap();
    assert_eq!(started.len(), 1, "one execution at 10:05");
    assert!(
        fire(at("2026-11-28T10:05:02Z")).await.unwrap().is_empty(),
        "fired once"
    );
    let (_, e) = s.cp.get(format!("/executions/{}", started[0])).await;
    assert_eq!(e["trigger"], "schedule");
    // 10:10 comes while the 10:05 run still waits: skipped.
    assert!(
        fire(at("2026-11-28T10:10:00Z")).await.unwrap().is_empty(),
        "overlap skipped"
    );
    // Paused: nothing fires.
    s.cp.send("POST", format!("/orchestrations/{id}/pause"), None)
        .await;
    assert!(fire(at("2026-11-28T10:15:00Z")).await.unwrap().is_empty());
}

#[tokio::test]
async fn webhooks_start_executions_with_the_body_as_parameters() {
    let s = setup().await;
    let id = create(
        &s.cp,
        "format: dibop.orchestration/v1\nname: hook\ntrigger: {type: webhook, auth: hmac}\nparameters:\n  - {name: vin, type: string, required: true}\nsteps:\n  - {id: echo, type: transform, expression: '.params.vin | ascii_downcase'}\n",
    )
    .await;
    let hook = format!("{}/api/v1/hooks/{id}", s.cp.base);
    let body = r#"{"vin": "WVWZZZ1JZXW000001", "extra": "ignored"}"#;
    let post = |timestamp: i64, signature: String| {
        reqwest::Client::new()
            .post(hook.clone())
            .header("content-type", "application/json")
            .header("x-webhook-timestamp", timestamp.to_string())
            .header("x-webhook-signature", signature)
            .body(body)
            .send()
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    // No secret yet: refused.
    assert_eq!(
        post(now(), "sha256=00".into())
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let (status, secret) =
        s.cp.send("POST", format!("/orchestrations/{id}/webhook-secret"), None)
            .await;
    assert_eq!(status, 201, "{secret}");
    let secret = secret["secret"].as_str().unwrap().to_owned();
    let sign = |timestamp: i64, body: &str| {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        format!(
            "sha256={}",
            hex::encode(
                aws_lc_rs::hmac::sign(&key, format!("{timestamp}.{body}").as_bytes()).as_ref()
            )
        )
    };
    // A wrong signature is refused; a draft is not triggered.
    assert_eq!(
        post(now(), "sha256=deadbeef".into())
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    let at = now();
    assert_eq!(
        post(at, sign(at, body)).await.unwrap().status().as_u16(),
        409,
        "a draft does not run"
    );
    s.cp.send("POST", format!("/orchestrations/{id}/activate"), None)
        .await;
    // A signature of the body alone (no timestamp signed) is refused.
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let body_only = format!(
        "sha256={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, body.as_bytes()).as_ref())
    );
    assert_eq!(post(now(), body_only).await.unwrap().status().as_u16(), 401);
    // A correctly signed but stale request (10 minutes old) is refused, naming why.
    let old = now() - 600;
    let resp = post(old, sign(old, body)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "stale_signature", "{e}");
    let at = now();
    let resp = post(at, sign(at, body)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    // The same signed request again: refused as a replay, no second execution.
    let replay = post(at, sign(at, body)).await.unwrap();
    assert_eq!(replay.status().as_u16(), 409);
    let e: Value = replay.json().await.unwrap();
    assert_eq!(e["error"]["code"], "replayed", "{e}");
    let (_, list) = s.cp.get(format!("/executions?orchestration_id={id}")).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let accepted: Value = resp.json().await.unwrap();
    let exe = accepted["execution_id"].as_str().unwrap().to_owned();
    let mut e = Value::Null;
    for _ in 0..200 {
        e = s.cp.get(format!("/executions/{exe}")).await.1;
        if e["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        (e["status"].as_str(), e["trigger"].as_str()),
        (Some("succeeded"), Some("webhook")),
        "{e}"
    );
    assert_eq!(e["output"], "wvwzzz1jzxw000001");
    assert_eq!(
        e["parameters"],
        json!({"vin": "WVWZZZ1JZXW000001"}),
        "undeclared keys are dropped"
    );
    assert!(!e.to_string().contains(&secret));
}

/// With `auth: secret` the secret itself travels, so only a sender's
/// delivery id can tell a repeat: each `X-Webhook-Id` runs once.
#[tokio::test]
async fn secret_webhooks_run_each_delivery_id_once() {
    let s = setup().await;
    let id = create(
        &s.cp,
        "format: dibop.orchestration/v1\nname: hook-by-secret\ntrigger: {type: webhook, auth: secret}\nsteps:\n  - {id: one, type: transform, expression: '1'}\n",
    )
    .await;
    let (_, secret) =
        s.cp.send("POST", format!("/orchestrations/{id}/webhook-secret"), None)
            .await;
    let secret = secret["secret"].as_str().unwrap().to_owned();
    s.cp.send("POST", format!("/orchestrations/{id}/activate"), None)
        .await;
    let hook = format!("{}/api/v1/hooks/{id}", s.cp.base);
    let post = |delivery: Option<&'static str>| {
        let mut req = reqwest::Client::new()
            .post(hook.clone())
            .header("content-type", "application/json")
            .header("x-webhook-secret", secret.clone())
            .body("{}");
        if let Some(d) = delivery {
            req = req.header("x-webhook-id", d);
        }
        req.send()
    };
    assert_eq!(
        post(Some("delivery-1")).await.unwrap().status().as_u16(),
        202
    );
    let again = post(Some("delivery-1")).await.unwrap();
    assert_eq!(again.status().as_u16(), 409);
    let e: Value = again.json().await.unwrap();
    assert_eq!(e["error"]["code"], "replayed", "{e}");
    assert_eq!(
        post(Some("delivery-2")).await.unwrap().status().as_u16(),
        202
    );
    // Without an id, nothing can tell a repeat: each runs.
    assert_eq!(post(None).await.unwrap().status().as_u16(), 202);
    assert_eq!(post(None).await.unwrap().status().as_u16(), 202);
    let (_, list) = s.cp.get(format!("/executions?orchestration_id={id}")).await;
    assert_eq!(list.as_array().map(Vec::len), Some(4), "{list}");
}

#[tokio::test]
async fn deactivating_a_connection_lists_the_active_orchestrations_using_it() {
    let s = setup().await;
    let id = create(&s.cp, EXAMPLE).await;
    let (_, before) =
        s.cp.send(
            "POST",
            format!("/connections/{}/deactivate", s.connection),
            None,
        )
        .await;
    assert_eq!(
        before["active_orchestrations"],
        json!([]),
        "a draft does not count"
    );
    s.cp.send(
        "POST",
        format!("/connections/{}/activate", s.connection),
        None,
    )
    .await;
    s.cp.send("POST", format!("/orchestrations/{id}/activate"), None)
        .await;
    let (_, after) =
        s.cp.send(
            "POST",
            format!("/connections/{}/deactivate", s.connection),
            None,
        )
        .await;
    assert_eq!(
        after["active_orchestrations"],
        json!([format!("{id} (Vehicle availability)")]),
        "{after}"
    );
}

#[tokio::test]
async fn a_tenant_over_its_storage_limit_stores_nothing_more_until_it_has_room() {
    let s = setup().await;
    let core = &s.cp.core;
    let id = create(&s.cp, EXAMPLE).await;
    let in_stock = vin(&s.sim, "in_stock").await;
    assert_eq!(
        run(&s.cp, &id, json!({"vin": in_stock})).await["status"],
        "succeeded"
    );
    let mut tenant = core.store.tenant_by_name("acme").await.unwrap().unwrap();
    tenant.storage_bytes = Some(1_000);
    core.store.update_tenant_plan(&tenant).await.unwrap();
    core.quotas.forget(&tenant.id);
    // Measure now instead of waiting for the interval.
    core.quotas
        .refresh_storage(&core.store, std::time::Duration::ZERO)
        .await
        .unwrap();
    let (status, usage) = s.cp.get("/usage").await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["limits"]["storage_bytes"], 1_000);
    let stored = usage["storage_bytes"].as_i64().unwrap();
    assert!(stored > 1_000, "{usage}");

    // Starting an execution, invoking an operation, saving a definition: refused,
    // with Retry-After and a message naming the limit.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/orchestrations/{id}/execute", s.cp.base))
        .bearer_auth(&s.cp.admin)
        .json(&json!({"parameters": {"vin": in_stock}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "storage_limit", "{err}");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("storage limit is 1000 B") && message.contains("retention"),
        "{message}"
    );
    let (status, err) =
        s.cp.post(
            format!(
                "/connections/{}/operations/listVehicles/invoke",
                s.connection
            ),
            json!({"parameters": {"page_size": 1}}),
        )
        .await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (429, &json!("storage_limit"))
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/orchestrations", s.cp.base))
        .bearer_auth(&s.cp.admin)
        .header("content-type", "application/yaml")
        .body("format: dibop.orchestration/v1\nname: more\nsteps:\n  - {id: wait, type: delay, ms: 1}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    // Reading what is stored still works.
    let (status, list) = s.cp.get("/executions").await;
    assert_eq!((status, list.as_array().unwrap().len()), (200, 1));

    // Room again (a larger limit): work resumes.
    tenant.storage_bytes = Some(stored * 10);
    core.store.update_tenant_plan(&tenant).await.unwrap();
    core.quotas.forget(&tenant.id);
    assert_eq!(
        run(&s.cp, &id, json!({"vin": in_stock})).await["status"],
        "succeeded"
    );
}

#[tokio::test]
async fn a_retried_creating_call_carries_one_idempotency_key_and_creates_once() {
    let s = setup().await;
    let id = create(
        &s.cp,
        r#"format: dibop.orchestration/v1
name: book
steps:
  - id: book
    type: call
    connection: Demo DMS
    operation: createAppointment
    timeout_ms: 1000
    retry: { max_attempts: 3, initial_interval_ms: 10 }
    parameters:
      appointment: { start: "2027-02-01T08:00:00Z", service: keyed, reference: "{{ .ctx.execution_id }}" }
"#,
    )
    .await;
    // The DMS creates the appointment but its answer is too slow: the first
    // attempt times out after the creation happened.
    reqwest::Client::new()
        .post(format!("{}/_sim/faults", s.sim))
        .json(&json!({"fault": "slow-body", "delay_ms": 4000, "count": 1}))
        .send()
        .await
        .unwrap();
    let e = run(&s.cp, &id, json!({})).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let step = &e["steps"][0];
    assert_eq!(step["attempts"], 2, "{step}");
    let key = format!("{}.steps[0]", e["id"].as_str().unwrap());
    assert_eq!(step["input"]["idempotency_key"], key.as_str(), "{step}");
    // The second attempt got the first one's answer back: one appointment.
    assert_eq!(
        step["output"]["headers"]["idempotent-replayed"], "true",
        "{step}"
    );
    let booked: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/appointments?service=keyed", s.sim))
        .header("X-API-Key", "dms-demo-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(booked["total"], 1, "{booked}");
    assert_eq!(booked["items"][0]["reference"], e["id"]);
}

#[tokio::test]
async fn traces_keep_each_payload_up_to_the_limit_with_a_marker() {
    let s = setup().await;
    let id = create(
        &s.cp,
        "format: dibop.orchestration/v1\nname: big\ntrace: {payload_bytes: 4096}\nsteps:\n  \
         - {id: numbers, type: transform, expression: '[range(0; 5000)]'}\n  \
         - {id: count, type: transform, expression: '.steps.numbers | length'}\n",
    )
    .await;
    let e = run(&s.cp, &id, json!({})).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    // The later step read the whole list while the execution ran...
    assert_eq!(e["output"], 5000, "{e}");
    // ...and the finished trace keeps 4 KiB of it, saying how much it was.
    let out = &e["steps"][0]["output"];
    assert_eq!(out["truncated"], true, "{out}");
    let full = json!((0..5000).collect::<Vec<_>>()).to_string().len();
    assert_eq!(out["bytes"], full);
    let preview = out["preview"].as_str().unwrap();
    assert!(
        preview.len() <= 4096 && preview.starts_with("[0,1,2,"),
        "{preview}"
    );
    assert_eq!(e["steps"][1]["output"], 5000);

    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/orchestrations/validate", s.cp.base))
        .bearer_auth(&s.cp.admin)
        .header("content-type", "application/yaml")
        .body("format: dibop.orchestration/v1\nname: x\ntrace: {payload_bytes: 10, keep: all}\nsteps:\n  - {id: w, type: delay, ms: 1}\n")
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    let text = v.to_string();
    assert!(
        text.contains("$.trace.payload_bytes") && text.contains("$.trace.keep"),
        "{text}"
    );
}

#[tokio::test]
async fn a_runaway_expression_fails_its_step_and_the_control_plane_carries_on() {
    let s = setup().await;
    let id = create(
        &s.cp,
        "format: dibop.orchestration/v1\nname: deep\nsteps:\n  \
         - {id: deep, type: transform, expression: 'def f: 1 + f; f'}\n",
    )
    .await;
    let e = run(&s.cp, &id, json!({})).await;
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["error"]["class"], "expression_error", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("recursed too deeply"),
        "{e}"
    );
    // Same process, same engine: the next execution runs.
    let example = create(&s.cp, EXAMPLE).await;
    let in_stock = vin(&s.sim, "in_stock").await;
    assert_eq!(
        run(&s.cp, &example, json!({"vin": in_stock})).await["status"],
        "succeeded"
    );
}

#[tokio::test]
async fn orchestration_calls_count_against_the_monthly_quota() {
    let s = setup().await;
    let core = &s.cp.core;
    let mut tenant = core.store.tenant_by_name("acme").await.unwrap().unwrap();
    tenant.calls_per_month = Some(1);
    core.store.update_tenant_plan(&tenant).await.unwrap();
    core.quotas.forget(&tenant.id);
    let id = create(
        &s.cp,
        "format: dibop.orchestration/v1\nname: two-calls\nsteps:\n  \
         - {id: first, type: call, connection: Demo DMS, operation: listVehicles}\n  \
         - {id: second, type: call, connection: Demo DMS, operation: listVehicles}\n",
    )
    .await;
    let e = run(&s.cp, &id, json!({})).await;
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["steps"][0]["status"], "succeeded", "{e}");
    assert_eq!(e["error"]["class"], "rate_limited", "{e}");
    assert_eq!(e["error"]["step"], "second", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("monthly quota of 1 calls"),
        "{e}"
    );
}

/// Every call counts in the metrics by where it ran (connection invokes and
/// orchestration steps, not only diagnostic calls), and executions and
/// steps are counted with their durations.
#[tokio::test]
async fn metrics_count_every_call_execution_and_step() {
    let s = setup().await;
    let id = create(
        &s.cp,
        "format: dibop.orchestration/v1\nname: measured\nsteps:\n  - {id: list, type: call, connection: Demo DMS, operation: listVehicles}\n  - {id: count, type: transform, expression: '.steps.list.response.items | length'}\n",
    )
    .await;
    let e = run(&s.cp, &id, json!({})).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let (_, r) =
        s.cp.post(
            format!(
                "/connections/{}/operations/listVehicles/invoke",
                s.connection
            ),
            json!({}),
        )
        .await;
    assert_eq!(r["ok"], true);
    let metrics = reqwest::get(format!("{}/metrics", s.cp.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert!(value("dibop_calls_total{mode=\"cloud\",outcome=\"ok\",error_class=\"\"}") >= 2.0);
    assert_eq!(
        value("dibop_executions_finished_total{status=\"succeeded\"}"),
        1.0
    );
    assert_eq!(
        value("dibop_steps_finished_total{type=\"call\",status=\"succeeded\"}"),
        1.0
    );
    assert_eq!(
        value("dibop_steps_finished_total{type=\"transform\",status=\"succeeded\"}"),
        1.0
    );
    assert_eq!(
        value("dibop_step_duration_seconds_count{type=\"call\"}"),
        1.0
    );
    assert!(value("dibop_call_duration_seconds_count{mode=\"cloud\"}") >= 2.0);
}

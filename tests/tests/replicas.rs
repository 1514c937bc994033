//! Two control-plane replicas over one PostgreSQL database: a tenant's
//! request rate, monthly call quota and concurrent executions are one
//! budget across both, and executions of a replica that dies are taken
//! over by the other.

use std::time::Duration;

use dibop_e2e::harness::{Api, ControlPlane, bin, eventually};
use serde_json::{Value, json};

/// Runs `dibop admin …` against the shared database; its JSON output.
async fn admin(cp: &ControlPlane, args: &[&str]) -> Value {
    let out = tokio::process::Command::new(bin("dibop"))
        .args(["admin", "--data-dir"])
        .arg(&cp.data_dir)
        .args(["--database-url", cp.database_url.as_deref().unwrap()])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn tenant(cp: &ControlPlane, name: &str, rpm: &str, calls: &str) -> (String, String) {
    let v = admin(
        cp,
        &[
            "create-tenant",
            "--name",
            name,
            "--requests-per-minute",
            rpm,
            "--calls-per-month",
            calls,
        ],
    )
    .await;
    (
        v["tenant_id"].as_str().unwrap_or_default().to_owned(),
        v["api_token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn replicas_share_limits_and_take_over_executions() {
    let Some(url) = dibop_e2e::harness::fresh_postgres_database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let args = ["--database-url", url.as_str()];
    let mut a = ControlPlane::start_with(&dir.path().join("a"), any, any, &args)
        .await
        .unwrap();
    // The second replica shares the first one's keys (master key, CA), as
    // replicas behind one load balancer do.
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    for entry in std::fs::read_dir(&a.data_dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        // Each replica keeps its own log and node id.
        if path.is_file() && name != "dibop.log" && name != "node.id" {
            std::fs::copy(&path, dir.path().join("b").join(name)).unwrap();
        }
    }
    let b = ControlPlane::start_with(&dir.path().join("b"), any, any, &args)
        .await
        .unwrap();
    let platform = admin(&a, &["create-platform-admin", "--email", "ops@example.com"]).await;
    let platform_b = Api::new(&b.http, platform["api_token"].as_str().unwrap());

    // Request rate: 12 a minute. Eight through A...
    let (rate_id, rate_token) = tenant(&a, "rate-shared", "12", "1000000").await;
    let on_a = Api::new(&a.http, &rate_token);
    for _ in 0..8 {
        assert_eq!(on_a.send("GET", "/agents", None).await.unwrap().0, 200);
    }
    // ...are seen by B within about a second (platform admins' requests do not count).
    let seen = eventually("B to see A's requests", Duration::from_secs(20), || async {
        let (_, t) = platform_b
            .send("GET", &format!("/tenants/{rate_id}"), None)
            .await
            .ok()?;
        let n = t["requests_last_minute"].as_i64().unwrap_or(0);
        (n >= 7).then_some(n)
    })
    .await
    .unwrap();
    assert!(seen <= 8, "{seen}");
    // ...so B allows only what is left of the twelve, not twelve more.
    let on_b = Api::new(&b.http, &rate_token);
    let mut allowed = 0;
    let refusal = loop {
        let (status, body) = on_b.send("GET", "/agents", None).await.unwrap();
        if status == 429 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        allowed += 1;
        assert!(allowed <= 12, "B ignores the requests made through A");
    };
    assert!(allowed <= 5, "B allowed {allowed} more after A's 8 of 12");
    assert!(
        refusal["error"]["message"]
            .as_str()
            .unwrap()
            .contains("12 API requests per minute"),
        "{refusal}"
    );

    // Monthly calls: 10. Six relayed through A (no agent needed to count)...
    let (calls_id, calls_token) = tenant(&a, "calls-shared", "1000000", "10").await;
    let on_a = Api::new(&a.http, &calls_token);
    let group = on_a.create_group("site").await.unwrap();
    let call = json!({"url": "http://127.0.0.1:9/"});
    for _ in 0..6 {
        let (status, body) = on_a
            .send(
                "POST",
                &format!("/agent-groups/{group}/calls"),
                Some(call.clone()),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    // ...are in the shared counter within two seconds...
    eventually(
        "A's calls to be counted",
        Duration::from_secs(20),
        || async {
            let (_, t) = platform_b
                .send("GET", &format!("/tenants/{calls_id}"), None)
                .await
                .ok()?;
            (t["calls_this_month"] == 6).then_some(())
        },
    )
    .await
    .unwrap();
    // ...so B allows exactly the four left.
    let on_b = Api::new(&b.http, &calls_token);
    for i in 0..5 {
        let (status, body) = on_b
            .send(
                "POST",
                &format!("/agent-groups/{group}/calls"),
                Some(call.clone()),
            )
            .await
            .unwrap();
        if i < 4 {
            assert_eq!(status, 200, "call {i}: {body}");
        } else {
            assert_eq!(status, 429, "call {i}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("monthly quota of 10 calls"),
                "{body}"
            );
        }
    }

    // Executions: one at a time for this tenant, across both replicas.
    let (exec_id, exec_token) = tenant(&a, "exec-shared", "1000000", "1000000").await;
    let (status, t) = platform_b
        .send(
            "PATCH",
            &format!("/tenants/{exec_id}"),
            Some(json!({"concurrent_executions": 1})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{t}");
    let on_a = Api::new(&a.http, &exec_token);
    let on_b = Api::new(&b.http, &exec_token);
    let orchestration = |ms: u32| {
        format!(
            "format: dibop.orchestration/v1\nname: wait-{ms}\nsteps:\n  - {{id: wait, type: delay, ms: {ms}}}\n"
        )
    };
    let create =
        |api: Api, yaml: String| async move { api.create_orchestration(&yaml).await.unwrap() };
    let short = create(on_a.clone(), orchestration(300)).await;
    for api in [&on_a, &on_b, &on_a, &on_b, &on_a, &on_b] {
        let (status, e) = api
            .send(
                "POST",
                &format!("/orchestrations/{short}/execute"),
                Some(json!({})),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{e}");
    }
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    eventually("six executions to end", Duration::from_secs(60), || {
        let on_a = on_a.clone();
        let most = most.clone();
        async move {
            let (_, list) = on_a.send("GET", "/executions", None).await.ok()?;
            let list = list.as_array()?.clone();
            let running = list.iter().filter(|e| e["status"] == "running").count();
            most.fetch_max(running, std::sync::atomic::Ordering::SeqCst);
            (list.iter().filter(|e| e["status"] == "succeeded").count() == 6).then_some(())
        }
    })
    .await
    .unwrap();
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        most <= 1,
        "{most} executions ran at once for a tenant limited to 1"
    );

    // A replica dies mid-execution: the other takes it over when its lease runs out.
    let long = create(on_a.clone(), orchestration(2000)).await;
    let (_, e) = on_a
        .send(
            "POST",
            &format!("/orchestrations/{long}/execute"),
            Some(json!({})),
        )
        .await
        .unwrap();
    let exe = e["id"].as_str().unwrap().to_owned();
    eventually("the execution to run on A", Duration::from_secs(20), || {
        let on_a = on_a.clone();
        let exe = exe.clone();
        async move {
            let (_, e) = on_a
                .send("GET", &format!("/executions/{exe}"), None)
                .await
                .ok()?;
            (e["status"] == "running").then_some(())
        }
    })
    .await
    .unwrap();
    a.kill().await;
    let done = eventually("B to finish A's execution", Duration::from_secs(60), || {
        let on_b = on_b.clone();
        let exe = exe.clone();
        async move {
            let (_, e) = on_b
                .send("GET", &format!("/executions/{exe}"), None)
                .await
                .ok()?;
            (e["status"] == "succeeded").then_some(e)
        }
    })
    .await
    .unwrap();
    assert_eq!(done["steps"].as_array().unwrap().len(), 1, "{done}");
    drop(a);
    drop(b);
    dibop_e2e::harness::drop_postgres_database(&url);
}

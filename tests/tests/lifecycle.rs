//! Longer lifecycles across real processes: `dibop dev` as a user runs it,
//! and agent certificates renewed over the tunnel.

use std::time::Duration;

use dibop_e2e::harness::{Agent, Api, ControlPlane, DevStack, Dms, READY, eventually};
use serde_json::{Value, json};

#[tokio::test]
async fn dibop_dev_runs_the_whole_platform_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let DevStack {
        child: mut dev,
        credentials: creds,
        credentials_path,
    } = DevStack::start(&data).await.unwrap();
    for key in [
        "api_url",
        "api_token",
        "tenant_id",
        "agent_group_id",
        "connection_id",
        "orchestration_id",
        "dms_url",
    ] {
        assert!(
            creds[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key} missing: {creds}"
        );
    }
    let api = Api::new(
        creds["api_url"].as_str().unwrap(),
        creds["api_token"].as_str().unwrap(),
    );
    let group = creds["agent_group_id"].as_str().unwrap();
    let dms = creds["dms_url"].as_str().unwrap();

    // The printed first call works: operation listVehicles of the seeded
    // connection, run by the demo agent.
    let connection = creds["connection_id"].as_str().unwrap();
    let (status, result) = api
        .send(
            "POST",
            &format!("/connections/{connection}/operations/listVehicles/invoke"),
            Some(json!({"parameters": {"page_size": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["body"]["items"].as_array().unwrap().len(), 2);
    assert!(
        result["ranOn"].as_str().unwrap().starts_with("agt_"),
        "{result}"
    );

    // A connection made by hand, without a base URL, reaches the simulator
    // wherever --dms-addr put it: the built-in connector points there.
    let (_, catalogue) = api.send("GET", "/catalogue?q=dms-sim", None).await.unwrap();
    let (status, second) = api
        .send(
            "POST",
            "/connections",
            Some(json!({"connector_id": catalogue[0]["id"], "name": "Second DMS", "auth_type": "api_key",
                "credentials": {"api_key": "dms-demo-key"}, "execution_mode": "agent_group",
                "agent_group_id": group, "activate": true})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{second}");
    let (_, result) = api
        .send(
            "POST",
            &format!(
                "/connections/{}/operations/listVehicles/invoke",
                second["id"].as_str().unwrap()
            ),
            Some(json!({})),
        )
        .await
        .unwrap();
    assert_eq!(result["ok"], true, "{result}");

    // The seeded example orchestration runs through the same connection.
    let (_, stock) = api
        .send(
            "POST",
            &format!("/connections/{connection}/operations/listVehicles/invoke"),
            Some(json!({"parameters": {"page_size": 1, "status": "in_stock"}})),
        )
        .await
        .unwrap();
    let vin = stock["body"]["items"][0]["vin"]
        .as_str()
        .unwrap()
        .to_owned();
    let orchestration = creds["orchestration_id"].as_str().unwrap();
    let (status, execution) = api
        .send(
            "POST",
            &format!("/orchestrations/{orchestration}/execute"),
            Some(json!({"parameters": {"vin": vin}, "wait_ms": 30000})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{execution}");
    assert_eq!(execution["status"], "succeeded", "{execution}");
    assert!(
        execution["steps"][0]["output"]["ran_on"]
            .as_str()
            .unwrap()
            .starts_with("agt_"),
        "{execution}"
    );

    // And a raw diagnostic call through the demo agent to the simulator.
    let (status, result) = api
        .call(
            group,
            json!({"method": "GET", "url": format!("{dms}/api/v1/vehicles?page_size=2"), "headers": {"X-API-Key": "dms-demo-key"}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["body"]["items"].as_array().unwrap().len(), 2);
    let agents = api.agents().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["status"], "online");

    // The demo enterprise admin can sign in with the written password.
    let admin = &creds["enterprise_admin"];
    assert_eq!(admin["api_token"], creds["api_token"]);
    let login = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/auth/login",
            creds["api_url"].as_str().unwrap()
        ))
        .json(&json!({"email": admin["email"], "password": admin["password"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);

    // The demo agent may call only the simulator.
    let (_, denied) = api
        .call(
            group,
            json!({"url": format!("{}/healthz", creds["api_url"].as_str().unwrap())}),
        )
        .await
        .unwrap();
    assert_eq!(denied["error"]["class"], "policy_denied");

    // The credentials file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&credentials_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "dev-credentials.json must not be readable by others"
        );
    }

    let pid = dev.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(READY, dev.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "SIGTERM stops dibop dev cleanly: {status:?}"
    );
}

#[tokio::test]
async fn agent_certificates_are_renewed_over_the_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    // Six-second certificates: renewal is due after four.
    let cp = ControlPlane::start_with(
        &dir.path().join("cp"),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        &["--agent-cert-ttl-secs", "6"],
    )
    .await
    .unwrap();
    let api = cp.tenant("acme").await.unwrap();
    let group = api.create_group("site").await.unwrap();
    let dms = Dms::start().await.unwrap();
    let token = api.enrollment_token(&group, None).await.unwrap();
    let allow = vec![dms.addr.to_string()];
    let mut agent = Agent::enroll_and_start(dir.path(), "agent", &token, &allow)
        .await
        .unwrap();
    api.wait_online(&agent.id).await.unwrap();

    let meta = |dir: &std::path::Path| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join("agent.json")).unwrap_or_default())
            .unwrap_or(Value::Null)
    };
    let first = meta(&agent.data_dir)["not_after_unix"].as_i64().unwrap();
    let renewed = eventually("a renewed certificate", Duration::from_secs(30), || async {
        let now = meta(&agent.data_dir)["not_after_unix"].as_i64()?;
        (now > first).then_some(now)
    })
    .await
    .unwrap();
    assert!(renewed > first);

    // Past the first certificate's expiry, a fresh connection uses the renewed one.
    eventually(
        "the first certificate to expire",
        Duration::from_secs(30),
        || async {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs() as i64;
            (now > first + 1).then_some(())
        },
    )
    .await
    .unwrap();
    agent.kill().await;
    let agent = Agent::start(&agent.data_dir, &allow).await.unwrap();
    api.wait_online(&agent.id).await.unwrap();
    let (_, result) = api
        .call(&group, json!({"url": format!("{}/health", dms.url)}))
        .await
        .unwrap();
    assert_eq!(result["ok"], true, "{result}");
    assert!(cp.log_text().contains("certificate renewed"));
}

#[tokio::test]
async fn control_plane_on_postgresql_relays_calls_and_survives_a_restart() {
    let Some(url) = dibop_e2e::harness::fresh_postgres_database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let args = ["--database-url", url.as_str()];
    let mut cp = ControlPlane::start_with(&dir.path().join("cp"), any, any, &args)
        .await
        .unwrap();
    let api = cp.tenant("pg-dealer").await.unwrap();
    let group = api.create_group("site").await.unwrap();
    let dms = Dms::start().await.unwrap();
    let token = api.enrollment_token(&group, None).await.unwrap();
    let agent = Agent::enroll_and_start(dir.path(), "agent", &token, &[dms.addr.to_string()])
        .await
        .unwrap();
    api.wait_online(&agent.id).await.unwrap();
    let call = json!({"url": format!("{}/api/v1/customers?page_size=1", dms.url), "headers": {"X-API-Key": "dms-demo-key"}});
    let (_, result) = api.call(&group, call.clone()).await.unwrap();
    assert_eq!(result["ok"], true, "{result}");

    // Everything the agent needs lives in PostgreSQL (and the CA in the data dir).
    let (http, tunnel, data) = (cp.http_addr, cp.tunnel_addr, cp.data_dir.clone());
    cp.kill().await;
    let cp = ControlPlane::start_with(&data, http, tunnel, &args)
        .await
        .unwrap();
    let api = Api::new(&cp.http, api.token());
    api.wait_online(&agent.id).await.unwrap();
    let (_, result) = api.call(&group, call).await.unwrap();
    assert_eq!(
        result["body"]["items"].as_array().unwrap().len(),
        1,
        "{result}"
    );
    drop(cp);
    drop(agent);
    dibop_e2e::harness::drop_postgres_database(&url);
}

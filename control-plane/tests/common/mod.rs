//! An in-process control plane on loopback for the API tests that talk to
//! real servers on this machine: its cloud agent may call loopback, and its
//! tenant `acme` may publish connectors for itself.
#![allow(dead_code)]

use std::sync::Arc;

use dibop_control_plane::{Core, Settings, bootstrap_tenant, start};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A running control plane and tenant `acme`'s admin token.
pub struct TestCp {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// An `enterprise_admin` API token of `acme`.
    pub admin: String,
    /// The control plane's services.
    pub core: Arc<Core>,
    _dir: tempfile::TempDir,
    _shutdown: tokio_util::sync::DropGuard,
}

/// Starts the control plane and `acme` (with enterprise publishing).
pub async fn start_cp() -> TestCp {
    start_cp_with(|_| {}).await
}

/// The same, with settings adjusted first.
pub async fn start_cp_with(tune: impl FnOnce(&mut Settings)) -> TestCp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(dir.path().join("cp"));
    settings.http_addr = "127.0.0.1:0".parse().unwrap();
    settings.tunnel_addr = "127.0.0.1:0".parse().unwrap();
    // The servers under test run on loopback, which the default (`public`) refuses.
    settings.cloud_agent_allow = vec!["127.0.0.0/8".into()];
    // Expressions run in worker processes, as in `dibop serve`.
    settings.expression_worker = Some(env!("CARGO_BIN_EXE_dibop").into());
    tune(&mut settings);
    let shutdown = CancellationToken::new();
    let server = start(settings, shutdown.clone()).await.unwrap();
    let (tenant, admin) = bootstrap_tenant(&server.core.store, "acme", "cli")
        .await
        .unwrap();
    let mut plan = server.core.store.tenant(&tenant).await.unwrap().unwrap();
    plan.enterprise_publishing = 1;
    server.core.store.update_tenant_plan(&plan).await.unwrap();
    let base = format!("http://{}", server.http_addr);
    let core = server.core.clone();
    tokio::spawn(server.wait());
    TestCp {
        base,
        admin,
        core,
        _dir: dir,
        _shutdown: shutdown.drop_guard(),
    }
}

impl TestCp {
    /// Sends a JSON request as `acme`'s admin; (status, JSON body or Null).
    pub async fn send(
        &self,
        method: &'static str,
        path: impl Into<String>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let path = path.into();
        let mut req = reqwest::Client::new()
            .request(
                method.parse().unwrap(),
                format!("{}/api/v1{path}", self.base),
            )
            .bearer_auth(&self.admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates an orchestration from a YAML definition; its id.
    pub async fn create_orchestration(&self, yaml: &str) -> String {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/orchestrations", self.base))
            .bearer_auth(&self.admin)
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    /// Executes an orchestration with `parameters`, waiting up to 30 s for it
    /// to end; the execution.
    pub async fn run(&self, id: &str, parameters: Value) -> Value {
        let (status, e) = self
            .send(
                "POST",
                format!("/orchestrations/{id}/execute"),
                Some(serde_json::json!({"parameters": parameters, "wait_ms": 30000})),
            )
            .await;
        assert_eq!(status, 201, "{e}");
        e
    }

    /// Creates a connector from `definition` and publishes it for `acme`; its id.
    pub async fn publish(&self, definition: Value) -> String {
        let (status, created) = self.send("POST", "/connectors", Some(definition)).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let (status, published) = self
            .send(
                "POST",
                &format!("/connectors/{id}/publish"),
                Some(serde_json::json!({"scope": "enterprise"})),
            )
            .await;
        assert_eq!(status, 200, "{published}");
        id
    }
}

/// Starts a DMS simulator and connects `acme` to it as `Demo DMS` (the
/// built-in `dms-sim` connector, API key, active): (simulator URL, connection id).
pub async fn demo_dms(cp: &TestCp) -> (String, String) {
    let (sim, _) = dibop_dms_sim::spawn("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let sim = format!("http://{sim}");
    let (_, catalogue) = cp.send("GET", "/catalogue?q=dms-sim", None).await;
    let (status, c) = cp
        .send(
            "POST",
            "/connections",
            Some(serde_json::json!({"connector_id": catalogue[0]["id"], "name": "Demo DMS", "auth_type": "api_key",
                "credentials": {"api_key": "dms-demo-key"}, "base_url": sim, "activate": true})),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    (sim, c["id"].as_str().unwrap().to_owned())
}

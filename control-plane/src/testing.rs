//! The one in-process control plane of the tests (feature `test-util`):
//! real listeners on loopback, a SQLite file in a temporary directory, tenant
//! `acme` and its admin's token, and a JSON client for the API.
//!
//! ```no_run
//! # async fn example() {
//! use dibop_control_plane::testing::{TestCp, code};
//! let cp = TestCp::start().await;
//! let (status, body) = cp.get("/connections").await;
//! assert_eq!(status, 200, "{body}");
//! let (status, body) = cp.get("/connections/nope").await;
//! assert_eq!((status, code(&body)), (404, "not_found"));
//! # }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{Core, Settings, bootstrap_platform_admin, bootstrap_tenant, start};

/// A running control plane and tenant `acme`'s admin token.
#[derive(Debug)]
pub struct TestCp {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// An `enterprise_admin` API token of `acme`.
    pub admin: String,
    /// `acme`'s id.
    pub tenant_id: String,
    /// The control plane's services.
    pub core: Arc<Core>,
    /// The data directory (CA, database, master key).
    pub data_dir: PathBuf,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    _shutdown: tokio_util::sync::DropGuard,
}

/// How a [`TestCp`] starts.
#[derive(Debug)]
pub struct Builder {
    dir: tempfile::TempDir,
    settings: Settings,
    enterprise_publishing: bool,
}

impl Builder {
    /// Adjusts the settings before the start.
    pub fn tune(mut self, tune: impl FnOnce(&mut Settings)) -> Self {
        tune(&mut self.settings);
        self
    }

    /// Whether `acme` may publish connectors for itself (default: yes).
    pub fn enterprise_publishing(mut self, on: bool) -> Self {
        self.enterprise_publishing = on;
        self
    }

    /// Starts the control plane and bootstraps `acme`.
    pub async fn start(self) -> TestCp {
        let shutdown = CancellationToken::new();
        let data_dir = self.settings.data_dir.clone();
        let server = start(self.settings, shutdown.clone()).await.unwrap();
        let (tenant_id, admin) = bootstrap_tenant(&server.core.store, "acme", "cli")
            .await
            .unwrap();
        if self.enterprise_publishing {
            let mut plan = server.core.store.tenant(&tenant_id).await.unwrap().unwrap();
            plan.enterprise_publishing = 1;
            server.core.store.update_tenant_plan(&plan).await.unwrap();
        }
        let base = format!("http://{}", server.http_addr);
        let core = server.core.clone();
        tokio::spawn(server.wait());
        TestCp {
            base,
            admin,
            tenant_id,
            core,
            data_dir,
            client: reqwest::Client::new(),
            _dir: self.dir,
            _shutdown: shutdown.drop_guard(),
        }
    }
}

/// The `dibop` binary beside the running test (`target/debug/dibop`), whose
/// `expr-worker` evaluates expressions as in `dibop serve`; `None` if not built.
fn dibop_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let dir = if dir.ends_with("deps") {
        dir.parent()?
    } else {
        dir
    };
    let bin = dir.join(format!("dibop{}", std::env::consts::EXE_SUFFIX));
    bin.exists().then_some(bin)
}

impl TestCp {
    /// A control plane on loopback whose cloud agent may call loopback (the
    /// servers under test run there), with expressions in worker processes.
    pub fn builder() -> Builder {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::new(dir.path().join("cp"));
        settings.http_addr = "127.0.0.1:0".parse().unwrap();
        settings.tunnel_addr = "127.0.0.1:0".parse().unwrap();
        settings.cloud_agent_allow = vec!["127.0.0.0/8".into()];
        settings.expression_worker = dibop_binary();
        Builder {
            dir,
            settings,
            enterprise_publishing: true,
        }
    }

    /// [`TestCp::builder`] started as it is.
    pub async fn start() -> TestCp {
        TestCp::builder().start().await
    }

    /// [`TestCp::builder`] with settings adjusted.
    pub async fn start_with(tune: impl FnOnce(&mut Settings)) -> TestCp {
        TestCp::builder().tune(tune).start().await
    }

    /// Sends a JSON request as `acme`'s admin: (status, JSON body or Null).
    pub async fn send(
        &self,
        method: &str,
        path: impl AsRef<str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.send_as(&self.admin, method, path, body).await
    }

    /// Sends a JSON request with `token`.
    pub async fn send_as(
        &self,
        token: &str,
        method: &str,
        path: impl AsRef<str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let body = body.as_deref().map(|b| ("application/json", b));
        self.send_text(token, method, path, body).await
    }

    /// `GET path` as `acme`'s admin.
    pub async fn get(&self, path: impl AsRef<str>) -> (u16, Value) {
        self.send("GET", path, None).await
    }

    /// `POST path` with a JSON body as `acme`'s admin.
    pub async fn post(&self, path: impl AsRef<str>, body: Value) -> (u16, Value) {
        self.send("POST", path, Some(body)).await
    }

    /// `PUT path` with a JSON body as `acme`'s admin.
    pub async fn put(&self, path: impl AsRef<str>, body: Value) -> (u16, Value) {
        self.send("PUT", path, Some(body)).await
    }

    /// `PATCH path` with a JSON body as `acme`'s admin.
    pub async fn patch(&self, path: impl AsRef<str>, body: Value) -> (u16, Value) {
        self.send("PATCH", path, Some(body)).await
    }

    /// `DELETE path` as `acme`'s admin.
    pub async fn delete(&self, path: impl AsRef<str>) -> (u16, Value) {
        self.send("DELETE", path, None).await
    }

    /// `GET path` with `token`.
    pub async fn get_as(&self, token: &str, path: impl AsRef<str>) -> (u16, Value) {
        self.send_as(token, "GET", path, None).await
    }

    /// `POST path` with a JSON body and `token`.
    pub async fn post_as(&self, token: &str, path: impl AsRef<str>, body: Value) -> (u16, Value) {
        self.send_as(token, "POST", path, Some(body)).await
    }

    /// `PUT path` with a JSON body and `token`.
    pub async fn put_as(&self, token: &str, path: impl AsRef<str>, body: Value) -> (u16, Value) {
        self.send_as(token, "PUT", path, Some(body)).await
    }

    /// `PATCH path` with a JSON body and `token`.
    pub async fn patch_as(&self, token: &str, path: impl AsRef<str>, body: Value) -> (u16, Value) {
        self.send_as(token, "PATCH", path, Some(body)).await
    }

    /// `DELETE path` with `token`.
    pub async fn delete_as(&self, token: &str, path: impl AsRef<str>) -> (u16, Value) {
        self.send_as(token, "DELETE", path, None).await
    }

    /// Sends a body of any content type (`application/yaml`, malformed
    /// JSON, ...) with `token`.
    pub async fn send_text(
        &self,
        token: &str,
        method: &str,
        path: impl AsRef<str>,
        body: Option<(&str, &str)>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(
                method.parse().unwrap(),
                format!("{}/api/v1{}", self.base, path.as_ref()),
            )
            .bearer_auth(token);
        if let Some((content_type, body)) = body {
            req = req
                .header("content-type", content_type)
                .body(body.to_owned());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Another tenant (made if missing) and a new admin token of it: (id, token).
    pub async fn tenant(&self, name: &str) -> (String, String) {
        bootstrap_tenant(&self.core.store, name, "cli")
            .await
            .unwrap()
    }

    /// A platform admin's API token.
    pub async fn platform_admin(&self) -> String {
        bootstrap_platform_admin(&self.core.store, "ops@dibop.example", None, "cli")
            .await
            .unwrap()
            .2
    }

    /// Creates an orchestration from a YAML definition; its id.
    pub async fn create_orchestration(&self, yaml: &str) -> String {
        let body = Some(("application/yaml", yaml));
        let (status, v) = self
            .send_text(&self.admin, "POST", "/orchestrations", body)
            .await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    /// Executes an orchestration with `parameters`, waiting up to 30 s for
    /// it to end; the execution.
    pub async fn run(&self, id: &str, parameters: Value) -> Value {
        let (status, e) = self
            .post(
                &format!("/orchestrations/{id}/execute"),
                json!({"parameters": parameters, "wait_ms": 30000}),
            )
            .await;
        assert_eq!(status, 201, "{e}");
        e
    }

    /// Creates a connector from `definition` and publishes it for `acme`; its id.
    pub async fn publish(&self, definition: Value) -> String {
        let (status, created) = self.post("/connectors", definition).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let (status, published) = self
            .post(
                &format!("/connectors/{id}/publish"),
                json!({"scope": "enterprise"}),
            )
            .await;
        assert_eq!(status, 200, "{published}");
        id
    }

    /// The id of the built-in `dms-sim` connector.
    pub async fn dms_sim_connector(&self) -> String {
        let (_, catalogue) = self.get("/catalogue?q=dms-sim").await;
        catalogue[0]["id"].as_str().unwrap().to_owned()
    }

    /// Starts a DMS simulator and connects `acme` to it as `Demo DMS` (the
    /// built-in `dms-sim` connector, API key, active): (simulator URL,
    /// connection id).
    pub async fn demo_dms(&self) -> (String, String) {
        let sim = spawn_dms_sim().await;
        let (status, c) = self
            .post(
                "/connections",
                json!({"connector_id": self.dms_sim_connector().await, "name": "Demo DMS",
                    "auth_type": "api_key", "credentials": {"api_key": "dms-demo-key"},
                    "base_url": sim, "activate": true}),
            )
            .await;
        assert_eq!(status, 201, "{c}");
        (sim, c["id"].as_str().unwrap().to_owned())
    }
}

/// A DMS simulator on loopback with its default settings; its URL.
pub async fn spawn_dms_sim() -> String {
    let (sim, _) = dibop_dms_sim::spawn("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    format!("http://{sim}")
}

/// The `error.code` of an API answer (empty when it is not an error).
pub fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or_default()
}

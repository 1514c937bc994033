//! Starts the real binaries (`dibop`, `dibop-agent`, `dms-sim`) as separate
//! processes on loopback with port 0 and temporary directories, and drives
//! them through their public interfaces. Readiness is polled with deadlines,
//! never slept for.
//!
//! The binaries are looked up next to the running test executable
//! (`target/<profile>/`); `scripts/test` builds them first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// How long anything may take to become ready before a test fails.
pub const READY: Duration = Duration::from_secs(60);

/// Path of a workspace binary of the same profile as the running executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as scripts/test does)",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, failing after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn first_line(child: &mut Child, prefix: &str) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(READY, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix(prefix) {
                return Ok::<_, std::io::Error>(Some(rest.to_owned()));
            }
        }
        Ok(None)
    })
    .await;
    match found {
        Ok(Ok(Some(l))) => {
            // Keep draining stdout so the child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Ok(l)
        }
        _ => bail!("process did not print `{prefix}…`"),
    }
}

fn log_file(path: &Path) -> anyhow::Result<Stdio> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(Stdio::from(file))
}

/// A child process of a test and its log file: the controls shared by the
/// control plane and agent handles (which deref to it).
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    /// Where its stderr (and for agents stdout) goes.
    pub log: PathBuf,
}

impl Process {
    /// SIGKILLs the process.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        Ok(tokio::time::timeout(Duration::from_secs(30), child.wait()).await??)
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(
        &mut self,
        within: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.child.as_mut().context("not running")?;
        let status = tokio::time::timeout(within, child.wait())
            .await
            .context("process did not exit")??;
        self.child = None;
        Ok(status)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

macro_rules! deref_process {
    ($t:ty) => {
        impl std::ops::Deref for $t {
            type Target = Process;
            fn deref(&self) -> &Process {
                &self.process
            }
        }
        impl std::ops::DerefMut for $t {
            fn deref_mut(&mut self) -> &mut Process {
                &mut self.process
            }
        }
    };
}

deref_process!(ControlPlane);
deref_process!(Agent);

/// The environment variable naming a PostgreSQL server for tests
/// (`postgres://USER@HOST:PORT/DB`, a user allowed to create databases).
pub const POSTGRES_ENV: &str = "DIBOP_TEST_POSTGRES_URL";

/// Creates a fresh database on the test PostgreSQL server with `psql` and
/// returns its URL, or `None` (saying so) when no server is configured.
pub fn fresh_postgres_database() -> Option<String> {
    let admin = match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!("{POSTGRES_ENV} is not set: SKIPPING this PostgreSQL end-to-end test");
            return None;
        }
    };
    let name = format!("dibop_e2e_{}_{}", std::process::id(), fastrand::u32(..));
    let status = std::process::Command::new("psql")
        .arg(&admin)
        .args(["-q", "-c", &format!("CREATE DATABASE {name}")])
        .status()
        .expect("psql runs (install postgresql-client)");
    assert!(status.success(), "cannot create database {name} on {admin}");
    let base = admin.split('?').next().unwrap_or(&admin);
    Some(format!(
        "{}/{name}",
        &base[..base.rfind('/').unwrap_or(base.len())]
    ))
}

/// Drops a database made by [`fresh_postgres_database`] (best effort).
pub fn drop_postgres_database(url: &str) {
    let (Ok(admin), Some(name)) = (std::env::var(POSTGRES_ENV), url.rsplit('/').next()) else {
        return;
    };
    let _ = std::process::Command::new("psql")
        .arg(&admin)
        .args([
            "-q",
            "-c",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .status();
}

/// A running `dibop serve`.
#[derive(Debug)]
pub struct ControlPlane {
    process: Process,
    /// `http://127.0.0.1:port`.
    pub http: String,
    /// The HTTP listener.
    pub http_addr: SocketAddr,
    /// The UDP tunnel listener.
    pub tunnel_addr: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// `--database-url`, when not the SQLite default.
    pub database_url: Option<String>,
}

impl ControlPlane {
    /// Starts a control plane in `data_dir` on fresh ports.
    pub async fn start(data_dir: &Path) -> anyhow::Result<ControlPlane> {
        Self::start_on(data_dir, "127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?).await
    }

    /// Starts a control plane on the given addresses.
    pub async fn start_on(
        data_dir: &Path,
        http: SocketAddr,
        tunnel: SocketAddr,
    ) -> anyhow::Result<ControlPlane> {
        Self::start_with(data_dir, http, tunnel, &[]).await
    }

    /// Starts a control plane on the given addresses with extra `dibop serve` flags.
    pub async fn start_with(
        data_dir: &Path,
        http: SocketAddr,
        tunnel: SocketAddr,
        extra: &[&str],
    ) -> anyhow::Result<ControlPlane> {
        std::fs::create_dir_all(data_dir)?;
        let log = data_dir.join("dibop.log");
        let mut child = Command::new(bin("dibop"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args([
                "--http-addr",
                &http.to_string(),
                "--tunnel-addr",
                &tunnel.to_string(),
            ])
            .args(if extra.contains(&"--agent-idle-timeout-ms") {
                &[][..]
            } else {
                &["--agent-idle-timeout-ms", "3000"][..]
            })
            .args(extra)
            .env(
                "RUST_LOG",
                "info,dibop_control_plane=debug,dibop_relay_agent=debug,dibop_runtime=debug",
            )
            .stdout(Stdio::piped())
            .stderr(log_file(&log)?)
            .kill_on_drop(true)
            .spawn()?;
        let line = first_line(&mut child, "listening ")
            .await
            .with_context(|| format!("dibop serve failed; see {}", log.display()))?;
        let mut http_addr = None;
        let mut tunnel_addr = None;
        for part in line.split_whitespace() {
            if let Some(v) = part.strip_prefix("http=") {
                http_addr = Some(v.parse()?);
            }
            if let Some(v) = part.strip_prefix("tunnel=") {
                tunnel_addr = Some(v.parse()?);
            }
        }
        let http_addr: SocketAddr = http_addr.context("no http address")?;
        Ok(ControlPlane {
            process: Process {
                child: Some(child),
                log,
            },
            http: format!("http://{http_addr}"),
            http_addr,
            tunnel_addr: tunnel_addr.context("no tunnel address")?,
            data_dir: data_dir.to_owned(),
            database_url: extra
                .windows(2)
                .find(|w| w[0] == "--database-url")
                .map(|w| w[1].to_owned()),
        })
    }

    /// Creates a tenant and returns an API client for its admin token.
    pub async fn tenant(&self, name: &str) -> anyhow::Result<Api> {
        let mut admin = Command::new(bin("dibop"));
        admin.args(["admin", "--data-dir"]).arg(&self.data_dir);
        if let Some(url) = &self.database_url {
            admin.args(["--database-url", url]);
        }
        let out = admin
            .args(["create-tenant", "--name", name])
            // Tests and benchmarks make many calls quickly: no quota in the way.
            .args([
                "--requests-per-minute",
                "10000000",
                "--calls-per-month",
                "1000000000",
                "--enterprise-publishing",
            ])
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "create-tenant failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(Api::new(
            &self.http,
            v["api_token"].as_str().context("no token")?,
        ))
    }
}

/// An API client with a bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    /// A client for `base` (`http://host:port`).
    pub fn new(base: &str, token: &str) -> Api {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Api {
            base: base.to_owned(),
            token: token.to_owned(),
            client,
        }
    }

    /// `http://host:port/api/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/api/v1", self.base)
    }

    /// The token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Sends a request; returns status and JSON body (Null when empty).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes())?,
                format!("{}/api/v1{path}", self.base),
            )
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)?
        };
        Ok((status, value))
    }

    /// `POST /orchestrations` with a YAML definition → orchestration id.
    pub async fn create_orchestration(&self, yaml: &str) -> anyhow::Result<String> {
        let resp = self
            .client
            .post(format!("{}/api/v1/orchestrations", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await?;
        if status != 201 {
            bail!("creating the orchestration answered {status}: {body}");
        }
        Ok(body["id"]
            .as_str()
            .context("no orchestration id")?
            .to_owned())
    }

    /// `POST /agent-groups` → group id.
    pub async fn create_group(&self, name: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .send("POST", "/agent-groups", Some(json!({"name": name})))
            .await?;
        if status != 201 {
            bail!("create group: {status} {body}");
        }
        Ok(body["id"].as_str().context("no id")?.to_owned())
    }

    /// `POST /agent-groups/{id}/enrollment-tokens` → token text.
    pub async fn enrollment_token(
        &self,
        group: &str,
        ttl_secs: Option<u64>,
    ) -> anyhow::Result<String> {
        let body = ttl_secs.map(|t| json!({"ttl_secs": t}));
        let (status, body) = self
            .send(
                "POST",
                &format!("/agent-groups/{group}/enrollment-tokens"),
                body,
            )
            .await?;
        if status != 201 {
            bail!("enrollment token: {status} {body}");
        }
        Ok(body["token"].as_str().context("no token")?.to_owned())
    }

    /// `GET /agents`.
    pub async fn agents(&self) -> anyhow::Result<Vec<Value>> {
        let (status, body) = self.send("GET", "/agents", None).await?;
        if status != 200 {
            bail!("agents: {status} {body}");
        }
        Ok(body.as_array().cloned().unwrap_or_default())
    }

    /// The status of one agent.
    pub async fn agent_status(&self, id: &str) -> anyhow::Result<String> {
        let agents = self.agents().await?;
        Ok(agents
            .iter()
            .find(|a| a["id"] == id)
            .and_then(|a| a["status"].as_str())
            .unwrap_or("missing")
            .to_owned())
    }

    /// Waits until the agent is online.
    pub async fn wait_online(&self, id: &str) -> anyhow::Result<()> {
        eventually(&format!("agent {id} online"), READY, || async {
            (self.agent_status(id).await.ok()? == "online").then_some(())
        })
        .await
    }

    /// `POST /agent-groups/{id}/calls`.
    pub async fn call(&self, group: &str, call: Value) -> anyhow::Result<(u16, Value)> {
        self.send("POST", &format!("/agent-groups/{group}/calls"), Some(call))
            .await
    }
}

/// A running `dibop-agent run`.
#[derive(Debug)]
pub struct Agent {
    process: Process,
    /// Identity directory.
    pub data_dir: PathBuf,
    /// Config file.
    pub config: PathBuf,
    /// The agent's id, from its `agent.json`.
    pub id: String,
}

/// Runs `dibop-agent enroll`; returns (success, stdout + stderr).
pub async fn enroll(token: &str, data_dir: &Path) -> anyhow::Result<(bool, String)> {
    let out = Command::new(bin("dibop-agent"))
        .args(["enroll", token, "--data-dir"])
        .arg(data_dir)
        .output()
        .await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

impl Agent {
    /// Enrolls into a fresh directory under `root` and starts the agent.
    pub async fn enroll_and_start(
        root: &Path,
        name: &str,
        token: &str,
        allow: &[String],
    ) -> anyhow::Result<Agent> {
        let dir = root.join(name);
        let (ok, text) = enroll(token, &dir).await?;
        if !ok {
            bail!("enroll failed: {text}");
        }
        Self::start(&dir, allow).await
    }

    /// Starts an enrolled agent with an allow-list.
    pub async fn start(dir: &Path, allow: &[String]) -> anyhow::Result<Agent> {
        Self::start_with(dir, allow, "").await
    }

    /// Starts an enrolled agent with an allow-list and more `[tunnel]`
    /// settings (TOML lines, e.g. `transport = "wss"`).
    pub async fn start_with(dir: &Path, allow: &[String], tunnel: &str) -> anyhow::Result<Agent> {
        let config = dir.join("agent.toml");
        let allow_toml: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "[policy]\nallow = [{}]\n[tunnel]\nkeep_alive_secs = 1\nidle_timeout_secs = 3\nreconnect_initial_ms = 100\nreconnect_max_ms = 1000\n{tunnel}\n",
                allow_toml.join(", ")
            ),
        )?;
        let meta: Value = serde_json::from_slice(&std::fs::read(dir.join("agent.json"))?)?;
        let log = dir.join("agent.log");
        let child = Command::new(bin("dibop-agent"))
            .args(["run", "--data-dir"])
            .arg(dir)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Agent {
            process: Process {
                child: Some(child),
                log,
            },
            data_dir: dir.to_owned(),
            config,
            id: meta["agent_id"].as_str().context("no agent id")?.to_owned(),
        })
    }
}

/// Resident memory of a process in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A running `dms-sim`.
#[derive(Debug)]
pub struct Dms {
    _child: Child,
    /// `http://127.0.0.1:port`.
    pub url: String,
    /// Its address, for allow-lists.
    pub addr: SocketAddr,
}

impl Dms {
    /// Starts the simulator on a fresh port.
    pub async fn start() -> anyhow::Result<Dms> {
        let mut child = Command::new(bin("dms-sim"))
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let url = first_line(&mut child, "listening ").await?;
        let addr = url.trim_start_matches("http://").parse()?;
        Ok(Dms {
            _child: child,
            url,
            addr,
        })
    }
}

/// `dibop dev` on free loopback ports (control plane, relay agent and DMS
/// simulator in one process tree), ready once it wrote its credentials.
#[derive(Debug)]
pub struct DevStack {
    /// The `dibop dev` process (killed on drop).
    pub child: tokio::process::Child,
    /// What it wrote to `dev-credentials.json`.
    pub credentials: Value,
    /// Where that file is.
    pub credentials_path: PathBuf,
}

impl DevStack {
    /// Starts `dibop dev` with its data in `data_dir`.
    pub async fn start(data_dir: &Path) -> anyhow::Result<DevStack> {
        let child = tokio::process::Command::new(bin("dibop"))
            .args(["dev", "--data-dir"])
            .arg(data_dir)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--tunnel-addr",
                "127.0.0.1:0",
                "--dms-addr",
                "127.0.0.1:0",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let credentials_path = data_dir.join("dev-credentials.json");
        let credentials = eventually("dev-credentials.json", READY, || async {
            serde_json::from_slice(&std::fs::read(&credentials_path).ok()?).ok()
        })
        .await?;
        Ok(DevStack {
            child,
            credentials,
            credentials_path,
        })
    }
}

/// Starts the OpenID Connect provider of the tests (`tests/oidc/server.mjs`
/// with the npm `oidc-provider` under `node_modules`), with a client for the
/// console's single sign-on that may come back to `redirect_uris`; its
/// issuer URL and the process (killed on drop).
pub async fn oidc_provider(
    node_modules: &Path,
    redirect_uris: &[String],
) -> anyhow::Result<(String, tokio::process::Child)> {
    use tokio::io::AsyncBufReadExt as _;
    let lib = node_modules.join("oidc-provider/lib/index.js");
    if !lib.exists() {
        bail!("{} is missing: run scripts/test", lib.display());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc/server.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg(script)
        .arg(lib)
        .env("OIDC_REDIRECT_URIS", redirect_uris.join(","))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("no stdout")?).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(url) = line.strip_prefix("listening ") {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok((url.to_owned(), child));
        }
    }
    bail!("the OpenID Connect provider did not start")
}

/// A real HTTP proxy (the npm package `proxy`, installed by scripts/test
/// under target/test-deps) demanding Basic credentials.
#[derive(Debug)]
pub struct HttpProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its port.
    pub port: u16,
    /// One `proxied <method> <url>` line per request it let through.
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _child: Child,
}

/// Starts an [`HttpProxy`] that accepts `user` and `password`.
pub async fn http_proxy(user: &str, password: &str) -> anyhow::Result<HttpProxy> {
    let deps = std::env::var("DIBOP_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-deps"));
    let lib = deps.join("node_modules/proxy/dist/proxy.js");
    if !lib.exists() {
        bail!(
            "{} is missing: run scripts/test (it installs the npm package proxy)",
            lib.display()
        );
    }
    let mut child = Command::new("node")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proxy/server.mjs"))
        .arg(lib)
        .args([user, password])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("node must be installed (scripts/test installs it)")?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    while let Some(line) = lines.next_line().await? {
        if let Some(url) = line.strip_prefix("listening ") {
            let log = seen.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
            let port = url.rsplit(':').next().unwrap_or_default().parse()?;
            return Ok(HttpProxy {
                url: url.to_owned(),
                port,
                seen,
                _child: child,
            });
        }
    }
    bail!("the proxy did not start")
}

/// Forwards TCP connections from a fresh loopback port to `to`; nothing
/// answers UDP on that port. To an agent pointed at it, QUIC is blocked.
pub async fn tcp_only_path(to: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    forward_tcp(listener, to);
    Ok(addr)
}

/// Forwards what `listener` accepts to `to`, over TCP only.
pub fn forward_tcp(listener: tokio::net::TcpListener, to: SocketAddr) {
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

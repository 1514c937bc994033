//! The control plane as a running service: its settings, the shared
//! services every layer uses ([`Core`]), start-up (store, CA, vault,
//! listeners) and the supervised background tasks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agents::{ca, dispatch, tunnel};
use crate::catalogue::{builtin, publishing};
use crate::connections::{calllog, execute, guard};
use crate::expr::{self, sandbox};
use crate::identity::{audit, tokens, users};
use crate::orchestration::{engine, scheduler};

use crate::support::{cache, ids, metrics};
use crate::{http, quotas, store, vault};

/// What the control plane runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Holds the CA, the SQLite database unless `database_url` says
    /// otherwise, and (for `dev`) the demo agent.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; default: `DATA_DIR/dibop.db`.
    pub database_url: Option<String>,
    /// HTTP API listener.
    pub http_addr: SocketAddr,
    /// QUIC tunnel listener (UDP).
    pub tunnel_addr: SocketAddr,
    /// `host:port` agents dial, written into enrollment tokens. Default: the
    /// bound tunnel address.
    pub public_tunnel_addr: Option<String>,
    /// An agent silent this long is dropped; heartbeats come every third of it.
    pub agent_idle_timeout: Duration,
    /// Lifetime of agents' client certificates (renewed at two thirds).
    pub agent_cert_ttl: Duration,
    /// Allow-list of the built-in cloud agent (`public`: routable addresses only).
    pub cloud_agent_allow: Vec<String>,
    /// How often active connections are health-checked.
    pub health_check_interval: Duration,
    /// How long an execution's call waits for an agent of its group to come
    /// online (the step shows `waiting` meanwhile) before it fails
    /// `agent_unavailable`.
    pub agent_wait: Duration,
    /// After a start, how long API calls to a group with no agent online
    /// wait for one (agents reconnect after a control-plane restart).
    pub agent_grace: Duration,
    /// Built-in connectors moved to where their systems run: (slug, base URL).
    pub builtin_base_urls: Vec<(String, String)>,
    /// Whether schedule triggers fire (off only in tests that drive them).
    pub run_scheduler: bool,
    /// The `dibop` executable whose `expr-worker` subcommand evaluates
    /// expressions in sandboxed worker processes. Default: this executable
    /// when it is `dibop`; `None` evaluates on threads of this process
    /// (embedding and unit tests only: a runaway expression can then abort it).
    pub expression_worker: Option<PathBuf>,
    /// How often tenants' stored bytes are measured (and storage limits
    /// re-checked); retention runs hourly.
    pub storage_interval: Duration,
}

impl Settings {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf) -> Settings {
        Settings {
            data_dir,
            database_url: None,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            // Agents dial in from other machines.
            tunnel_addr: SocketAddr::from(([0, 0, 0, 0], 4433)),
            public_tunnel_addr: None,
            agent_idle_timeout: Duration::from_secs(15),
            agent_cert_ttl: Duration::from_secs(30 * 24 * 3600),
            cloud_agent_allow: vec!["public".into()],
            health_check_interval: Duration::from_secs(60),
            agent_wait: Duration::from_secs(600),
            agent_grace: Duration::from_secs(30),
            builtin_base_urls: Vec::new(),
            run_scheduler: true,
            storage_interval: Duration::from_secs(60),
            expression_worker: sandbox::default_program(),
        }
    }
}

/// Validated runtime settings plus the shared services.
#[derive(Debug)]
pub struct Core {
    /// The database.
    pub store: store::Store,
    /// The CA.
    pub ca: ca::Ca,
    /// Online agents and dispatch.
    pub registry: dispatch::Registry,
    /// Cached API token lookups.
    pub tokens: tokens::TokenCache,
    /// Tenant plans, request rates, monthly usage.
    pub quotas: quotas::Quotas,
    /// Tenants' secrets.
    pub vault: vault::Vault,
    /// Counters for `/metrics`.
    pub metrics: metrics::Metrics,
    /// Connectors' circuit breakers and rate limits, per connection.
    pub guards: guard::Guards,
    /// The built-in cloud agent: the relay agent's runtime, in process.
    pub cloud: dibop_runtime::Runtime,
    /// OpenID Connect token endpoints by discovery URL.
    pub discovery: execute::DiscoveryCache,
    /// The API-call log's write buffer.
    pub calls: calllog::CallLog,
    /// The expression pool (jq).
    pub expressions: expr::Evaluator,
    /// The orchestration engine's queue.
    pub engine: engine::Engine,
    /// Opened connections (row, definition, credentials), for a few seconds.
    pub connections: cache::TtlCache<Arc<execute::Resolved>>,
    /// Per tenant, the keys of personal data in its payloads (see [`crate::cdm::pii`]).
    pub pii_keys: cache::TtlCache<Arc<std::collections::BTreeSet<String>>>,
    /// Settings, with `public_tunnel_addr` resolved.
    pub settings: ResolvedSettings,
}

/// Settings after binding.
#[derive(Debug, Clone)]
pub struct ResolvedSettings {
    /// Address written into enrollment tokens.
    pub public_tunnel_addr: String,
    /// See [`Settings::agent_idle_timeout`].
    pub agent_idle_timeout: Duration,
    /// See [`Settings::agent_cert_ttl`].
    pub agent_cert_ttl: Duration,
    /// See [`Settings::health_check_interval`].
    pub health_check_interval: Duration,
    /// See [`Settings::storage_interval`].
    pub storage_interval: Duration,
    /// See [`Settings::agent_wait`].
    pub agent_wait: Duration,
    /// See [`Settings::agent_grace`].
    pub agent_grace: Duration,
}

/// Binds the tunnel address twice: UDP for QUIC, and TCP on the same port
/// for the TCP transport (agents that cannot use UDP dial the same port).
/// With port 0 the system picks a UDP port whose TCP twin may be in use
/// already: another pick is tried then.
async fn bind_tunnel(
    core: &Core,
    addr: SocketAddr,
) -> anyhow::Result<(quinn::Endpoint, tokio::net::TcpListener)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let endpoint = tunnel::endpoint(core, addr)
            .with_context(|| format!("cannot listen for tunnels on UDP {addr}"))?;
        let bound = endpoint.local_addr()?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(listener) => return Ok((endpoint, listener)),
            Err(e) if addr.port() == 0 && attempt < 50 => {
                tracing::debug!(%bound, "the TCP twin of an ephemeral tunnel port is taken ({e}); picking another");
                endpoint.close(0u32.into(), b"");
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot listen for tunnels on TCP {bound}"));
            }
        }
    }
}

/// A running control plane.
#[derive(Debug)]
pub struct Server {
    /// Bound HTTP address.
    pub http_addr: SocketAddr,
    /// Bound tunnel address (QUIC over UDP, and the TCP transport on the same port).
    pub tunnel_addr: SocketAddr,
    /// Shared services.
    pub core: Arc<Core>,
    tasks: JoinSet<()>,
}

impl Server {
    /// Waits for the server's tasks to end (after shutdown).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
        self.core.store.close().await;
    }
}

/// Opens the store and CA, binds both listeners and starts serving until
/// `shutdown` is cancelled.
pub async fn start(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Server> {
    dibop_runtime::install_crypto_provider();
    dibop_runtime::support::create_private_dir(&settings.data_dir)
        .with_context(|| format!("cannot use data directory {}", settings.data_dir.display()))?;
    let store = open_store(&settings.data_dir, settings.database_url.as_deref()).await?;
    let ca = ca::Ca::load_or_create(&settings.data_dir)?;
    let node = node_id(&settings.data_dir)?;
    let vault = vault::Vault::new(vault::default_provider(&settings.data_dir)?);
    vault.verify(&store).await?;
    builtin::load(&store, &settings.builtin_base_urls)
        .await
        .context("cannot load the built-in connector catalogue")?;
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen for HTTP on {} (is another dibop running?)",
                settings.http_addr
            )
        })?;
    let http_addr = listener.local_addr()?;
    let mut core = Core {
        store,
        ca,
        registry: dispatch::Registry::default(),
        tokens: tokens::TokenCache::default(),
        quotas: quotas::Quotas::for_node(node),
        vault,
        metrics: metrics::Metrics::default(),
        cloud: cloud_agent(&settings.cloud_agent_allow)?,
        guards: guard::Guards::default(),
        discovery: execute::discovery_cache(),
        calls: calllog::CallLog::default(),
        expressions: match &settings.expression_worker {
            Some(program) => expr::Evaluator::in_workers(program.clone()),
            None => expr::Evaluator::default(),
        },
        engine: engine::Engine::default(),
        connections: cache::TtlCache::new(Duration::from_secs(5), 10_000),
        pii_keys: cache::TtlCache::new(Duration::from_secs(30), 10_000),
        settings: ResolvedSettings {
            public_tunnel_addr: String::new(),
            agent_idle_timeout: settings.agent_idle_timeout,
            agent_cert_ttl: settings.agent_cert_ttl,
            health_check_interval: settings.health_check_interval,
            storage_interval: settings.storage_interval,
            agent_wait: settings.agent_wait,
            agent_grace: settings.agent_grace,
        },
    };
    let (endpoint, tcp_tunnel) = bind_tunnel(&core, settings.tunnel_addr).await?;
    let tunnel_addr = endpoint.local_addr()?;
    core.settings.public_tunnel_addr = settings
        .public_tunnel_addr
        .clone()
        .unwrap_or_else(|| tunnel_addr.to_string());
    let core = Arc::new(core);

    let mut tasks = JoinSet::new();
    tasks.spawn(tunnel::serve(core.clone(), endpoint, shutdown.clone()));
    tasks.spawn(tunnel::serve_tcp(
        core.clone(),
        tcp_tunnel,
        shutdown.clone(),
    ));
    tasks.spawn(quotas::run_sharing(core.clone(), shutdown.clone()));
    tasks.spawn(guard::run_sharing(core.clone(), shutdown.clone()));
    tasks.spawn(quotas::run_storage(core.clone(), shutdown.clone()));
    tasks.spawn(publishing::sweep_deprecations(
        core.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(execute::monitor_health(core.clone(), shutdown.clone()));
    tasks.spawn(calllog::run(core.clone(), shutdown.clone()));
    tasks.spawn(engine::run(core.clone(), shutdown.clone()));
    if settings.run_scheduler {
        tasks.spawn(scheduler::run(core.clone(), shutdown.clone()));
    }
    let router = http::router(core.clone());
    let http_shutdown = shutdown.clone();
    tasks.spawn(async move {
        use axum::serve::ListenerExt as _;
        let listener = listener.tap_io(|tcp| {
            // Relayed calls cross two HTTP hops; Nagle would add delay to each.
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(http_shutdown.cancelled_owned())
        .await
        {
            tracing::error!("HTTP server failed: {e}");
        }
    });
    tracing::info!(%http_addr, %tunnel_addr, data_dir = %settings.data_dir.display(), "control plane serving");
    Ok(Server {
        http_addr,
        tunnel_addr,
        core,
        tasks,
    })
}

/// Most bytes a connector call's response may have.
pub const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// The built-in cloud agent over its allow-list.
fn cloud_agent(allow: &[String]) -> anyhow::Result<dibop_runtime::Runtime> {
    let policy = dibop_runtime::policy::AllowList::parse(allow).map_err(|errors| {
        anyhow::anyhow!(
            "cloud_agent_allow: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?
    .with_remedy(
        "it runs in the control plane's cloud agent, which calls public addresses only by default: \
         the platform operator can widen its allow-list (`--cloud-agent-allow`, or `cloud_agent_allow` \
         in dibop.toml), or run the connection on a relay agent (execution_mode `agent_group`)",
    );
    dibop_runtime::Runtime::new(
        Arc::new(policy),
        "cloud",
        MAX_RESPONSE_BYTES,
        Duration::from_secs(300),
    )
}

/// Opens the database at `database_url`, or the SQLite file in `data_dir`.
pub async fn open_store(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
) -> anyhow::Result<store::Store> {
    match database_url {
        Some(url) => store::Store::open(url)
            .await
            .with_context(|| format!("cannot open the database at {}", store::redact_url(url))),
        None => {
            dibop_runtime::support::create_private_dir(data_dir)
                .with_context(|| format!("cannot use data directory {}", data_dir.display()))?;
            let path = data_dir.join("dibop.db");
            store::Store::open_sqlite(&path)
                .await
                .with_context(|| format!("cannot open the database {}", path.display()))
        }
    }
}

/// Creates a tenant (if missing) and an `enterprise_admin` API token for
/// it, both audited as done by `actor`. Returns (tenant id, token).
pub async fn bootstrap_tenant(
    store: &store::Store,
    name: &str,
    actor: &str,
) -> anyhow::Result<(String, String)> {
    let tenant = match store.tenant_by_name(name).await? {
        Some(t) => t,
        None => {
            let t = store.create_tenant(&ids::new_id("ten"), name).await?;
            audit::record(
                store,
                None,
                actor,
                "tenant.create",
                ("tenant", &t.id),
                serde_json::json!({"name": name}),
            )
            .await?;
            t
        }
    };
    let (row, token) = tokens::issue_token(
        store,
        &tenant.id,
        actor,
        crate::identity::Role::EnterpriseAdmin,
        None,
    )
    .await?;
    audit::record(
        store,
        Some(&tenant.id),
        actor,
        "api_token.create",
        ("api_token", &row.id),
        serde_json::json!({"name": row.name, "role": row.role}),
    )
    .await?;
    Ok((tenant.id, token))
}

/// Creates a user in the named tenant (or, with `reset`, gives an existing
/// user of that email a new password). Returns (user id, password).
pub async fn bootstrap_user(
    store: &store::Store,
    tenant_id: &str,
    email: &str,
    role: &str,
    password: Option<String>,
    actor: &str,
) -> anyhow::Result<(String, String)> {
    let password = password.unwrap_or_else(|| ids::new_secret("").chars().take(24).collect());
    if let Some(existing) = store.user_by_email(&email.to_ascii_lowercase()).await? {
        anyhow::ensure!(
            existing.tenant_id == tenant_id,
            "{email} belongs to another tenant"
        );
        store
            .set_user_password(&existing.id, &users::hash_password(password.clone()).await?)
            .await?;
        audit::record(
            store,
            Some(tenant_id),
            actor,
            "user.password_reset",
            ("user", &existing.id),
            serde_json::Value::Null,
        )
        .await?;
        return Ok((existing.id, password));
    }
    let user = users::create_user(store, tenant_id, email, &password, role)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the user: {e:?}"))?;
    audit::record(
        store,
        Some(tenant_id),
        actor,
        "user.create",
        ("user", &user.id),
        serde_json::json!({"email": user.email, "role": role}),
    )
    .await?;
    Ok((user.id, password))
}

/// Makes a platform admin: the reserved `platform` tenant (if missing), a
/// user and an API token with the `platform_admin` role. Returns
/// (email, password, api token).
pub async fn bootstrap_platform_admin(
    store: &store::Store,
    email: &str,
    password: Option<String>,
    actor: &str,
) -> anyhow::Result<(String, String, String)> {
    let platform = crate::identity::tenants::platform_tenant(store).await?;
    let (_, password) = bootstrap_user(
        store,
        &platform.id,
        email,
        crate::identity::Role::PlatformAdmin.as_str(),
        password,
        actor,
    )
    .await?;
    let (row, token) = tokens::issue_token(
        store,
        &platform.id,
        actor,
        crate::identity::Role::PlatformAdmin,
        None,
    )
    .await?;
    audit::record(
        store,
        None,
        actor,
        "api_token.create",
        ("api_token", &row.id),
        serde_json::json!({"role": row.role}),
    )
    .await?;
    Ok((email.to_owned(), password, token))
}

/// This node's id among control-plane replicas: `DATA_DIR/node.id`, made at
/// first start, so a restarted node takes its unfinished executions back at
/// once (each replica has a data directory of its own).
fn node_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("node.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = ids::new_id("node");
            std::fs::write(&path, &id)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(id)
        }
    }
}

/// Sets a tenant's tier and custom limits (CLI and `dibop dev`).
pub async fn set_tenant_plan(
    store: &store::Store,
    tenant_id: &str,
    tier: Option<&str>,
    calls_per_month: Option<i64>,
    requests_per_minute: Option<i64>,
) -> anyhow::Result<()> {
    let mut t = store
        .tenant(tenant_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant {tenant_id}"))?;
    if let Some(tier) = tier {
        t.tier = tier.parse()?;
    }
    for (value, name) in [
        (calls_per_month, "calls per month"),
        (requests_per_minute, "requests per minute"),
    ] {
        anyhow::ensure!(value.is_none_or(|v| v >= 1), "{name} must be at least 1");
    }
    t.calls_per_month = calls_per_month.or(t.calls_per_month);
    t.requests_per_minute = requests_per_minute.or(t.requests_per_minute);
    store.update_tenant_plan(&t).await?;
    Ok(())
}

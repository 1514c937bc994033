//! `dibop dev`: the whole platform on one machine, ready to use.
//!
//! Starts the control plane on its embedded store, a DMS simulator, and a
//! relay agent enrolled into the demo tenant's agent group over real QUIC on
//! loopback. The agent's allow-list holds only the simulator's address.
//! Writes `DATA_DIR/dev-credentials.json` and prints a first call to make.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use dibop_relay_agent::config::ConfigFile;
use dibop_relay_agent::identity::Identity;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Settings;
use crate::store::{AgentGroup, Store, now_unix};
use crate::support::ids;

/// Options of `dibop dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where everything is kept.
    pub data_dir: PathBuf,
    /// HTTP API address.
    pub http_addr: SocketAddr,
    /// Tunnel address.
    pub tunnel_addr: SocketAddr,
    /// DMS simulator address.
    pub dms_addr: SocketAddr,
}

const DEMO_TENANT: &str = "demo";
const DEMO_GROUP: &str = "demo-site";

async fn demo_group(store: &Store, tenant_id: &str) -> anyhow::Result<AgentGroup> {
    if let Some(g) = store
        .list_groups(tenant_id, None, 500)
        .await?
        .into_iter()
        .find(|g| g.name == DEMO_GROUP)
    {
        return Ok(g);
    }
    let group = AgentGroup {
        id: ids::new_id("grp"),
        tenant_id: tenant_id.to_owned(),
        name: DEMO_GROUP.into(),
        description: "The demo dealer site of `dibop dev`".into(),
        created_at: now_unix(),
    };
    store.create_group(&group).await?;
    Ok(group)
}

/// Runs until `shutdown` is cancelled.
pub async fn run(options: DevOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let data_dir = options.data_dir.clone();
    // The simulator first: the built-in simulator connector points at it.
    let (dms_addr, dms_task) = dibop_dms_sim::spawn(options.dms_addr, Default::default())
        .await
        .with_context(|| {
            format!(
                "cannot start the DMS simulator on {} (use --dms-addr)",
                options.dms_addr
            )
        })?;
    let dms_url = format!("http://{dms_addr}");
    let mut settings = Settings::new(data_dir.clone());
    settings.http_addr = options.http_addr;
    settings.tunnel_addr = options.tunnel_addr;
    settings.builtin_base_urls = vec![("dms-sim".into(), dms_url.clone())];
    let server = crate::start(settings, shutdown.clone()).await?;
    let core = server.core.clone();

    let (tenant_id, api_token) =
        crate::bootstrap_tenant(&core.store, DEMO_TENANT, "dibop-dev").await?;
    let group = demo_group(&core.store, &tenant_id).await?;
    // A playground: generous limits so exploring never trips the quota.
    crate::set_tenant_plan(
        &core.store,
        &tenant_id,
        Some("premium"),
        Some(100_000_000),
        Some(100_000),
    )
    .await?;
    let (platform_email, platform_password, platform_token) =
        crate::bootstrap_platform_admin(&core.store, "platform@dibop.example", None, "dibop-dev")
            .await?;
    let admin_email = "admin@demo.dibop.example";
    let (_, admin_password) = crate::bootstrap_user(
        &core.store,
        &tenant_id,
        admin_email,
        "enterprise_admin",
        None,
        "dibop-dev",
    )
    .await?;

    // Reuse the demo agent's identity across runs unless it is unusable.
    let agent_dir = data_dir.join("agent");
    let reusable = match Identity::load(&agent_dir) {
        Ok(id) => match core.store.agent_any_tenant(&id.meta.agent_id).await? {
            Some(row) => {
                row.revoked_at.is_none()
                    && row.group_id == group.id
                    && id.meta.not_after_unix > now_unix() + 3600
            }
            None => false,
        },
        Err(_) => false,
    };
    if !reusable {
        let secret = ids::new_secret("");
        let expires_at = now_unix() + 600;
        core.store
            .create_enrollment_token(
                &ids::new_id("enr"),
                &tenant_id,
                &group.id,
                &ids::hash_secret(&secret),
                expires_at,
            )
            .await?;
        let token = dibop_protocol::EnrollmentToken {
            address: server.tunnel_addr.to_string(),
            secret,
            ca_sha256: core.ca.fingerprint(),
            expires_at_unix: expires_at,
        };
        dibop_relay_agent::enroll::enroll(&token.encode(), &agent_dir, Some("demo-agent"), true)
            .await
            .context("the demo agent could not enroll")?;
    }
    let agent_config = ConfigFile::parse(
        &format!("name = \"demo-agent\"\n[policy]\nallow = [\"{dms_addr}\"]\n[tunnel]\ncontrol_plane = \"{}\"\n", server.tunnel_addr),
        "dibop dev agent config",
    )?
    .validate("dibop dev agent config")?;
    let agent_shutdown = shutdown.child_token();
    let agent_task = {
        let agent_dir = agent_dir.clone();
        let agent_shutdown = agent_shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) =
                dibop_relay_agent::tunnel::run(agent_config, &agent_dir, agent_shutdown).await
            {
                tracing::error!("demo agent stopped: {e}");
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while core.registry.online_in_group(&group.id) == 0 {
        if Instant::now() > deadline {
            bail!("the demo agent did not come online within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A ready connection to the simulator through the demo site's agent.
    let dms_sim = core
        .store
        .catalogue(
            &tenant_id,
            false,
            &crate::store::CatalogueFilter {
                text: Some("dms-sim".into()),
                ..Default::default()
            },
            None,
            1,
        )
        .await?
        .into_iter()
        .next()
        .map(|c| c.id)
        .context("the built-in dms-sim connector is missing")?;
    let sim = dibop_dms_sim::SimAuth::default();
    let connection_id = crate::connections::manage::ensure(
        &core,
        &tenant_id,
        json!({
            "connector_id": dms_sim, "name": "Demo DMS", "auth_type": "api_key",
            "credentials": {"api_key": sim.api_key}, "base_url": dms_url,
            "execution_mode": "agent_group", "agent_group_id": group.id, "activate": true,
        }),
    )
    .await?;
    let orchestration_id = crate::http::orchestrations::ensure_example(&core, &tenant_id).await?;

    let api_url = format!("http://{}", server.http_addr);
    let credentials = json!({
        "api_url": api_url,
        "api_token": api_token,
        "tenant_id": tenant_id,
        "agent_group_id": group.id,
        "connection_id": connection_id,
        "orchestration_id": orchestration_id,
        "dms_url": dms_url,
        "dms_api_key": dibop_dms_sim::SimAuth::default().api_key,
        "tunnel_addr": server.tunnel_addr.to_string(),
        "enterprise_admin": {"email": admin_email, "password": admin_password, "api_token": api_token},
        "platform_admin": {"email": platform_email, "password": platform_password, "api_token": platform_token},
    });
    let path = data_dir.join("dev-credentials.json");
    write_private(&path, &serde_json::to_vec_pretty(&credentials)?)?;
    println!(
        "\nDIBOP is running.\n\
         \n  console      {api_url}/   sign in as {admin_email} with password {admin_password}\
         \n  API          {api_url}   (token in {path})\
         \n  tunnel       quic://{tunnel}\
         \n  DMS sim      {dms_url}   (X-API-Key: {key})\
         \n  agent group  {group} ({group_name}), 1 agent online\
         \n  connection   {connection_id} (Demo DMS: dms-sim through the agent group)\
         \n  orchestration {orchestration_id} (Vehicle availability: POST .../orchestrations/{orchestration_id}/execute with {{\"parameters\":{{\"vin\":\"…\"}},\"wait_ms\":5000}})\n\
         \nMake a first relayed call: operation listVehicles of the connection, run by the agent:\n\
         \n  curl -s -X POST {api_url}/api/v1/connections/{connection_id}/operations/listVehicles/invoke \\\
         \n    -H 'Authorization: Bearer {api_token}' -H 'Content-Type: application/json' \\\
         \n    -d '{{\"parameters\":{{\"page_size\":2}}}}'\n\
         \nList agents:  curl -s {api_url}/api/v1/agents -H 'Authorization: Bearer {api_token}'\
         \nPress Ctrl-C to stop.\n",
        path = path.display(),
        tunnel = server.tunnel_addr,
        key = sim.api_key,
        group = group.id,
        group_name = group.name,
    );

    shutdown.cancelled().await;
    tracing::info!("stopping");
    agent_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), agent_task).await;
    dms_task.abort();
    let _ = tokio::time::timeout(Duration::from_secs(15), server.wait()).await;
    Ok(())
}

fn write_private(path: &std::path::Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents)?;
    Ok(())
}

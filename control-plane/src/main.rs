//! `dibop`: the DIBOP control plane's command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
#[cfg(feature = "dev-sim")]
use dibop_control_plane::dev;
use tokio_util::sync::CancellationToken;

/// DIBOP control plane: API, agent tunnels and dispatch for the DIBOP
/// integration platform.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole platform locally: control plane (SQLite), a DMS
    /// simulator and an enrolled relay agent. Writes DATA_DIR/dev-credentials.json.
    Dev {
        /// Where state is kept (database, CA, demo agent identity).
        #[arg(long, env = "DIBOP_DATA_DIR", default_value = ".dibop/dev")]
        data_dir: PathBuf,
        /// HTTP API address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http_addr: SocketAddr,
        /// QUIC tunnel address (UDP).
        #[arg(long, default_value = "127.0.0.1:4433")]
        tunnel_addr: SocketAddr,
        /// DMS simulator address.
        #[arg(long, default_value = "127.0.0.1:9100")]
        dms_addr: SocketAddr,
    },
    /// Run the control plane.
    Serve {
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Work with connector definition files.
    Connector {
        #[command(subcommand)]
        task: ConnectorTask,
    },
    /// Work with orchestration definition files.
    Orchestration {
        #[command(subcommand)]
        task: OrchestrationTask,
    },
    /// Administrative tasks, directly on the control plane's store.
    Admin {
        /// The control plane's data directory.
        #[arg(long, env = "DIBOP_DATA_DIR", default_value = "/var/lib/dibop")]
        data_dir: PathBuf,
        /// Database URL (`sqlite://PATH` or `postgres://USER[:PASSWORD]@HOST/DB`);
        /// default: the SQLite file `DATA_DIR/dibop.db`.
        #[arg(long, env = "DIBOP_DATABASE_URL")]
        database_url: Option<String>,
        #[command(subcommand)]
        task: AdminTask,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Config file (TOML; see deploy/dibop.example.toml). Flags and environment win over it.
    #[arg(long, env = "DIBOP_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration, print the effective settings and exit.
    #[arg(long)]
    check_config: bool,
    /// Where state is kept (the CA, the master key; the SQLite database unless a
    /// database URL is given) [default: /var/lib/dibop].
    #[arg(long, env = "DIBOP_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL (`sqlite://PATH` or `postgres://USER[:PASSWORD]@HOST/DB`)
    /// [default: the SQLite file DATA_DIR/dibop.db].
    #[arg(long, env = "DIBOP_DATABASE_URL")]
    database_url: Option<String>,
    /// HTTP API address [default: 127.0.0.1:8080].
    #[arg(long, env = "DIBOP_HTTP_ADDR")]
    http_addr: Option<String>,
    /// QUIC tunnel address, UDP [default: 0.0.0.0:4433].
    #[arg(long, env = "DIBOP_TUNNEL_ADDR")]
    tunnel_addr: Option<String>,
    /// host:port agents dial, written into enrollment tokens [default: the tunnel address].
    #[arg(long, env = "DIBOP_PUBLIC_TUNNEL_ADDR")]
    public_tunnel_addr: Option<String>,
    /// Drop an agent silent for this long, in ms; heartbeats come every third of it [default: 15000].
    #[arg(long, env = "DIBOP_AGENT_IDLE_TIMEOUT_MS")]
    agent_idle_timeout_ms: Option<u64>,
    /// Lifetime of agent certificates in seconds, renewed at two thirds [default: 2592000].
    #[arg(long, env = "DIBOP_AGENT_CERT_TTL_SECS")]
    agent_cert_ttl_secs: Option<u64>,
    /// Where the built-in cloud agent may call: allow-list entries, comma-separated
    /// [default: public, any publicly routable address].
    #[arg(long, env = "DIBOP_CLOUD_AGENT_ALLOW", value_delimiter = ',')]
    cloud_agent_allow: Option<Vec<String>>,
    /// Seconds between health checks of active connections [default: 60].
    #[arg(long, env = "DIBOP_HEALTH_CHECK_INTERVAL_SECS")]
    health_check_interval_secs: Option<u64>,
    /// Seconds between measurements of each tenant's stored bytes, against its
    /// storage limit [default: 60].
    #[arg(long, env = "DIBOP_STORAGE_INTERVAL_SECS")]
    storage_interval_secs: Option<u64>,
    /// Seconds an execution's call waits for an agent of its relay group to come
    /// online (the step shows `waiting`) before failing `agent_unavailable` [default: 600].
    #[arg(long, env = "DIBOP_AGENT_WAIT_SECS")]
    agent_wait_secs: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum OrchestrationTask {
    /// Check an orchestration definition (JSON or YAML): shape, expressions, templates,
    /// step references and schedules; list every problem with its path.
    Validate {
        /// The definition file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConnectorTask {
    /// Check a connector definition (JSON or YAML) and list every problem with its path.
    Validate {
        /// The definition file.
        file: PathBuf,
    },
    /// Turn an OpenAPI document (Swagger 2.0, OpenAPI 3.0/3.1; JSON or YAML) into a connector
    /// definition to refine, printed as YAML (or written with --output). What could not be
    /// carried over is listed on stderr. `$ref`s are resolved in the file only, never fetched.
    ImportOpenapi {
        /// The OpenAPI document.
        file: PathBuf,
        /// Base URL when the document's servers are relative or missing.
        #[arg(long)]
        base_url: Option<String>,
        /// Slug of the connector [default: from the title].
        #[arg(long)]
        slug: Option<String>,
        /// Category of the connector [default: other].
        #[arg(long)]
        category: Option<String>,
        /// Write the definition here instead of stdout (`.json` writes JSON).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
// The variants name the commands (`create-user`, ...); more verbs come with the vault.
#[allow(clippy::enum_variant_names)]
enum AdminTask {
    /// Create a user in a tenant (or give an existing one a new password). The
    /// password comes from DIBOP_NEW_USER_PASSWORD, else one is generated and printed once.
    CreateUser {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// The user's email.
        #[arg(long)]
        email: String,
        /// enterprise_admin, operator or viewer.
        #[arg(long, default_value = "enterprise_admin")]
        role: String,
    },
    /// Create a tenant (if missing) with an enterprise_admin API token; prints the token once.
    CreateTenant {
        /// Tenant name.
        #[arg(long)]
        name: String,
        /// Quota tier: free, standard or premium.
        #[arg(long)]
        tier: Option<String>,
        /// Custom monthly call quota (overrides the tier's).
        #[arg(long)]
        calls_per_month: Option<i64>,
        /// Custom API request rate per minute (overrides the tier's).
        #[arg(long)]
        requests_per_minute: Option<i64>,
        /// Let the tenant's admins publish connectors for their own enterprise.
        #[arg(long)]
        enterprise_publishing: bool,
    },
    /// Create an API token for a tenant; prints the secret once.
    CreateApiToken {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// A label for people.
        #[arg(long, default_value = "cli")]
        name: String,
        /// enterprise_admin, operator or viewer.
        #[arg(long, default_value = "operator")]
        role: String,
        /// Lifetime in seconds (default: no expiry).
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Re-wrap every tenant data key under a new master key (key file in the
    /// data dir, or DIBOP_MASTER_KEY → DIBOP_NEW_MASTER_KEY). Stop `dibop serve` first.
    RotateMasterKey,
    /// Create a platform admin (user and API token; password from
    /// DIBOP_NEW_USER_PASSWORD, else generated). Prints the credentials once.
    CreatePlatformAdmin {
        /// The admin's email.
        #[arg(long)]
        email: String,
    },
}

fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let signal = token.clone();
    tokio::spawn(async move {
        dibop_runtime::support::shutdown_signal().await;
        signal.cancel();
    });
    token
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev {
            data_dir,
            http_addr,
            tunnel_addr,
            dms_addr,
        } => {
            #[cfg(feature = "dev-sim")]
            {
                let options = dev::DevOptions {
                    data_dir,
                    http_addr,
                    tunnel_addr,
                    dms_addr,
                };
                dev::run(options, shutdown_on_signal()).await
            }
            #[cfg(not(feature = "dev-sim"))]
            {
                let _ = (data_dir, http_addr, tunnel_addr, dms_addr);
                anyhow::bail!(
                    "this dibop was built without the DMS simulator (cargo feature `dev-sim`), so \
                     `dibop dev` is not available: run `dibop serve`, or build with the default features"
                )
            }
        }
        Command::Serve { serve } => {
            use dibop_control_plane::config;
            let (file, origin) = match &serve.config {
                Some(path) => (config::load(path)?, path.display().to_string()),
                None => (
                    config::ServeFile::default(),
                    "flags and environment".to_owned(),
                ),
            };
            let overrides = config::Overrides {
                data_dir: serve.data_dir,
                database_url: serve.database_url,
                http_addr: serve.http_addr,
                tunnel_addr: serve.tunnel_addr,
                public_tunnel_addr: serve.public_tunnel_addr,
                agent_idle_timeout_ms: serve.agent_idle_timeout_ms,
                agent_cert_ttl_secs: serve.agent_cert_ttl_secs,
                cloud_agent_allow: serve.cloud_agent_allow,
                health_check_interval_secs: serve.health_check_interval_secs,
                storage_interval_secs: serve.storage_interval_secs,
                agent_wait_secs: serve.agent_wait_secs,
            };
            let settings = config::resolve(file, overrides, &origin)?;
            if serve.check_config {
                // The database must answer too, not only parse.
                if let Some(url) = &settings.database_url {
                    let shown = dibop_control_plane::store::redact_url(url);
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        dibop_control_plane::store::Store::ping_url(url),
                    )
                    .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            anyhow::bail!("{origin}: the database at {shown} cannot be used: {e}")
                        }
                        Err(_) => {
                            anyhow::bail!(
                                "{origin}: the database at {shown} did not answer within 10 s"
                            )
                        }
                    }
                }
                println!(
                    "configuration is valid:\n  data_dir = {}\n  database = {}\n  http_addr = {}\n  tunnel_addr = {}\n  \
                     public_tunnel_addr = {}\n  agent_idle_timeout_ms = {}\n  agent_cert_ttl_secs = {}\n  \
                     cloud_agent_allow = {:?}\n  health_check_interval_secs = {}\n  storage_interval_secs = {}\n  \
                     agent_wait_secs = {}",
                    settings.data_dir.display(),
                    settings.database_url.as_deref().map_or(
                        "sqlite (data_dir/dibop.db)".to_owned(),
                        dibop_control_plane::store::redact_url
                    ),
                    settings.http_addr,
                    settings.tunnel_addr,
                    settings
                        .public_tunnel_addr
                        .as_deref()
                        .unwrap_or("(the tunnel address)"),
                    settings.agent_idle_timeout.as_millis(),
                    settings.agent_cert_ttl.as_secs(),
                    settings.cloud_agent_allow,
                    settings.health_check_interval.as_secs(),
                    settings.storage_interval.as_secs(),
                    settings.agent_wait.as_secs(),
                );
                return Ok(());
            }
            let shutdown = shutdown_on_signal();
            let server = dibop_control_plane::start(settings, shutdown.clone()).await?;
            println!(
                "listening http={} tunnel={}",
                server.http_addr, server.tunnel_addr
            );
            server.wait().await;
            Ok(())
        }
        Command::Orchestration {
            task: OrchestrationTask::Validate { file },
        } => {
            use dibop_control_plane::orchestration::definition;
            validate_file(&file, |text| match definition::parse(text) {
                Ok(doc) => definition::validate(&doc)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                Err(p) => vec![p.to_string()],
            })
        }
        Command::Connector {
            task: ConnectorTask::Validate { file },
        } => {
            use dibop_control_plane::catalogue::connector;
            validate_file(&file, |text| match connector::parse(text) {
                Ok(doc) => connector::validate(&doc)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                Err(p) => vec![p.to_string()],
            })
        }
        Command::Connector {
            task:
                ConnectorTask::ImportOpenapi {
                    file,
                    base_url,
                    slug,
                    category,
                    output,
                },
        } => {
            use dibop_control_plane::catalogue::{connector, import};
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let options = import::Options {
                base_url,
                slug,
                category,
            };
            let imported = import::from_openapi(&text, &options).map_err(|problems| {
                anyhow::anyhow!(
                    "{} cannot be imported:\n{}",
                    file.display(),
                    problems
                        .iter()
                        .map(|p| format!("  - {p}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?;
            for w in &imported.warnings {
                eprintln!("warning: {w}");
            }
            let problems = connector::validate(&imported.definition);
            for p in &problems {
                eprintln!("problem: {p}");
            }
            let as_json = output
                .as_ref()
                .is_some_and(|o| o.extension().is_some_and(|e| e == "json"));
            let rendered = if as_json {
                serde_json::to_string_pretty(&imported.definition)?
            } else {
                serde_yaml_ng::to_string(&imported.definition)?
            };
            match &output {
                Some(path) => {
                    std::fs::write(path, rendered)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                    eprintln!(
                        "wrote {} ({} operations, {} warning(s))",
                        path.display(),
                        imported.definition["operations"]
                            .as_array()
                            .map_or(0, Vec::len),
                        imported.warnings.len()
                    );
                }
                None => print!("{rendered}"),
            }
            anyhow::ensure!(
                problems.is_empty(),
                "the imported definition has {} problem(s): fix them before creating the connector",
                problems.len()
            );
            Ok(())
        }
        Command::Admin {
            data_dir,
            database_url,
            task,
        } => match task {
            AdminTask::CreateUser {
                tenant,
                email,
                role,
            } => {
                let store =
                    dibop_control_plane::open_store(&data_dir, database_url.as_deref()).await?;
                let tenant = store.tenant_by_name(&tenant).await?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "no tenant named `{tenant}` (create it with `dibop admin create-tenant`)"
                    )
                })?;
                let password = std::env::var("DIBOP_NEW_USER_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty());
                let generated = password.is_none();
                let (user_id, password) = dibop_control_plane::bootstrap_user(
                    &store, &tenant.id, &email, &role, password, "cli",
                )
                .await?;
                let shown = if generated {
                    password
                } else {
                    "(from DIBOP_NEW_USER_PASSWORD)".into()
                };
                println!(
                    "{}",
                    serde_json::json!({"user_id": user_id, "email": email, "password": shown})
                );
                store.close().await;
                Ok(())
            }
            AdminTask::CreateApiToken {
                tenant,
                name,
                role,
                ttl_secs,
            } => {
                use dibop_control_plane::identity::{audit, tokens};
                let store =
                    dibop_control_plane::open_store(&data_dir, database_url.as_deref()).await?;
                let t = store.tenant_by_name(&tenant).await?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "no tenant named `{tenant}` (create it with `dibop admin create-tenant`)"
                    )
                })?;
                let role = dibop_control_plane::identity::users::tenant_role(
                    t.name == dibop_control_plane::identity::PLATFORM_TENANT,
                    &role,
                )
                .map_err(|problem| anyhow::anyhow!("--role `{role}`: {problem}"))?;
                let expires_at =
                    ttl_secs.map(|s| dibop_control_plane::store::now_unix() + s as i64);
                let (row, token) =
                    tokens::issue_token(&store, &t.id, &name, role, expires_at).await?;
                audit::record(
                    &store,
                    Some(&t.id),
                    "cli",
                    "api_token.create",
                    ("api_token", &row.id),
                    serde_json::json!({"name": name, "role": role}),
                )
                .await?;
                println!(
                    "{}",
                    serde_json::json!({"id": row.id, "api_token": token, "role": role})
                );
                store.close().await;
                Ok(())
            }
            AdminTask::RotateMasterKey => {
                let store =
                    dibop_control_plane::open_store(&data_dir, database_url.as_deref()).await?;
                let (key_id, n) =
                    dibop_control_plane::vault::rotate_master_key(&store, &data_dir).await?;
                dibop_control_plane::identity::audit::record(
                    &store,
                    None,
                    "cli",
                    "vault.rotate_master_key",
                    ("master_key", &key_id),
                    serde_json::json!({"data_keys_rewrapped": n}),
                )
                .await?;
                println!(
                    "{}",
                    serde_json::json!({"master_key_id": key_id, "data_keys_rewrapped": n})
                );
                store.close().await;
                Ok(())
            }
            AdminTask::CreatePlatformAdmin { email } => {
                let store =
                    dibop_control_plane::open_store(&data_dir, database_url.as_deref()).await?;
                let password = std::env::var("DIBOP_NEW_USER_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty());
                let (email, password, token) =
                    dibop_control_plane::bootstrap_platform_admin(&store, &email, password, "cli")
                        .await?;
                println!(
                    "{}",
                    serde_json::json!({"email": email, "password": password, "api_token": token})
                );
                store.close().await;
                Ok(())
            }
            AdminTask::CreateTenant {
                name,
                tier,
                calls_per_month,
                requests_per_minute,
                enterprise_publishing,
            } => {
                anyhow::ensure!(
                    name != dibop_control_plane::identity::PLATFORM_TENANT,
                    "`platform` is reserved"
                );
                let store =
                    dibop_control_plane::open_store(&data_dir, database_url.as_deref()).await?;
                let (tenant_id, token) =
                    dibop_control_plane::bootstrap_tenant(&store, &name, "cli").await?;
                dibop_control_plane::set_tenant_plan(
                    &store,
                    &tenant_id,
                    tier.as_deref(),
                    calls_per_month,
                    requests_per_minute,
                )
                .await?;
                if enterprise_publishing && let Some(mut t) = store.tenant(&tenant_id).await? {
                    t.enterprise_publishing = 1;
                    store.update_tenant_plan(&t).await?;
                }
                println!("{{\"tenant_id\":\"{tenant_id}\",\"api_token\":\"{token}\"}}");
                store.close().await;
                Ok(())
            }
        },
    }
}

fn main() -> ExitCode {
    // Expression workers (started by the control plane itself) need no
    // runtime, logging or argument parsing.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == dibop_control_plane::expr::sandbox::WORKER_COMMAND)
    {
        return match dibop_control_plane::expr::sandbox::run_worker() {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    cli_main()
}

#[tokio::main]
async fn cli_main() -> ExitCode {
    dibop_runtime::install_crypto_provider();
    dibop_runtime::support::init_tracing("info");
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a definition file and reports every problem `check` finds in it.
fn validate_file(
    file: &std::path::Path,
    check: impl Fn(&str) -> Vec<String>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let problems = check(&text);
    if problems.is_empty() {
        println!("{}: valid", file.display());
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    anyhow::bail!(
        "{} has {} problem(s):\n{}",
        file.display(),
        problems.len(),
        list.join("\n")
    )
}

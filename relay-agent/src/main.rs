//! `dibop-agent`: the relay agent's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dibop_relay_agent::{ConfigFile, enroll, install_crypto_provider, tunnel};
use tokio_util::sync::CancellationToken;

/// DIBOP relay agent: connects this site's systems to the DIBOP control plane
/// through an outbound QUIC tunnel. No inbound port is opened.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--data-dir`, shared by every command.
#[derive(Debug, clap::Args)]
struct DataDir {
    /// Where the agent keeps its identity, its state and its local secrets.
    #[arg(
        long,
        env = "DIBOP_AGENT_DATA_DIR",
        default_value = "/var/lib/dibop-agent"
    )]
    data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Redeem an enrollment token from the console: creates this agent's key
    /// and certificate in the data directory.
    Enroll {
        /// The token, as copied from the console (`dibop-enroll-v1.…`).
        token: String,
        #[command(flatten)]
        dir: DataDir,
        /// Display name in the console (default: this host's name).
        #[arg(long)]
        name: Option<String>,
        /// Replace an identity already in the data directory.
        #[arg(long)]
        force: bool,
    },
    /// Run the agent: keep the tunnel up and perform calls. Runs until stopped
    /// (SIGTERM or Ctrl-C); never gives up because the control plane is unreachable.
    Run {
        #[command(flatten)]
        dir: DataDir,
        /// Config file (TOML); see deploy/agent.example.toml. Without it nothing may be called.
        #[arg(long, env = "DIBOP_AGENT_CONFIG")]
        config: Option<PathBuf>,
        /// Check the config file, print the allow-list and exit.
        #[arg(long)]
        check_config: bool,
        /// Exit with status 4 when the tunnel has been down this long (`90s`,
        /// `5m`, `1h`), for supervisors that prefer a restart. Default: never.
        #[arg(long, value_parser = parse_duration)]
        exit_on_unhealthy: Option<std::time::Duration>,
    },
    /// Check what the agent needs, one line per check (identity, certificate,
    /// config, DNS, the QUIC tunnel port, each allow-listed target, local
    /// secrets): OK or what to fix. Exits non-zero when a check fails.
    Doctor {
        #[command(flatten)]
        dir: DataDir,
        /// Config file (TOML), as given to `run`.
        #[arg(long, env = "DIBOP_AGENT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Whether the agent is running and online, since when, its calls and
    /// the last tunnel error (from the status it keeps in its data
    /// directory). Exits 0 when it runs online, 1 otherwise.
    Status {
        #[command(flatten)]
        dir: DataDir,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Secrets kept on this machine only: a connection's credential set to
    /// `agent-secret:NAME` is replaced by the secret NAME when this agent
    /// makes the call; the control plane never holds the value.
    Secret {
        #[command(subcommand)]
        task: SecretTask,
    },
}

#[derive(Debug, Subcommand)]
enum SecretTask {
    /// Store a secret, read from standard input (one trailing newline is
    /// dropped): `printf '%s' "$KEY" | dibop-agent secret set dms-key`.
    Set {
        /// Letters, digits, `-`, `_` and `.`.
        name: String,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List the secrets' names (never their values).
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Remove a secret: calls that name it fail until it is set again.
    Remove {
        /// Its name.
        name: String,
        #[command(flatten)]
        dir: DataDir,
    },
}

/// Runs a `dibop-agent secret` task.
fn secret_task(task: SecretTask) -> ExitCode {
    use dibop_runtime::call::secrets;
    let done = match task {
        SecretTask::Set {
            name,
            dir: DataDir { data_dir },
        } => {
            let mut value = String::new();
            match std::io::Read::read_to_string(&mut std::io::stdin(), &mut value) {
                Err(e) => Err(format!("cannot read the secret from standard input: {e}")),
                Ok(_) => {
                    let value = value
                        .strip_suffix('\n')
                        .map(|v| v.strip_suffix('\r').unwrap_or(v))
                        .unwrap_or(&value);
                    secrets::set(&data_dir, &name, value).map(|()| {
                        format!(
                            "secret `{name}` stored in {}; use `agent-secret:{name}` as the credential",
                            secrets::dir_of(&data_dir).display()
                        )
                    })
                }
            }
        }
        SecretTask::List {
            dir: DataDir { data_dir },
        } => secrets::list(&data_dir).map(|names| names.join("\n")),
        SecretTask::Remove {
            name,
            dir: DataDir { data_dir },
        } => secrets::remove(&data_dir, &name).and_then(|removed| {
            if removed {
                Ok(format!("secret `{name}` removed"))
            } else {
                Err(format!("there is no secret `{name}`"))
            }
        }),
    };
    match done {
        Ok(text) => {
            if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// A duration such as `500ms`, `90s`, `5m` or `1h`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 90s, 5m or 1h"))?;
    let seconds = match unit {
        "ms" => return Ok(std::time::Duration::from_millis(n)),
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{text}`: use ms, s, m or h")),
    };
    Ok(std::time::Duration::from_secs(seconds))
}

fn load_config(path: Option<&PathBuf>) -> Result<dibop_relay_agent::AgentConfig, String> {
    match path {
        Some(p) => ConfigFile::load(p)
            .and_then(|c| c.validate(&p.display().to_string()))
            .map_err(|e| e.to_string()),
        None => Ok(dibop_relay_agent::AgentConfig::default()),
    }
}

fn main() -> ExitCode {
    // The agent's work is I/O: a few worker threads are plenty, and each
    // thread costs resident memory on a dealer's many-core server.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => rt.block_on(agent_main()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn agent_main() -> ExitCode {
    install_crypto_provider();
    dibop_runtime::support::init_tracing("info");
    let cli = Cli::parse();
    match cli.command {
        Command::Secret { task } => secret_task(task),
        Command::Status {
            dir: DataDir { data_dir },
            json,
        } => match dibop_relay_agent::status::read(&data_dir) {
            Ok((status, running)) => {
                if json {
                    let mut v = serde_json::to_value(&status).unwrap_or_default();
                    v["running"] = serde_json::Value::Bool(running);
                    println!("{v}");
                } else {
                    for line in dibop_relay_agent::status::describe(&status, running) {
                        println!("{line}");
                    }
                }
                if running && status.state == "online" {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Command::Doctor {
            dir: DataDir { data_dir },
            config,
        } => {
            let checks =
                dibop_relay_agent::doctor::run(&data_dir, load_config(config.as_ref())).await;
            for c in &checks {
                println!("{c}");
            }
            if dibop_relay_agent::doctor::passed(&checks) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Enroll {
            token,
            dir: DataDir { data_dir },
            name,
            force,
        } => match enroll::enroll(&token, &data_dir, name.as_deref(), force).await {
            Ok(identity) => {
                println!(
                    "enrolled as agent {} in group {} (certificate valid until {}); identity stored in {}\n\
                         next: dibop-agent run --data-dir {} --config <agent.toml>",
                    identity.meta.agent_id,
                    identity.meta.group_id,
                    time::OffsetDateTime::from_unix_timestamp(identity.meta.not_after_unix)
                        .map(|t| t.date().to_string())
                        .unwrap_or_default(),
                    data_dir.display(),
                    data_dir.display(),
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            dir: DataDir { data_dir },
            config,
            check_config,
            exit_on_unhealthy,
        } => {
            let config = match load_config(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if check_config {
                println!("config is valid; allow-list:");
                for entry in config.allow.entries() {
                    println!("  {entry}");
                }
                return ExitCode::SUCCESS;
            }
            let config = dibop_relay_agent::AgentConfig {
                exit_on_unhealthy,
                ..config
            };
            let shutdown = CancellationToken::new();
            let signal = shutdown.clone();
            tokio::spawn(async move {
                dibop_runtime::support::shutdown_signal().await;
                signal.cancel();
            });
            match tunnel::run(config, &data_dir, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ tunnel::RunError::Unhealthy(_)) => {
                    eprintln!("error: {e}");
                    ExitCode::from(4)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(3)
                }
            }
        }
    }
}

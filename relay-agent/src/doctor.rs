//! `dibop-agent doctor`: what an installer checks first when an agent does
//! not come online, one line per check, each OK or what to fix; the exit
//! status is non-zero when a check fails.
//!
//! Checks: the identity in the data directory, the certificate's expiry,
//! the config file and its allow-list, the control plane's name in DNS, a
//! QUIC handshake with the agent's certificate to the tunnel port (closed at
//! once: it does not take over a running agent's tunnel), each allow-listed
//! `host:port` resolvable and reachable over TCP, and the local secrets.

use std::path::Path;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;

use crate::config::{AgentConfig, Transport};
use crate::enroll::{client_endpoint, resolve};
use crate::identity::Identity;
use dibop_runtime::support::{now_unix, rfc3339};
use dibop_runtime::tls::{ALPN_TCP, TUNNEL_SERVER_NAME, agent_client_config, agent_tls, transport};

/// How long the network checks wait.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Fine, with what was found.
    Ok(String),
    /// Works, but deserves attention.
    Warn(String),
    /// Broken, with what to do.
    Fail(String),
}

/// One check's line.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it went.
    pub outcome: Outcome,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (tag, text) = match &self.outcome {
            Outcome::Ok(t) => ("OK  ", t),
            Outcome::Warn(t) => ("WARN", t),
            Outcome::Fail(t) => ("FAIL", t),
        };
        write!(f, "{tag} {:<22} {text}", self.name)
    }
}

fn check(name: &str, outcome: Outcome) -> Check {
    Check {
        name: name.to_owned(),
        outcome,
    }
}

/// Runs every check: the identity in `data_dir`, the loaded `config` (or
/// why it could not be loaded).
pub async fn run(data_dir: &Path, config: Result<AgentConfig, String>) -> Vec<Check> {
    let mut out = Vec::new();
    let identity = match Identity::load(data_dir) {
        Ok(i) => {
            out.push(check(
                "identity",
                Outcome::Ok(format!(
                    "agent {} of group {} ({})",
                    i.meta.agent_id,
                    i.meta.group_id,
                    data_dir.display()
                )),
            ));
            Some(i)
        }
        Err(e) => {
            out.push(check(
                "identity",
                Outcome::Fail(format!(
                    "{e}: enroll first (dibop-agent enroll '<token>' --data-dir {})",
                    data_dir.display()
                )),
            ));
            None
        }
    };
    if let Some(i) = &identity {
        let left = i.meta.not_after_unix - now_unix();
        let until = rfc3339(i.meta.not_after_unix);
        out.push(check(
            "certificate",
            if left <= 0 {
                Outcome::Fail(format!(
                    "expired at {until}: enroll again with a new token"
                ))
            } else if left < 3 * 24 * 3600 {
                Outcome::Warn(format!(
                    "expires at {until}: it renews over the tunnel; bring the agent online before then"
                ))
            } else {
                Outcome::Ok(format!("valid until {until} (renewed over the tunnel)"))
            },
        ));
    }
    let config = match config {
        Ok(c) => {
            out.push(check(
                "config",
                if c.allow.is_empty() {
                    Outcome::Warn(
                        "the allow-list is empty: every call will be refused (policy.allow)".into(),
                    )
                } else {
                    Outcome::Ok(format!(
                        "{} allow-list entr{}",
                        c.allow.entries().count(),
                        if c.allow.entries().count() == 1 {
                            "y"
                        } else {
                            "ies"
                        }
                    ))
                },
            ));
            Some(c)
        }
        Err(e) => {
            out.push(check("config", Outcome::Fail(e)));
            None
        }
    };
    if let Some(i) = &identity {
        let address = config
            .as_ref()
            .and_then(|c| c.control_plane.clone())
            .unwrap_or_else(|| i.meta.control_plane.clone());
        match resolve(&address).await {
            Ok(remote) => {
                out.push(check(
                    "control plane DNS",
                    Outcome::Ok(format!("{address} is {remote}")),
                ));
                let quic = quic_handshake(i, &address, remote).await;
                let tcp_target = config
                    .as_ref()
                    .and_then(|c| c.wss.clone())
                    .unwrap_or_else(|| address.clone());
                let proxy = config.as_ref().and_then(|c| c.proxy.clone());
                let tcp = tcp_handshake(i, &tcp_target, &proxy).await;
                let pinned = config.as_ref().map_or(Transport::Auto, |c| c.transport);
                // One of the two is enough where the agent may use either.
                let (quic, tcp) = match (quic, tcp, pinned) {
                    (Outcome::Fail(q), Outcome::Ok(t), Transport::Auto | Transport::Wss) => (
                        Outcome::Warn(format!("{q}; the agent gets through over TCP instead")),
                        Outcome::Ok(t),
                    ),
                    (Outcome::Ok(q), Outcome::Fail(t), Transport::Auto | Transport::Quic) => (
                        Outcome::Ok(q),
                        Outcome::Warn(format!(
                            "{t}; the agent uses QUIC (TCP is its fallback where UDP is blocked)"
                        )),
                    ),
                    (q, t, _) => (q, t),
                };
                out.push(check("tunnel (QUIC, UDP)", quic));
                out.push(check("tunnel (TLS, TCP)", tcp));
            }
            Err(e) => out.push(check(
                "control plane DNS",
                Outcome::Fail(format!("{e}: check this machine's DNS settings")),
            )),
        }
    }
    if let Some(c) = &config {
        for entry in c.allow.entries() {
            if let Some(outcome) = reachable(entry).await {
                out.push(check(&format!("target {entry}"), outcome));
            }
        }
    }
    match dibop_runtime::call::secrets::list(data_dir) {
        Ok(names) if names.is_empty() => out.push(check(
            "local secrets",
            Outcome::Ok("none (connections may use agent-secret:NAME)".into()),
        )),
        Ok(names) => out.push(check(
            "local secrets",
            Outcome::Ok(format!("{} stored: {}", names.len(), names.join(", "))),
        )),
        Err(e) => out.push(check("local secrets", Outcome::Fail(e))),
    }
    out
}

/// A QUIC handshake with the agent's certificate, closed at once.
async fn quic_handshake(i: &Identity, address: &str, remote: std::net::SocketAddr) -> Outcome {
    let config: quinn::ClientConfig = match agent_client_config(
        CertificateDer::from(i.ca_der.clone()),
        CertificateDer::from(i.cert_der.clone()),
        i.key(),
        transport(CHECK_TIMEOUT, None, 1),
    ) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(format!("the identity files are unusable: {e}")),
    };
    let endpoint = match client_endpoint(remote) {
        Ok(e) => e,
        Err(e) => return Outcome::Fail(format!("cannot open a UDP socket: {e}")),
    };
    let started = Instant::now();
    let connecting = match endpoint.connect_with(config, remote, TUNNEL_SERVER_NAME) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(format!("cannot dial {address}: {e}")),
    };
    let outcome = match tokio::time::timeout(CHECK_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => {
            connection.close(0u32.into(), b"dibop-agent doctor");
            Outcome::Ok(format!(
                "{address}: handshake with this agent's certificate in {} ms",
                started.elapsed().as_millis()
            ))
        }
        Ok(Err(e)) => Outcome::Fail(format!(
            "{address} refused the handshake ({e}): if the agent was revoked or its certificate is no \
             longer accepted, enroll again"
        )),
        Err(_) => Outcome::Fail(format!(
            "no answer from {address} within {} s: outbound UDP to that port may be blocked by a \
             firewall (ask for UDP {} to be allowed out, or set tunnel.transport = \"wss\" to use TCP)",
            CHECK_TIMEOUT.as_secs(),
            remote.port()
        )),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    outcome
}

/// The TCP transport's handshake (TLS with the agent's certificate, the
/// WebSocket upgrade), closed at once: it never takes over a running
/// agent's tunnel (no hello is sent).
async fn tcp_handshake(i: &Identity, target: &str, proxy: &Option<crate::proxy::Proxy>) -> Outcome {
    let tls = match agent_tls(
        CertificateDer::from(i.ca_der.clone()),
        CertificateDer::from(i.cert_der.clone()),
        i.key(),
        ALPN_TCP,
    ) {
        Ok(t) => t,
        Err(e) => return Outcome::Fail(format!("the identity files are unusable: {e}")),
    };
    let started = Instant::now();
    let proxy = proxy.as_ref();
    match tokio::time::timeout(
        CHECK_TIMEOUT,
        crate::tunnel::dial_wss(target, tls, 2, proxy),
    )
    .await
    {
        Ok(Ok(link)) => {
            let ms = started.elapsed().as_millis();
            link.close(dibop_protocol::codes::CLOSE_NORMAL, b"dibop-agent doctor");
            Outcome::Ok(format!(
                "{target}: TLS and WebSocket with this agent's certificate in {ms} ms"
            ))
        }
        Ok(Err(e)) => Outcome::Fail(format!(
            "{e}: outbound TCP to that port may be blocked (the agent's way in where UDP is)"
        )),
        Err(_) => Outcome::Fail(format!(
            "no answer from {target} over TCP within {} s: outbound TCP to that port may be blocked",
            CHECK_TIMEOUT.as_secs()
        )),
    }
}

/// Whether an allow-list entry naming one `host:port` resolves and accepts
/// a TCP connection; `None` for networks, patterns and port ranges (not
/// one place to try).
async fn reachable(entry: &str) -> Option<Outcome> {
    let (host, port) = entry.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.contains(['*', '/']) || host.is_empty() {
        return None;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let started = Instant::now();
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(CHECK_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                return Some(Outcome::Fail(format!(
                    "cannot resolve {host}: {e} (check the name or this machine's DNS)"
                )));
            }
            Err(_) => return Some(Outcome::Fail(format!("resolving {host} took over 5 s"))),
        };
    let Some(first) = addrs.first() else {
        return Some(Outcome::Fail(format!("{host} resolves to no address")));
    };
    Some(
        match tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(first)).await {
            Ok(Ok(_)) => Outcome::Ok(format!(
                "{first} accepts connections ({} ms)",
                started.elapsed().as_millis()
            )),
            Ok(Err(e)) => Outcome::Fail(format!(
                "{first} refuses connections ({e}): is the system running on that port?"
            )),
            Err(_) => Outcome::Fail(format!(
                "{first} does not answer within 5 s: a firewall between this machine and it?"
            )),
        },
    )
}

/// Whether every check passed (warnings pass).
pub fn passed(checks: &[Check]) -> bool {
    checks
        .iter()
        .all(|c| !matches!(c.outcome, Outcome::Fail(_)))
}

//! The server end of the agents' tunnels: QUIC with mutual TLS, and the
//! TCP transport (the same mutual TLS, a WebSocket, multiplexed streams:
//! `dibop_runtime::mux`) for agents whose network blocks UDP. Both give a
//! `Link`, served by the same code.
//!
//! A connection without a client certificate may only enroll. A connection
//! with one is mapped to its agent by the certificate's subject; unknown and
//! revoked agents are refused with a reason. Bad frames close the connection
//! with the reason, logged here and sent to the peer; the server carries on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use dibop_protocol::{
    AgentToControl, CertificateRenewed, ControlToAgent, EnrollRequest, Enrolled, HeartbeatAck,
    Hello, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, RejectCode, Rejection, Welcome, codes,
    negotiate_version, version_mismatch_reason,
};
use dibop_runtime::link::{Link, RecvHalf, SendHalf};
use dibop_runtime::tls::{ALPN, ALPN_TCP, WS_PATH, transport};
use dibop_runtime::wire::{MAX_CONTROL_FRAME_LEN, WireError, read_frame, write_frame};
use rustls::pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::Core;
use crate::agents::ca::agent_id_of;
use crate::agents::dispatch::LiveAgent;
use crate::store::{AgentRow, Redeem, now_unix};

/// Streams one TCP tunnel may have open at once (its calls and probes).
const MAX_TCP_STREAMS: usize = 4096;
/// Time an agent has to open its control stream and say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The database's `last_seen` is refreshed at most this often per agent.
const LAST_SEEN_WRITE_EVERY: i64 = 30;

/// The tunnel's TLS settings: our certificate, agents' client certificates
/// verified against our CA (none: enrollment only), TLS 1.3 only.
fn server_tls(core: &Core, alpn: &[u8]) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(core.ca.cert_der().clone())?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let (chain, key) = core.ca.tunnel_server_cert()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// Builds the QUIC endpoint of the tunnel.
pub fn endpoint(core: &Core, addr: SocketAddr) -> anyhow::Result<quinn::Endpoint> {
    let tls = server_tls(core, ALPN)?;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    // Agents open only their control stream; calls are opened by us.
    server.transport_config(Arc::new(transport(
        core.settings.agent_idle_timeout,
        None,
        2,
    )));
    Ok(quinn::Endpoint::server(server, addr)?)
}

/// Accepts connections until `shutdown`.
pub async fn serve(core: Arc<Core>, endpoint: quinn::Endpoint, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => break },
            _ = shutdown.cancelled() => break,
        };
        let core = core.clone();
        tracker.spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(connection) => handle(core, Link::Quic(connection)).await,
                Err(e) => warn!(%remote, "tunnel handshake failed: {e}"),
            }
        });
    }
    endpoint.close(codes::CLOSE_SHUTDOWN.into(), b"control plane shutting down");
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

fn peer_agent_id(connection: &Link) -> Option<String> {
    let chain: Vec<CertificateDer<'static>> = connection.peer_certificates()?;
    agent_id_of(chain.first()?)
}

/// Takes the WebSocket upgrade on the tunnel's path only. (Its signature is
/// tungstenite's handshake callback, error type included.)
#[allow(clippy::result_large_err)]
fn tunnel_path_only(
    req: &tokio_tungstenite::tungstenite::handshake::server::Request,
    resp: tokio_tungstenite::tungstenite::handshake::server::Response,
) -> Result<
    tokio_tungstenite::tungstenite::handshake::server::Response,
    tokio_tungstenite::tungstenite::handshake::server::ErrorResponse,
> {
    if req.uri().path() == WS_PATH {
        return Ok(resp);
    }
    let mut not_found = tokio_tungstenite::tungstenite::handshake::server::ErrorResponse::new(
        Some(format!("the tunnel is at {WS_PATH}")),
    );
    *not_found.status_mut() = tokio_tungstenite::tungstenite::http::StatusCode::NOT_FOUND;
    Err(not_found)
}

/// Accepts the TCP transport on `listener` until `shutdown`: TLS (the
/// same certificates as QUIC), then a WebSocket upgrade on `/tunnel`, then
/// streams over it.
pub async fn serve_tcp(
    core: Arc<Core>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) {
    let tls = match server_tls(&core, ALPN_TCP) {
        Ok(t) => tokio_rustls::TlsAcceptor::from(Arc::new(t)),
        Err(e) => return warn!("cannot serve the TCP tunnel: {e}"),
    };
    let tracker = TaskTracker::new();
    loop {
        let (tcp, remote) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause, do not spin.
                    warn!("cannot accept a TCP tunnel connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let core = core.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _ = tcp.set_nodelay(true);
            let upgrade = async {
                let stream = tls.accept(tcp).await.map_err(|e| format!("TLS: {e}"))?;
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|d| d.clone().into_owned()).collect::<Vec<_>>());

                let ws = tokio_tungstenite::accept_hdr_async(stream, tunnel_path_only)
                    .await
                    .map_err(|e| format!("WebSocket: {e}"))?;
                Ok::<_, String>((ws, peer))
            };
            let (ws, peer) = match tokio::time::timeout(HELLO_TIMEOUT, upgrade).await {
                Ok(Ok(u)) => u,
                Ok(Err(e)) => return warn!(%remote, "TCP tunnel handshake failed: {e}"),
                Err(_) => return warn!(%remote, "TCP tunnel handshake took over 10 s"),
            };
            let mux = dibop_runtime::mux::Mux::new(
                ws,
                dibop_runtime::mux::Side::ControlPlane,
                MAX_TCP_STREAMS,
            );
            let link = Link::tcp(mux, remote, peer);
            tokio::select! {
                _ = handle(core, link.clone()) => {}
                _ = shutdown.cancelled() => {
                    link.close(codes::CLOSE_SHUTDOWN, b"control plane shutting down");
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
}

fn clip(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(255).collect()
}

fn reject(code: RejectCode, message: impl Into<String>) -> ControlToAgent {
    ControlToAgent::Rejected(Rejection {
        code,
        message: message.into(),
    })
}

/// Closes the connection because of a wire error, saying why on both ends.
fn protocol_error(connection: &Link, who: &str, error: &WireError) {
    let reason = error.to_string();
    warn!(remote = %connection.remote_address(), peer = who, "closing tunnel: {reason}");
    connection.close(codes::CLOSE_PROTOCOL_ERROR, reason.as_bytes());
}

async fn handle(core: Arc<Core>, connection: Link) {
    let remote = connection.remote_address();
    let agent_id = peer_agent_id(&connection);
    let who = agent_id.clone().unwrap_or_else(|| "enrollment".into());
    let (mut send, mut recv) =
        match tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return debug!(%remote, "connection closed before the handshake: {e}"),
            Err(_) => {
                connection.close(codes::CLOSE_PROTOCOL_ERROR, b"no control stream opened");
                return;
            }
        };
    let hello = match tokio::time::timeout(
        HELLO_TIMEOUT,
        read_frame::<AgentToControl, _>(&mut recv, MAX_CONTROL_FRAME_LEN),
    )
    .await
    {
        Ok(Ok(Some(AgentToControl::Hello(h)))) => h,
        Ok(Ok(other)) => {
            let e = format!(
                "expected Hello as the first message, got {}",
                other.map(|_| "another message").unwrap_or("nothing")
            );
            let _ = write_frame(&mut send, &reject(RejectCode::UnexpectedMessage, &e)).await;
            warn!(%remote, peer = %who, "closing tunnel: {e}");
            connection.close(codes::CLOSE_PROTOCOL_ERROR, e.as_bytes());
            return;
        }
        Ok(Err(e)) => return protocol_error(&connection, &who, &e),
        Err(_) => {
            connection.close(codes::CLOSE_PROTOCOL_ERROR, b"no hello within 10 s");
            return;
        }
    };
    // What the agent says about itself is stored and shown: keep it short.
    let hello = Hello {
        hostname: clip(&hello.hostname),
        agent_version: clip(&hello.agent_version),
        ..hello
    };
    let ours = (MIN_PROTOCOL_VERSION, PROTOCOL_VERSION);
    let theirs = (hello.min_version, hello.max_version);
    let Some(version) = negotiate_version(ours, theirs) else {
        let reason = version_mismatch_reason(ours, theirs);
        warn!(%remote, peer = %who, agent_version = %hello.agent_version, "refusing tunnel: {reason}");
        let _ = write_frame(&mut send, &reject(RejectCode::UnsupportedVersion, &reason)).await;
        send.finish().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
        return;
    };
    let heartbeat_interval_ms =
        u32::try_from((core.settings.agent_idle_timeout / 3).as_millis()).unwrap_or(10_000);
    let Some(agent_id) = agent_id else {
        let welcome = Welcome {
            version,
            agent_id: String::new(),
            heartbeat_interval_ms,
        };
        if write_frame(&mut send, &ControlToAgent::Welcome(welcome))
            .await
            .is_err()
        {
            return;
        }
        return enrollment(&core, &connection, send, recv, &hello.hostname).await;
    };
    let row = match core.store.agent_any_tenant(&agent_id).await {
        Ok(r) => r,
        Err(e) => {
            warn!(%agent_id, "cannot load agent: {e}");
            let _ = write_frame(
                &mut send,
                &reject(
                    RejectCode::Internal,
                    "the control plane cannot load this agent; it will retry",
                ),
            )
            .await;
            connection.close(codes::CLOSE_REJECTED, b"internal error");
            return;
        }
    };
    let refusal = match &row {
        None => Some((
            RejectCode::Unauthenticated,
            codes::CLOSE_REJECTED,
            format!("agent {agent_id} is not known to this control plane"),
        )),
        Some(r) if r.revoked_at.is_some() => Some((
            RejectCode::Revoked,
            codes::CLOSE_REVOKED,
            format!("agent {agent_id} was revoked by an administrator"),
        )),
        Some(_) => None,
    };
    if let Some((code, close, message)) = refusal {
        warn!(%remote, %agent_id, "refusing tunnel: {message}");
        let _ = write_frame(&mut send, &reject(code, &message)).await;
        send.finish().await;
        // Give the rejection time to arrive before closing.
        let _ = tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
        connection.close(close, message.as_bytes());
        return;
    }
    let Some(row) = row else { return };
    let welcome = Welcome {
        version,
        agent_id: agent_id.clone(),
        heartbeat_interval_ms,
    };
    if write_frame(&mut send, &ControlToAgent::Welcome(welcome))
        .await
        .is_err()
    {
        return;
    }
    let now = now_unix();
    if let Err(e) = core
        .store
        .agent_connected(&agent_id, &hello.hostname, &hello.agent_version, now)
        .await
    {
        warn!(%agent_id, "cannot record connection: {e}");
    }
    let live = Arc::new(LiveAgent {
        id: agent_id.clone(),
        tenant_id: row.tenant_id.clone(),
        group_id: row.group_id.clone(),
        version: hello.agent_version.clone(),
        protocol: version,
        hostname: hello.hostname.clone(),
        connection: connection.clone(),
        in_flight: AtomicU32::new(0),
        last_seen: AtomicI64::new(now),
        calls_total: AtomicU64::new(0),
        heard: crate::agents::dispatch::Heard::default(),
    });
    core.registry.insert(live.clone());
    info!(%agent_id, group_id = %row.group_id, %remote, transport = connection.transport(), version = %hello.agent_version, "agent online");
    let end = control_stream(&core, &live, send, recv).await;
    core.registry.remove(&agent_id, connection.stable_id());
    let _ = core.store.agent_seen(&agent_id, now_unix()).await;
    info!(%agent_id, "agent offline: {end}");
}

async fn control_stream(
    core: &Core,
    live: &LiveAgent,
    mut send: SendHalf,
    mut recv: RecvHalf,
) -> String {
    let mut last_written = live.last_seen.load(Ordering::Relaxed);
    loop {
        let frame = tokio::select! {
            f = read_frame::<AgentToControl, _>(&mut recv, MAX_CONTROL_FRAME_LEN) => f,
            e = live.connection.closed() => return e.to_string(),
        };
        let answer = match frame {
            Ok(Some(AgentToControl::Heartbeat(beat))) => {
                let now = now_unix();
                live.last_seen.store(now, Ordering::Relaxed);
                live.heard.now();
                if now - last_written >= LAST_SEEN_WRITE_EVERY {
                    last_written = now;
                    let _ = core.store.agent_seen(&live.id, now).await;
                }
                ControlToAgent::HeartbeatAck(HeartbeatAck { seq: beat.seq })
            }
            Ok(Some(AgentToControl::RenewCertificate(renew))) => {
                match core
                    .ca
                    .sign_agent(&renew.csr_der, &live.id, core.settings.agent_cert_ttl)
                {
                    Ok(signed) => {
                        let _ = core
                            .store
                            .agent_renewed(&live.id, signed.not_after_unix)
                            .await;
                        info!(agent_id = %live.id, "certificate renewed");
                        ControlToAgent::CertificateRenewed(CertificateRenewed {
                            certificate_der: signed.der,
                            not_after_unix: signed.not_after_unix,
                        })
                    }
                    Err(e) => reject(RejectCode::InvalidCsr, format!("cannot renew: {e}")),
                }
            }
            Ok(Some(_)) => {
                let reason = "unexpected message on the control stream";
                live.connection
                    .close(codes::CLOSE_PROTOCOL_ERROR, reason.as_bytes());
                return reason.into();
            }
            Ok(None) => return "the agent closed its control stream".into(),
            // A bad frame is the agent's fault: close and say why. A lost
            // connection is the network's or a shutdown: just report it.
            Err(e @ (WireError::Frame(_) | WireError::Truncated)) => {
                protocol_error(&live.connection, &live.id, &e);
                return e.to_string();
            }
            Err(e) => {
                return live
                    .connection
                    .close_reason()
                    .map_or_else(|| e.to_string(), |r| r.to_string());
            }
        };
        if let Err(e) = write_frame(&mut send, &answer).await {
            return e.to_string();
        }
    }
}

async fn enrollment(
    core: &Core,
    connection: &Link,
    mut send: SendHalf,
    mut recv: RecvHalf,
    hostname: &str,
) {
    let answer = match tokio::time::timeout(
        HELLO_TIMEOUT,
        read_frame::<AgentToControl, _>(&mut recv, MAX_CONTROL_FRAME_LEN),
    )
    .await
    {
        Ok(Ok(Some(AgentToControl::Enroll(request)))) => enroll(core, request, hostname).await,
        Ok(Ok(_)) => reject(
            RejectCode::Unauthenticated,
            "this connection has no client certificate: only enrollment is possible (run `dibop-agent enroll`)",
        ),
        Ok(Err(e)) => return protocol_error(connection, "enrollment", &e),
        Err(_) => reject(
            RejectCode::UnexpectedMessage,
            "no enrollment request within 10 s",
        ),
    };
    let _ = write_frame(&mut send, &answer).await;
    send.finish().await;
    // The agent closes once it has the answer; don't cut it off before.
    let _ = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
}

async fn enroll(core: &Core, request: EnrollRequest, hostname: &str) -> ControlToAgent {
    let agent_id = crate::support::ids::new_id("agt");
    // Check the CSR before spending the token.
    let signed = match core
        .ca
        .sign_agent(&request.csr_der, &agent_id, core.settings.agent_cert_ttl)
    {
        Ok(s) => s,
        Err(e) => {
            return reject(
                RejectCode::InvalidCsr,
                format!("the certificate signing request is not acceptable: {e}"),
            );
        }
    };
    let hash = crate::support::ids::hash_secret(&request.token_secret);
    let now = now_unix();
    let (tenant_id, group_id, token_id) = match core.store.redeem_enrollment_token(&hash, now).await
    {
        Ok(Redeem::Ok {
            tenant_id,
            group_id,
            token_id,
        }) => (tenant_id, group_id, token_id),
        Ok(Redeem::Unknown) => {
            return reject(
                RejectCode::TokenUnknown,
                "this enrollment token is not known: check that it was copied whole and is for this control plane",
            );
        }
        Ok(Redeem::Used) => {
            return reject(
                RejectCode::TokenUsed,
                "this enrollment token was already used: each token enrolls one agent; create a new one in the console",
            );
        }
        Ok(Redeem::Expired) => {
            return reject(
                RejectCode::TokenExpired,
                "this enrollment token has expired: create a new one in the console",
            );
        }
        Err(e) => {
            warn!("enrollment failed: {e}");
            return reject(
                RejectCode::Internal,
                "the control plane could not complete the enrollment; try again",
            );
        }
    };
    let name = if request.name.trim().is_empty() {
        hostname.to_owned()
    } else {
        clip(request.name.trim())
    };
    let row = AgentRow {
        id: agent_id.clone(),
        tenant_id: tenant_id.clone(),
        group_id: group_id.clone(),
        name,
        hostname: hostname.to_owned(),
        version: String::new(),
        enrolled_at: now,
        last_seen: Some(now),
        cert_not_after: signed.not_after_unix,
        revoked_at: None,
    };
    if let Err(e) = core.store.create_agent(&row, &token_id).await {
        warn!("cannot record enrolled agent: {e}");
        return reject(
            RejectCode::Internal,
            "the control plane could not record the agent; ask for a new token",
        );
    }
    info!(%agent_id, %group_id, %tenant_id, "agent enrolled");
    if crate::identity::audit::record(
        &core.store,
        Some(&tenant_id),
        &format!("agent:{agent_id}"),
        "agent.enroll",
        ("agent", &agent_id),
        serde_json::json!({"group_id": group_id, "enrollment_token_id": token_id, "hostname": hostname}),
    )
    .await
    .is_err()
    {
        return reject(
            RejectCode::Internal,
            "the control plane could not record the enrollment; try again",
        );
    }
    ControlToAgent::Enrolled(Enrolled {
        agent_id,
        tenant_id,
        group_id,
        certificate_der: signed.der,
        ca_certificate_der: core.ca.cert_der().to_vec(),
        not_after_unix: signed.not_after_unix,
    })
}

//! The tunnel client: dials out to the control plane over QUIC with mutual
//! TLS (or, with `tunnel.transport = "wss"`, over TCP: the same mutual TLS,
//! a WebSocket, multiplexed streams), keeps the connection alive, serves
//! calls on the streams the control plane opens, and reconnects forever
//! with full-jitter exponential backoff.
//!
//! The agent never exits because the control plane is unreachable; it exits
//! only on shutdown, or when the control plane says it was revoked or does
//! not know it (enrolling again is then the only way back).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dibop_protocol::{
    AgentToControl, ControlToAgent, Heartbeat, Hello, MAX_FRAME_LEN, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION, RejectCode, RenewCertificate, codes,
};
use rustls::pki_types::CertificateDer;
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{AgentConfig, Transport};
use crate::enroll::{client_endpoint, hostname, resolve};
use crate::identity::{Identity, IdentityError};
use dibop_runtime::Runtime;
use dibop_runtime::link::{Link, LinkError, RecvHalf, SendHalf};
use dibop_runtime::support::{now_unix, rfc3339};
use dibop_runtime::tls::{
    ALPN_TCP, TUNNEL_SERVER_NAME, WS_PATH, agent_client_config, agent_tls, transport,
};
use dibop_runtime::wire::{MAX_CONTROL_FRAME_LEN, read_frame, write_frame};

/// Why the agent stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Identity files missing or damaged.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The control plane revoked this agent.
    #[error(
        "this agent was revoked by the control plane ({0}): enroll it again with a new token to bring it back"
    )]
    Revoked(String),
    /// The control plane does not know this agent.
    #[error("the control plane does not accept this agent's certificate ({0}): enroll it again")]
    Unauthenticated(String),
    /// The client certificate expired while the agent was offline.
    #[error(
        "this agent's certificate expired at {0} while it could not reach the control plane: enroll it again"
    )]
    CertificateExpired(String),
    /// Local setup failed.
    #[error("{0}")]
    Setup(String),
    /// The tunnel stayed down longer than `--exit-on-unhealthy` allows.
    #[error("{0}")]
    Unhealthy(String),
}

/// How long a dial or handshake may take before it counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Calls still running at shutdown get this long to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that lived this long resets the backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);

enum SessionEnd {
    Shutdown,
    Retry(String),
    Fatal(RunError),
}

/// Full-jitter exponential backoff: a uniform delay in `[0, min(cap, base·2^n)]`.
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(cap);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=millis))
}

struct Shared {
    config: AgentConfig,
    runtime: Runtime,
    limiter: Semaphore,
    in_flight: AtomicU32,
    identity: Mutex<Identity>,
    data_dir: PathBuf,
    status: crate::status::Reporter,
    /// Since when the tunnel has been down (the start, or when it last went down).
    down_since: std::sync::Mutex<Instant>,
}

impl Shared {
    fn down_since(&self) -> Instant {
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark_down(&self) {
        *self.down_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

/// Runs the agent until `shutdown` is cancelled or a fatal error.
pub async fn run(
    config: AgentConfig,
    data_dir: &Path,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let identity = Identity::load(data_dir)?;
    let runtime = Runtime::new(
        config.allow.clone(),
        &identity.meta.agent_id,
        config.max_response_bytes,
        config.max_timeout,
    )
    .map_err(|e| RunError::Setup(format!("cannot build the HTTP client: {e}")))?
    .with_local_secrets(data_dir);
    info!(
        agent_id = %identity.meta.agent_id,
        group_id = %identity.meta.group_id,
        allow = ?config.allow.entries().collect::<Vec<_>>(),
        "dibop-agent {} starting", env!("CARGO_PKG_VERSION")
    );
    if config.allow.is_empty() {
        warn!(
            "the allow-list is empty: every call will be refused with policy_denied (set policy.allow in the config file)"
        );
    }
    let status = crate::status::Reporter::new(data_dir, &identity.meta.agent_id);
    let shared = Arc::new(Shared {
        down_since: std::sync::Mutex::new(Instant::now()),
        status,
        limiter: Semaphore::new(config.max_concurrent_calls as usize),
        config,
        runtime,
        in_flight: AtomicU32::new(0),
        identity: Mutex::new(identity),
        data_dir: data_dir.to_owned(),
    });
    // `dibop-agent status` reads the state from the data directory.
    let refresher = {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(crate::status::REFRESH_SECS));
            loop {
                tokio::select! {
                    _ = tick.tick() => shared.status.write(shared.in_flight.load(Ordering::Relaxed)),
                    _ = shutdown.cancelled() => return,
                }
            }
        })
    };
    let _stop_refresher = AbortOnDrop(refresher);
    let _stop_metrics = match shared.config.metrics_listen {
        Some(addr) => Some(AbortOnDrop(serve_metrics(shared.clone(), addr).await?)),
        None => None,
    };
    let mut attempt = 0u32;
    loop {
        if let Some(limit) = shared.config.exit_on_unhealthy {
            let down = shared.down_since().elapsed();
            if down >= limit {
                let e = RunError::Unhealthy(format!(
                    "the tunnel has been down for {} s, longer than --exit-on-unhealthy allows: exiting so that the supervisor restarts the agent",
                    down.as_secs()
                ));
                shared.status.set("stopped", "", Some(e.to_string()), 0);
                return Err(e);
            }
        }
        let started = Instant::now();
        match session(&shared, &shutdown).await {
            SessionEnd::Shutdown => {
                shared.status.set("stopped", "", None, 0);
                return Ok(());
            }
            SessionEnd::Fatal(e) => {
                shared.status.set("stopped", "", Some(e.to_string()), 0);
                return Err(e);
            }
            SessionEnd::Retry(reason) => {
                shared.status.set(
                    "offline",
                    "",
                    Some(reason.clone()),
                    shared.in_flight.load(Ordering::Relaxed),
                );
                if started.elapsed() >= STABLE_CONNECTION {
                    attempt = 0;
                }
                let mut delay = backoff_delay(
                    attempt,
                    shared.config.reconnect_initial,
                    shared.config.reconnect_max,
                );
                if let Some(limit) = shared.config.exit_on_unhealthy {
                    // Wake up in time to give up when the limit is reached.
                    let left = limit.saturating_sub(shared.down_since().elapsed());
                    delay = delay.min(left);
                }
                attempt = attempt.saturating_add(1);
                warn!(
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "tunnel down: {reason}"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }
}

async fn session(shared: &Arc<Shared>, shutdown: &CancellationToken) -> SessionEnd {
    let (address, client_config, tcp_tls, agent_id) = {
        let identity = shared.identity.lock().await;
        if identity.meta.not_after_unix <= now_unix() {
            return SessionEnd::Fatal(RunError::CertificateExpired(rfc3339(
                identity.meta.not_after_unix,
            )));
        }
        let address = shared
            .config
            .control_plane
            .clone()
            .unwrap_or_else(|| identity.meta.control_plane.clone());
        let transport = transport(
            shared.config.idle_timeout,
            Some(shared.config.keep_alive),
            shared.config.max_concurrent_calls + 8,
        );
        let config = agent_client_config(
            CertificateDer::from(identity.ca_der.clone()),
            CertificateDer::from(identity.cert_der.clone()),
            identity.key(),
            transport,
        );
        let tcp_tls = agent_tls(
            CertificateDer::from(identity.ca_der.clone()),
            CertificateDer::from(identity.cert_der.clone()),
            identity.key(),
            ALPN_TCP,
        );
        match config.and_then(|c| Ok((c, tcp_tls?))) {
            Ok((c, t)) => (address, c, t, identity.meta.agent_id.clone()),
            Err(e) => {
                return SessionEnd::Fatal(RunError::Setup(format!(
                    "identity files are unusable: {e}"
                )));
            }
        }
    };
    shared.status.set(
        "connecting",
        &address,
        None,
        shared.in_flight.load(Ordering::Relaxed),
    );
    let wss_target = shared.config.wss.clone().unwrap_or_else(|| address.clone());
    let max_streams = shared.config.max_concurrent_calls as usize + 8;
    let quic = dial_quic(&address, client_config);
    let wss = dial_wss(
        &wss_target,
        tcp_tls,
        max_streams,
        shared.config.proxy.as_ref(),
    );
    let dialled = async {
        match shared.config.transport {
            Transport::Quic => quic.await.map(|(link, endpoint)| (link, Some(endpoint))),
            Transport::Wss => wss.await.map(|link| (link, None)),
            Transport::Auto => race(&shared.data_dir, quic, wss).await,
        }
    };
    let (connection, endpoint) = tokio::select! {
        d = dialled => match d {
            Ok(d) => d,
            Err(e) => return SessionEnd::Retry(e),
        },
        _ = shutdown.cancelled() => return SessionEnd::Shutdown,
    };
    let transport_name = connection.transport();
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&connection)).await;
    let (send, recv, heartbeat_every, version) = match handshake {
        Ok(Ok(h)) => h,
        Ok(Err(end)) => return end,
        Err(_) => {
            return SessionEnd::Retry("the control plane did not answer the handshake".into());
        }
    };
    info!(%agent_id, control_plane = %address, transport = transport_name, "tunnel up");
    shared.status.transport(transport_name);
    shared.status.set(
        "online",
        &address,
        None,
        shared.in_flight.load(Ordering::Relaxed),
    );

    let mut calls = JoinSet::new();
    let control = control_loop(shared.clone(), send, recv, heartbeat_every);
    tokio::pin!(control);
    let end = loop {
        tokio::select! {
            end = &mut control => break end,
            incoming = connection.accept_bi() => match incoming {
                Ok((send, recv)) => {
                    let shared = shared.clone();
                    calls.spawn(async move { serve_call(&shared, send, recv, version).await });
                }
                Err(e) => break connection_end(e),
            },
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
            _ = shutdown.cancelled() => break SessionEnd::Shutdown,
        }
    };
    // It was up: from now on it counts as down (for --exit-on-unhealthy).
    shared.mark_down();
    if matches!(end, SessionEnd::Shutdown) {
        info!(
            in_flight = calls.len(),
            "shutting down: finishing calls in flight"
        );
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while calls.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("calls still running after {DRAIN_TIMEOUT:?}; abandoning them");
        }
        connection.close(codes::CLOSE_SHUTDOWN, b"agent shutting down");
        if let Some(endpoint) = endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        } else {
            let _ = tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
        }
    } else {
        calls.abort_all();
    }
    end
}

fn connection_end(error: LinkError) -> SessionEnd {
    match error {
        LinkError::ClosedByPeer { code, reason } if code == codes::CLOSE_REVOKED => {
            SessionEnd::Fatal(RunError::Revoked(reason))
        }
        LinkError::ClosedByPeer { reason, .. } => {
            SessionEnd::Retry(format!("the control plane closed the tunnel: {reason}"))
        }
        other => SessionEnd::Retry(format!("connection lost: {other}")),
    }
}

/// Dials QUIC: resolve, a UDP socket, the TLS handshake with the agent's
/// certificate, within the handshake timeout.
async fn dial_quic(
    address: &str,
    config: quinn::ClientConfig,
) -> Result<(Link, quinn::Endpoint), String> {
    let remote = resolve(address).await?;
    let endpoint = client_endpoint(remote).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let connecting = endpoint
        .connect_with(config, remote, TUNNEL_SERVER_NAME)
        .map_err(|e| format!("cannot dial {address}: {e}"))?;
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(c)) => Ok((Link::Quic(c), endpoint)),
        Ok(Err(e)) => Err(format!("cannot connect to {address}: {e}")),
        Err(_) => Err(format!(
            "no answer from {address} within {HANDSHAKE_TIMEOUT:?}"
        )),
    }
}

/// Dials the TCP transport: TCP, TLS (with the agent's certificate, or for
/// enrollment without one), the WebSocket upgrade, then streams over it;
/// within the handshake timeout.
pub(crate) async fn dial_wss(
    target: &str,
    tls: rustls::ClientConfig,
    max_streams: usize,
    proxy: Option<&crate::proxy::Proxy>,
) -> Result<Link, String> {
    let dial = async {
        let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
        // Through a proxy, the proxy resolves the control plane's name.
        let (tcp, remote) = match proxy.filter(|p| p.applies_to(host.trim_matches(['[', ']']))) {
            Some(p) => {
                let tcp = p.connect(target).await?;
                let via = tcp.peer_addr().map_err(|e| e.to_string())?;
                (tcp, via)
            }
            None => {
                let remote = resolve(target).await?;
                let tcp = tokio::net::TcpStream::connect(remote)
                    .await
                    .map_err(|e| e.to_string())?;
                (tcp, remote)
            }
        };
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(TUNNEL_SERVER_NAME)
            .map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let url = format!("wss://{target}{WS_PATH}");
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .map_err(|e| format!("WebSocket: {e}"))?;
        let mux = dibop_runtime::mux::Mux::new(ws, dibop_runtime::mux::Side::Agent, max_streams);
        Ok::<_, String>(Link::tcp(mux, remote, None))
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, dial).await {
        Ok(Ok(link)) => Ok(link),
        Ok(Err(e)) => Err(format!("cannot connect to {target} over TCP: {e}")),
        Err(_) => Err(format!(
            "no answer from {target} over TCP within {HANDSHAKE_TIMEOUT:?}"
        )),
    }
}

/// How long the remembered transport dials alone before the other joins.
const HEAD_START: Duration = Duration::from_millis(800);
/// Where the agent remembers which transport worked on this network.
const REMEMBERED: &str = "transport";

type Dialled = Result<(Link, Option<quinn::Endpoint>), String>;
type Dialling<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Dialled> + Send + 'a>>;

/// `transport = "auto"`: the transport that worked last time (QUIC at
/// first) dials alone for a head start, then both race; the first to
/// connect wins and is remembered for the next start.
async fn race(
    data_dir: &Path,
    quic: impl std::future::Future<Output = Result<(Link, quinn::Endpoint), String>> + Send,
    wss: impl std::future::Future<Output = Result<Link, String>> + Send,
) -> Dialled {
    let quic = async { quic.await.map(|(l, e)| (l, Some(e))) };
    let wss = async { wss.await.map(|l| (l, None)) };
    let wss_first = remembered(data_dir) == Some(Transport::Wss);
    let (mut first, mut second): (Dialling<'_>, Dialling<'_>) = if wss_first {
        (Box::pin(wss), Box::pin(quic))
    } else {
        (Box::pin(quic), Box::pin(wss))
    };
    let won = tokio::select! {
        r = &mut first => match r {
            Ok(d) => Ok(d),
            Err(e) => second.await.map_err(|e2| format!("{e}; {e2}")),
        },
        _ = tokio::time::sleep(HEAD_START) => tokio::select! {
            r = &mut first => match r {
                Ok(d) => Ok(d),
                Err(e) => second.await.map_err(|e2| format!("{e}; {e2}")),
            },
            r = &mut second => match r {
                Ok(d) => Ok(d),
                Err(e) => first.await.map_err(|e2| format!("{e2}; {e}")),
            },
        },
    };
    if let Ok((link, _)) = &won {
        remember(data_dir, link.transport());
    }
    won
}

/// The transport remembered for this network, if any.
fn remembered(data_dir: &Path) -> Option<Transport> {
    match std::fs::read_to_string(data_dir.join(REMEMBERED))
        .ok()?
        .trim()
    {
        "quic" => Some(Transport::Quic),
        "wss" => Some(Transport::Wss),
        _ => None,
    }
}

/// Remembers the transport that connected (written only when it changes).
fn remember(data_dir: &Path, transport: &str) {
    let path = data_dir.join(REMEMBERED);
    if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == transport) {
        return;
    }
    let tmp = data_dir.join(format!("{REMEMBERED}.tmp"));
    let written =
        std::fs::write(&tmp, format!("{transport}\n")).and_then(|()| std::fs::rename(&tmp, &path));
    match written {
        Ok(()) => info!(
            transport,
            "remembered the transport that works on this network"
        ),
        Err(e) => warn!("cannot remember the transport in {}: {e}", path.display()),
    }
}

async fn handshake(connection: &Link) -> Result<(SendHalf, RecvHalf, Duration, u16), SessionEnd> {
    let retry = |what: &str, e: &dyn std::fmt::Display| SessionEnd::Retry(format!("{what}: {e}"));
    let (mut send, mut recv) = connection.open_bi().await.map_err(connection_end)?;
    let hello = AgentToControl::Hello(Hello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        hostname: hostname(),
    });
    write_frame(&mut send, &hello)
        .await
        .map_err(|e| retry("sending hello failed", &e))?;
    match read_frame::<ControlToAgent, _>(&mut recv, MAX_CONTROL_FRAME_LEN).await {
        Ok(Some(ControlToAgent::Welcome(w))) => {
            debug!(version = w.version, "handshake accepted");
            Ok((
                send,
                recv,
                Duration::from_millis(u64::from(w.heartbeat_interval_ms.max(100))),
                w.version,
            ))
        }
        Ok(Some(ControlToAgent::Rejected(r))) => Err(match r.code {
            RejectCode::Revoked => SessionEnd::Fatal(RunError::Revoked(r.message)),
            RejectCode::Unauthenticated => SessionEnd::Fatal(RunError::Unauthenticated(r.message)),
            _ => SessionEnd::Retry(format!(
                "the control plane refused the handshake: {}",
                r.message
            )),
        }),
        Ok(other) => Err(SessionEnd::Retry(format!(
            "unexpected handshake answer: {other:?}"
        ))),
        Err(e) => match connection.close_reason() {
            Some(reason) => Err(connection_end(reason)),
            None => Err(retry("handshake failed", &e)),
        },
    }
}

/// Heartbeats and certificate renewal on the control stream.
async fn control_loop(
    shared: Arc<Shared>,
    mut send: SendHalf,
    mut recv: RecvHalf,
    every: Duration,
) -> SessionEnd {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut last_ack = Instant::now();
    let mut renewal_asked_at: Option<Instant> = None;
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::channel(8);
    // The reader owns the receive half so a partly read frame is never dropped.
    let reader = tokio::spawn(async move {
        loop {
            let frame = read_frame::<ControlToAgent, _>(&mut recv, MAX_CONTROL_FRAME_LEN).await;
            let stop = !matches!(frame, Ok(Some(_)));
            if frames_tx.send(frame).await.is_err() || stop {
                break;
            }
        }
    });
    let _reader = AbortOnDrop(reader);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if last_ack.elapsed() > every * 4 {
                    return SessionEnd::Retry(format!("no heartbeat answer for {:?}", last_ack.elapsed()));
                }
                seq += 1;
                let beat = AgentToControl::Heartbeat(Heartbeat { seq, in_flight: shared.in_flight.load(Ordering::Relaxed) });
                if let Err(e) = write_frame(&mut send, &beat).await {
                    return SessionEnd::Retry(format!("heartbeat failed: {e}"));
                }
                let due = shared.identity.lock().await.wants_renewal(now_unix());
                let waiting = renewal_asked_at.is_some_and(|t| t.elapsed() < Duration::from_secs(60));
                if due && !waiting {
                    match renewal_request(&shared).await {
                        Ok(req) => {
                            if let Err(e) = write_frame(&mut send, &req).await {
                                return SessionEnd::Retry(format!("renewal request failed: {e}"));
                            }
                            renewal_asked_at = Some(Instant::now());
                            info!("asked the control plane to renew this agent's certificate");
                        }
                        Err(e) => warn!("cannot make a renewal request: {e}"),
                    }
                }
            }
            frame = frames_rx.recv() => match frame {
                Some(Ok(Some(ControlToAgent::HeartbeatAck(_)))) => last_ack = Instant::now(),
                Some(Ok(Some(ControlToAgent::CertificateRenewed(renewed)))) => {
                    let mut identity = shared.identity.lock().await;
                    match identity.renew(renewed.certificate_der, renewed.not_after_unix, now_unix()) {
                        Ok(()) => info!(not_after = %rfc3339(renewed.not_after_unix), dir = %shared.data_dir.display(), "certificate renewed"),
                        Err(e) => warn!("cannot store the renewed certificate: {e}"),
                    }
                    renewal_asked_at = None;
                }
                Some(Ok(Some(ControlToAgent::Rejected(r)))) if r.code == RejectCode::Revoked => {
                    return SessionEnd::Fatal(RunError::Revoked(r.message));
                }
                Some(Ok(Some(other))) => warn!("ignoring unexpected control message: {other:?}"),
                Some(Ok(None)) | None => return SessionEnd::Retry("the control plane closed the control stream".into()),
                Some(Err(e)) => return SessionEnd::Retry(format!("control stream failed: {e}")),
            },
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `GET /metrics` (Prometheus text) on `addr`, until aborted.
async fn serve_metrics(
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
) -> Result<tokio::task::JoinHandle<()>, RunError> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        RunError::Setup(format!(
            "cannot serve metrics on {addr} (metrics.listen): {e}"
        ))
    })?;
    info!(%addr, "serving metrics at /metrics");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
                    {
                        Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let (status, body) = if request.starts_with(b"GET /metrics ") {
                    (
                        "200 OK",
                        shared
                            .status
                            .render(shared.in_flight.load(Ordering::Relaxed)),
                    )
                } else {
                    ("404 Not Found", "only /metrics is here\n".to_owned())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    }))
}

async fn renewal_request(shared: &Shared) -> anyhow::Result<AgentToControl> {
    let identity = shared.identity.lock().await;
    let key = rcgen::KeyPair::try_from(identity.key_pkcs8.as_slice())?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, identity.meta.agent_id.clone());
    let csr = params.serialize_request(&key)?;
    Ok(AgentToControl::RenewCertificate(RenewCertificate {
        csr_der: csr.der().to_vec(),
    }))
}

struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one stream the control plane opened: a call (read the request,
/// acknowledge it from protocol 3 on, perform it unless the control plane
/// cancels, answer) or a liveness probe.
async fn serve_call(shared: &Shared, mut send: SendHalf, mut recv: RecvHalf, version: u16) {
    let message = match read_frame::<ControlToAgent, _>(&mut recv, MAX_FRAME_LEN).await {
        Ok(Some(ControlToAgent::Ping(n))) => {
            if write_frame(&mut send, &AgentToControl::Pong(n))
                .await
                .is_ok()
            {
                send.finish().await;
            }
            return;
        }
        Ok(Some(m @ (ControlToAgent::Call(_) | ControlToAgent::Invoke(_)))) => m,
        Ok(other) => {
            warn!("call stream did not start with a call: {other:?}");
            send.reset(codes::CLOSE_PROTOCOL_ERROR);
            return;
        }
        Err(e) => {
            debug!("call stream failed before the request arrived: {e}");
            return;
        }
    };
    if version >= 3 {
        // Taken on: from here the control plane treats the call as possibly
        // performed, and no longer moves it to another agent on its own.
        let call_id = match &message {
            ControlToAgent::Call(r) => r.call_id,
            ControlToAgent::Invoke(r) => r.call.call_id,
            _ => 0,
        };
        let accepted = AgentToControl::Accepted(dibop_protocol::CallAccepted { call_id });
        if let Err(e) = write_frame(&mut send, &accepted).await {
            debug!(call_id, "could not acknowledge the call: {e}");
            return;
        }
    }
    let Ok(_permit) = shared.limiter.acquire().await else {
        return;
    };
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    let _guard = InFlight(&shared.in_flight);
    let (call_id, url) = match &message {
        ControlToAgent::Call(r) => (r.call_id, r.url.clone()),
        ControlToAgent::Invoke(r) => (r.call.call_id, r.call.url.clone()),
        _ => return,
    };
    let started = Instant::now();
    let work = async {
        match &message {
            ControlToAgent::Invoke(r) => {
                AgentToControl::InvokeResult(Box::new(shared.runtime.invoke(r).await))
            }
            ControlToAgent::Call(r) => AgentToControl::CallResult(shared.runtime.perform(r).await),
            _ => unreachable!("filtered above"),
        }
    };
    let answer = tokio::select! {
        r = work => r,
        _ = async { tokio::select! { _ = send.stopped() => {}, _ = recv.abandoned() => {} } } => {
            // Without the query: it may carry personal data.
            let path = url.split('?').next().unwrap_or_default();
            info!(call_id, url = %path, "call cancelled by the control plane");
            return;
        }
    };
    let outcome = match &answer {
        AgentToControl::CallResult(r) => Some(r),
        AgentToControl::InvokeResult(i) => Some(&i.result),
        _ => None,
    };
    if let Some(r) = outcome {
        debug!(call_id, status = ?r.status, ok = r.ok, "call done");
        shared.status.call(r.ok, started.elapsed().as_secs_f64());
    }
    if let Err(e) = write_frame(&mut send, &answer).await {
        debug!(call_id, "could not send the result: {e}");
        return;
    }
    send.finish().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for attempt in 0..40 {
            let d = backoff_delay(attempt, base, cap);
            assert!(d <= cap);
            assert!(d <= base * 2u32.saturating_pow(attempt.min(20)));
        }
        let spread: std::collections::HashSet<_> =
            (0..50).map(|_| backoff_delay(10, base, cap)).collect();
        assert!(spread.len() > 10, "delays must be jittered");
    }
}

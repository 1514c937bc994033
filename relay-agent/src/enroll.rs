//! `dibop-agent enroll <TOKEN>`: redeem an enrollment token for an identity.
//!
//! The agent makes its own key pair here; only a certificate signing request
//! leaves the machine. The control plane is verified against the CA
//! fingerprint inside the token before the token's secret is sent.

use std::net::SocketAddr;
use std::path::Path;

use dibop_protocol::{
    AgentToControl, ControlToAgent, EnrollRequest, EnrollmentToken, Hello, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};

use crate::identity::{Identity, IdentityError, IdentityMeta};
use dibop_runtime::link::Link;
use dibop_runtime::support::{now_unix, rfc3339};
use dibop_runtime::tls::{
    ALPN_TCP, TUNNEL_SERVER_NAME, enrollment_client_config, enrollment_tls, sha256,
};
use dibop_runtime::wire::{MAX_CONTROL_FRAME_LEN, read_frame, write_frame};

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The token text is not a token.
    #[error(transparent)]
    Token(#[from] dibop_protocol::TokenError),
    /// The token's expiry has passed (checked locally first).
    #[error("this enrollment token expired at {0}: ask the admin for a new one")]
    Expired(String),
    /// The control plane could not be reached.
    #[error("cannot reach the control plane at {address}: {reason}")]
    Unreachable {
        /// Where we dialled.
        address: String,
        /// Why it failed.
        reason: String,
    },
    /// The control plane refused the enrollment.
    #[error("the control plane refused the enrollment: {0}")]
    Refused(String),
    /// The control plane answered something unexpected.
    #[error("unexpected answer from the control plane: {0}")]
    Protocol(String),
    /// Local files.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Key or CSR generation.
    #[error("cannot create the agent's key: {0}")]
    Key(String),
}

/// Resolves `host:port` to a socket address.
pub async fn resolve(address: &str) -> Result<SocketAddr, String> {
    match tokio::net::lookup_host(address).await {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{address} resolves to no address")),
        Err(e) => Err(format!("cannot resolve {address}: {e}")),
    }
}

/// Opens a QUIC endpoint suitable for dialling `remote`.
pub fn client_endpoint(remote: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let bind: SocketAddr = if remote.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(std::io::Error::other)?;
    quinn::Endpoint::client(bind)
}

/// The host name of this machine, for display.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// How long enrollment waits for QUIC before trying TCP.
const QUIC_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Reaches the control plane for enrollment: QUIC, or, when QUIC does not
/// connect within a few seconds (outbound UDP blocked), TLS and a WebSocket
/// over TCP to the same address.
async fn dial(
    address: &str,
    ca_sha256: [u8; 32],
) -> Result<(Link, Option<quinn::Endpoint>), String> {
    let quic = async {
        let remote = resolve(address).await?;
        let endpoint = client_endpoint(remote).map_err(|e| e.to_string())?;
        let config = enrollment_client_config(ca_sha256).map_err(|e| e.to_string())?;
        let connecting = endpoint
            .connect_with(config, remote, TUNNEL_SERVER_NAME)
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(QUIC_PATIENCE, connecting).await {
            Ok(Ok(c)) => Ok((Link::Quic(c), Some(endpoint))),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no QUIC answer within {QUIC_PATIENCE:?}")),
        }
    };
    let quic_error = match quic.await {
        Ok(dialled) => return Ok(dialled),
        Err(e) => e,
    };
    let tls = enrollment_tls(ca_sha256, ALPN_TCP).map_err(|e| e.to_string())?;
    let proxy = match crate::proxy::Proxy::from_env() {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return Err(format!("HTTPS_PROXY in the environment {e}")),
        None => None,
    };
    match crate::tunnel::dial_wss(address, tls, 4, proxy.as_ref()).await {
        Ok(link) => Ok((link, None)),
        Err(tcp_error) => Err(format!("over QUIC: {quic_error}; {tcp_error}")),
    }
}

/// Redeems `token_text` and stores the identity in `data_dir`.
pub async fn enroll(
    token_text: &str,
    data_dir: &Path,
    name: Option<&str>,
    force: bool,
) -> Result<Identity, EnrollError> {
    let token = EnrollmentToken::decode(token_text)?;
    if token.expires_at_unix < now_unix() {
        return Err(EnrollError::Expired(rfc3339(token.expires_at_unix)));
    }
    if Identity::exists(data_dir) && !force {
        return Err(IdentityError::AlreadyEnrolled(data_dir.display().to_string()).into());
    }
    let key = rcgen::KeyPair::generate().map_err(|e| EnrollError::Key(e.to_string()))?;
    let host = hostname();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| EnrollError::Key(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host.clone());
    let csr = params
        .serialize_request(&key)
        .map_err(|e| EnrollError::Key(e.to_string()))?;

    let unreachable = |reason: String| EnrollError::Unreachable {
        address: token.address.clone(),
        reason,
    };
    let (connection, endpoint) = dial(&token.address, token.ca_sha256)
        .await
        .map_err(unreachable)?;
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let protocol = |e: dibop_runtime::wire::WireError| EnrollError::Protocol(e.to_string());
    write_frame(
        &mut send,
        &AgentToControl::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            hostname: host.clone(),
        }),
    )
    .await
    .map_err(protocol)?;
    match read_frame::<ControlToAgent, _>(&mut recv, MAX_CONTROL_FRAME_LEN)
        .await
        .map_err(protocol)?
    {
        Some(ControlToAgent::Welcome(_)) => {}
        Some(ControlToAgent::Rejected(r)) => return Err(EnrollError::Refused(r.message)),
        other => {
            return Err(EnrollError::Protocol(format!(
                "expected Welcome, got {other:?}"
            )));
        }
    }
    write_frame(
        &mut send,
        &AgentToControl::Enroll(EnrollRequest {
            token_secret: token.secret.clone(),
            csr_der: csr.der().to_vec(),
            name: name.map(str::to_owned).unwrap_or(host),
        }),
    )
    .await
    .map_err(protocol)?;
    let answer = read_frame::<ControlToAgent, _>(&mut recv, MAX_CONTROL_FRAME_LEN)
        .await
        .map_err(protocol)?;
    send.finish().await;
    connection.close(0, b"enrolled");
    match endpoint {
        Some(endpoint) => endpoint.wait_idle().await,
        None => {
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), connection.closed()).await;
        }
    }
    let enrolled = match answer {
        Some(ControlToAgent::Enrolled(e)) => e,
        Some(ControlToAgent::Rejected(r)) => return Err(EnrollError::Refused(r.message)),
        other => {
            return Err(EnrollError::Protocol(format!(
                "expected Enrolled, got {other:?}"
            )));
        }
    };
    if sha256(&enrolled.ca_certificate_der) != token.ca_sha256 {
        return Err(EnrollError::Protocol(
            "the CA certificate sent does not match the token's fingerprint".into(),
        ));
    }
    let meta = IdentityMeta {
        agent_id: enrolled.agent_id,
        tenant_id: enrolled.tenant_id,
        group_id: enrolled.group_id,
        control_plane: token.address.clone(),
        not_after_unix: enrolled.not_after_unix,
        issued_at_unix: now_unix(),
    };
    Ok(Identity::store(
        data_dir,
        meta,
        key.serialize_der(),
        enrolled.certificate_der,
        enrolled.ca_certificate_der,
    )?)
}

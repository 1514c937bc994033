//! TLS and QUIC settings of the tunnel, shared by both ends.
//!
//! The control plane runs its own CA. Its tunnel certificate always names
//! [`TUNNEL_SERVER_NAME`], whatever address agents dial, because agents
//! authenticate it through the pinned CA, not through public DNS names.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The name in the control plane's tunnel certificate.
pub const TUNNEL_SERVER_NAME: &str = "tunnel.dibop.internal";
/// ALPN protocol id of the tunnel over QUIC.
pub const ALPN: &[u8] = b"dibop/1";
/// ALPN protocol id of the tunnel over TCP (a WebSocket upgrade is HTTP/1.1).
pub const ALPN_TCP: &[u8] = b"http/1.1";
/// The path the TCP transport's WebSocket is served on.
pub const WS_PATH: &str = "/tunnel";

/// Installs aws-lc-rs as the process's rustls crypto provider. Idempotent;
/// every binary and test harness calls it first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// SHA-256 of a DER certificate: the fingerprint carried by enrollment tokens.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Encodes DER as PEM.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Transport settings of the tunnel. `keep_alive` must stay below
/// `idle_timeout`; only the agent sets a keep-alive.
pub fn transport(
    idle_timeout: Duration,
    keep_alive: Option<Duration>,
    max_bidi_streams: u32,
) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(quinn::IdleTimeout::try_from(idle_timeout).ok());
    t.keep_alive_interval(keep_alive);
    t.max_concurrent_bidi_streams(max_bidi_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    // Bounded memory per connection: quinn's connection window defaults to
    // unbounded. 16 MiB holds one maximum frame in flight.
    t.receive_window((16u32 * 1024 * 1024).into());
    t.stream_receive_window((2u32 * 1024 * 1024).into());
    t.send_window(16 * 1024 * 1024);
    // Datagrams are unused.
    t.datagram_receive_buffer_size(None);
    t
}

/// Verifies the control plane against the CA whose fingerprint the enrollment
/// token carries, before the agent has the CA certificate itself.
#[derive(Debug)]
struct PinnedCaVerifier {
    ca_sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| sha256(c) == self.ca_sha256)
            .ok_or_else(|| {
                rustls::Error::General(
                "the control plane's CA does not match the fingerprint in the enrollment token: \
                 check the address, or ask for a new token"
                    .into(),
            )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn quic_client(
    tls: rustls::ClientConfig,
    transport: quinn::TransportConfig,
) -> anyhow::Result<quinn::ClientConfig> {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// TLS settings for enrollment: no client certificate, the control plane
/// pinned by the CA fingerprint the token carries.
pub fn enrollment_tls(ca_sha256: [u8; 32], alpn: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier {
            ca_sha256,
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// Client config for enrollment over QUIC.
pub fn enrollment_client_config(ca_sha256: [u8; 32]) -> anyhow::Result<quinn::ClientConfig> {
    let tls = enrollment_tls(ca_sha256, ALPN)?;
    quic_client(
        tls,
        transport(Duration::from_secs(30), Some(Duration::from_secs(5)), 1),
    )
}

/// TLS client settings of the tunnel: mutual TLS 1.3 with the agent's
/// certificate, the control plane authenticated by the agent's CA.
pub fn agent_tls(
    ca_der: CertificateDer<'static>,
    cert_der: CertificateDer<'static>,
    key_der: PrivateKeyDer<'static>,
    alpn: &[u8],
) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca_der)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert_der], key_der)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// Client config for the tunnel over QUIC.
pub fn agent_client_config(
    ca_der: CertificateDer<'static>,
    cert_der: CertificateDer<'static>,
    key_der: PrivateKeyDer<'static>,
    transport: quinn::TransportConfig,
) -> anyhow::Result<quinn::ClientConfig> {
    quic_client(agent_tls(ca_der, cert_der, key_der, ALPN)?, transport)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn pem_wraps_at_64_columns_and_parses_back() {
        let pem = to_pem("CERTIFICATE", &[7u8; 100]);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(der.as_ref(), &[7u8; 100][..]);
    }
}

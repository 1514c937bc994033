//! TLS settings and mutual TLS against a real rustls server that demands a
//! client certificate from its own CA: extra trusted CA, `reject
//! unauthorized` off, the client certificate, and the TLS Error outcome.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use dibop_control_plane::testing::TestCp;

struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// (certificate PEM, key PEM, certificate DER, key DER) signed by `ca`.
fn leaf(
    ca: &Ca,
    names: Vec<String>,
) -> (
    String,
    String,
    CertificateDer<'static>,
    PrivateKeyDer<'static>,
) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &ca.issuer)
        .unwrap();
    (
        cert.pem(),
        key.serialize_pem(),
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// A TLS server that requires a client certificate of `client_ca` and
/// answers every request with a small JSON body. Returns its port.
async fn mtls_server(server_ca: &Ca, client_ca: &Ca) -> u16 {
    let (_, _, cert, key) = leaf(server_ca, vec!["127.0.0.1".into(), "localhost".into()]);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.der.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"status":"ok","mtls":true}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn mutual_tls_extra_ca_and_tls_errors() {
    dibop_runtime::install_crypto_provider();
    let (server_ca, client_ca, stranger_ca) = (
        ca("dealer server CA"),
        ca("dealer client CA"),
        ca("stranger"),
    );
    let port = mtls_server(&server_ca, &client_ca).await;
    let (client_cert, client_key, _, _) = leaf(&client_ca, vec!["dibop".into()]);
    let (stranger_cert, stranger_key, _, _) = leaf(&stranger_ca, vec!["dibop".into()]);

    let cp = TestCp::start().await;
    let send = |path: &str, body: Value| cp.post(path.to_owned(), body);
    let definition = json!({
        "format": "dibop.connector/v1", "name": "Dealer bank", "slug": "dealer-bank",
        "description": "A finance partner behind mutual TLS.", "category": "finance",
        "base_url": format!("https://127.0.0.1:{port}"), "documentation_url": "https://bank.example/docs",
        "auth": {"schemes": [{"type": "mutual_tls"}]}, "health_check": "health",
        "resilience": {"timeout_ms": 5000, "retries": {"max_attempts": 1}},
        "operations": [{"id": "health", "name": "Health", "method": "GET", "path": "/health",
            "parameters": [{"name": "deep", "in": "query", "type": "boolean"}], "response_schema": {"type": "object"}}]
    });
    let id = cp.publish(definition).await;
    let test = |cert: &str, key: &str, tls: Value| {
        send(
            "/connections/test",
            json!({"connector_id": id, "credentials": {"client_certificate": cert, "client_key": key}, "settings": {"tls": tls}}),
        )
    };

    // The dealer's CA trusted, the right client certificate: success.
    let (_, ok) = test(
        &client_cert,
        &client_key,
        json!({"extra_ca_pem": server_ca.pem}),
    )
    .await;
    assert_eq!(ok["outcome"], "success", "{ok}");
    // Without the dealer's CA the server is not trusted.
    let (_, untrusted) = test(&client_cert, &client_key, json!({})).await;
    assert_eq!(untrusted["outcome"], "tls_error", "{untrusted}");
    assert!(
        untrusted["detail"]
            .as_str()
            .unwrap()
            .contains("extra_ca_pem"),
        "{untrusted}"
    );
    // `reject_unauthorized: false` accepts it (test systems).
    let (_, lax) = test(
        &client_cert,
        &client_key,
        json!({"reject_unauthorized": false}),
    )
    .await;
    assert_eq!(lax["outcome"], "success", "{lax}");
    // A client certificate from another CA is refused by the server.
    let (_, stranger) = test(
        &stranger_cert,
        &stranger_key,
        json!({"extra_ca_pem": server_ca.pem}),
    )
    .await;
    assert_ne!(stranger["outcome"], "success", "{stranger}");
    // Not PEM at all: said so, without echoing the key.
    let (_, garbage) = test(
        "not a cert",
        "key-canary",
        json!({"extra_ca_pem": server_ca.pem}),
    )
    .await;
    assert_eq!(garbage["outcome"], "tls_error", "{garbage}");
    assert!(
        garbage["detail"]
            .as_str()
            .unwrap()
            .contains("not valid PEM"),
        "{garbage}"
    );
    assert!(!garbage.to_string().contains("key-canary"));
    // A saved connection invokes for real.
    let (status, created) = send(
        "/connections",
        json!({"connector_id": id, "activate": true, "credentials": {"client_certificate": client_cert, "client_key": client_key},
               "settings": {"tls": {"extra_ca_pem": server_ca.pem}}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (_, result) = send(
        &format!(
            "/connections/{}/operations/health/invoke",
            created["id"].as_str().unwrap()
        ),
        json!({}),
    )
    .await;
    assert_eq!(
        (result["ok"].as_bool(), result["body"]["mtls"].as_bool()),
        (Some(true), Some(true)),
        "{result}"
    );
}

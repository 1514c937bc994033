//! HTTP CONNECT proxies for the TCP transport: where a dealer's network
//! lets the web out only through a proxy, the agent asks it for a tunnel to
//! the control plane's TCP port and speaks TLS through it.
//!
//! The proxy comes from `tunnel.proxy` in the config, else from
//! `HTTPS_PROXY` (or `https_proxy`, `ALL_PROXY`), with `NO_PROXY` naming hosts
//! reached directly. Basic credentials go in the URL
//! (`http://user:password@proxy:3128`); the password is never shown.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A proxy to reach the control plane through.
#[derive(Clone)]
pub struct Proxy {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    no_proxy: Vec<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The largest CONNECT answer read.
const MAX_ANSWER: usize = 16 * 1024;

impl Proxy {
    /// Parses `http://[user[:password]@]host:port`.
    pub fn parse(url: &str) -> Result<Proxy, String> {
        let parsed = url::Url::parse(url).map_err(|_| {
            "must be a URL like http://proxy.example:3128 (credentials as http://user:password@host:port)"
                .to_owned()
        })?;
        if parsed.scheme() != "http" {
            return Err(format!(
                "`{}` proxies are not supported: use an http:// proxy (the tunnel inside it is TLS)",
                parsed.scheme()
            ));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("names no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = parsed.port().unwrap_or(80);
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let credentials = (!parsed.username().is_empty()).then(|| {
            (
                decode(parsed.username()),
                decode(parsed.password().unwrap_or_default()),
            )
        });
        Ok(Proxy {
            host,
            port,
            credentials,
            no_proxy: Vec::new(),
        })
    }

    /// The proxy the environment names (`HTTPS_PROXY`, `https_proxy`,
    /// `ALL_PROXY`), with `NO_PROXY`; `None` when none is set.
    pub fn from_env() -> Option<Result<Proxy, String>> {
        let url = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))?;
        let no_proxy = ["NO_PROXY", "no_proxy"]
            .iter()
            .find_map(|k| std::env::var(k).ok())
            .unwrap_or_default();
        Some(Proxy::parse(url.trim()).map(|p| p.with_no_proxy(&no_proxy)))
    }

    /// Hosts (comma-separated; `.example.com` or `example.com` for a domain
    /// and its subdomains, `*` for all) reached without the proxy.
    pub fn with_no_proxy(mut self, list: &str) -> Proxy {
        self.no_proxy = list
            .split(',')
            .map(|h| h.trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        self
    }

    /// Whether a connection to `host` goes through the proxy.
    pub fn applies_to(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        !self
            .no_proxy
            .iter()
            .any(|n| n == "*" || host == *n || host.ends_with(&format!(".{n}")))
    }

    /// The proxy's URL with the password hidden.
    pub fn redacted(&self) -> String {
        match &self.credentials {
            Some((user, _)) => format!("http://{user}:***@{}:{}", self.host, self.port),
            None => format!("http://{}:{}", self.host, self.port),
        }
    }

    /// Connects to the proxy and asks it for a tunnel to `target`
    /// (`host:port`); the stream is then the tunnel.
    pub async fn connect(&self, target: &str) -> Result<TcpStream, String> {
        let proxy = self.redacted();
        let mut stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot reach the proxy {proxy}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((user, password)) = &self.credentials {
            use base64::Engine as _;
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request.push_str(&format!("Proxy-Authorization: Basic {pair}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("the proxy {proxy} closed the connection: {e}"))?;
        // Read the answer's head, byte by byte: what follows it is the tunnel.
        let mut head = Vec::with_capacity(256);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_ANSWER {
                return Err(format!(
                    "the proxy {proxy} answered CONNECT with an endless head"
                ));
            }
            let mut byte = [0u8; 1];
            match stream.read(&mut byte).await {
                Ok(0) => {
                    return Err(format!(
                        "the proxy {proxy} closed the connection instead of answering CONNECT"
                    ));
                }
                Ok(_) => head.push(byte[0]),
                Err(e) => return Err(format!("the proxy {proxy} failed: {e}")),
            }
        }
        let text = String::from_utf8_lossy(&head);
        let status_line = text.lines().next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("the proxy {proxy} answered CONNECT with `{status_line}`"))?;
        match status {
            200..=299 => Ok(stream),
            407 if self.credentials.is_some() => Err(format!(
                "the proxy {proxy} refused the credentials (407 Proxy Authentication Required): \
                 check the user and password in tunnel.proxy"
            )),
            407 => Err(format!(
                "the proxy {proxy} wants credentials (407 Proxy Authentication Required): \
                 set tunnel.proxy = \"http://user:password@host:port\""
            )),
            other => Err(format!(
                "the proxy {proxy} refused a tunnel to {target} (HTTP {other}): ask for CONNECT to \
                 that host and port to be allowed"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_credentials_and_never_shows_the_password() {
        let p = Proxy::parse("http://dealer%40site:s3cr%3At@proxy.local:3128").unwrap();
        assert_eq!(p.credentials, Some(("dealer@site".into(), "s3cr:t".into())));
        assert_eq!(p.redacted(), "http://dealer@site:***@proxy.local:3128");
        assert!(!format!("{p:?}").contains("s3cr"));
        assert!(
            Proxy::parse("https://proxy.local:3128")
                .unwrap_err()
                .contains("http://")
        );
        assert!(Proxy::parse("proxy.local").is_err());
    }

    #[test]
    fn no_proxy_names_hosts_and_domains() {
        let p = Proxy::parse("http://proxy:3128")
            .unwrap()
            .with_no_proxy("localhost, .corp.example ,10.0.0.5");
        assert!(!p.applies_to("localhost"));
        assert!(!p.applies_to("cp.corp.example"));
        assert!(!p.applies_to("10.0.0.5"));
        assert!(p.applies_to("cp.example.com"));
        let all = Proxy::parse("http://proxy:3128")
            .unwrap()
            .with_no_proxy("*");
        assert!(!all.applies_to("anything"));
    }
}

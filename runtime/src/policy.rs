//! The dealer's local allow-list: which hosts, ports and networks this agent
//! may call. It is read from the agent's own config file only; nothing the
//! control plane sends can widen it, so a compromised cloud cannot turn the
//! agent into a door into the dealer network.
//!
//! Entry syntax (one string each):
//! - `dms.dealer.lan:8443`: a host name and port (`*` for any port; no port
//!   means any port);
//! - `*.dealer.lan:443`: any subdomain of `dealer.lan`;
//! - `192.168.10.20:80`, `[fd00::1]:80`: one address;
//! - `10.20.0.0/16`, `10.20.0.0/16:8080`, `[fd00::/8]:443`: a network;
//! - `public`, `public:443`: any publicly routable address (not loopback,
//!   private, link-local, shared, multicast or reserved), the safe default
//!   of the control plane's built-in cloud agent.
//!
//! A host name that matches no name entry is still allowed when every address
//! it resolves to lies in an allowed network; the resolver re-checks at
//! connect time (see [`PolicyResolver`]) so DNS rebinding cannot slip past.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;

/// A port constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    Any,
    One(u16),
}

impl Ports {
    fn allows(self, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::One(p) => p == port,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Exact, lower-cased host name.
    Name(String),
    /// `*.suffix`: any name ending in `.suffix` (stored with the leading dot).
    Suffix(String),
    /// A network (a single address is a /32 or /128).
    Net { addr: IpAddr, prefix: u8 },
    /// Any publicly routable address.
    Public,
}

/// Whether `ip` is a publicly routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    host: HostPattern,
    ports: Ports,
    text: String,
}

/// The parsed allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<Rule>,
    /// What a refusal tells the reader to do (default: the dealer edits the
    /// agent's config file).
    remedy: Option<String>,
}

/// An allow-list entry that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("allow-list entry {index} `{entry}`: {reason}")]
pub struct RuleError {
    /// Position in the list (0-based).
    pub index: usize,
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Why a call is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct PolicyDenied(pub String);

/// What the pre-flight check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed outright (a matching name entry or an address literal in range).
    Allowed,
    /// A name allowed only if it resolves into an allowed network; the
    /// resolver decides.
    IfResolvesInside,
}

fn parse_port(text: &str) -> Result<Ports, String> {
    if text == "*" {
        return Ok(Ports::Any);
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("`{text}` is not a port (1-65535 or *)")),
        Ok(p) => Ok(Ports::One(p)),
    }
}

fn parse_net(text: &str) -> Result<HostPattern, String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(p) if p <= max => p,
            _ => return Err(format!("`/{p}` is not a prefix length (0-{max})")),
        },
    };
    Ok(HostPattern::Net { addr, prefix })
}

fn parse_name(text: &str) -> Result<HostPattern, String> {
    let lower = text.to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !s.starts_with('.')
    };
    if let Some(suffix) = lower.strip_prefix("*.") {
        if !valid(suffix) {
            return Err(format!("`{text}` is not a host name pattern"));
        }
        return Ok(HostPattern::Suffix(format!(".{suffix}")));
    }
    if !valid(&lower) {
        return Err(format!("`{text}` is not a host name, address or network"));
    }
    Ok(HostPattern::Name(lower))
}

impl Rule {
    /// Parses one entry.
    pub fn parse(entry: &str) -> Result<Rule, String> {
        let text = entry.trim();
        if text.is_empty() {
            return Err("empty entry".into());
        }
        let (host, ports) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or("missing `]`")?;
            let ports = match after {
                "" => Ports::Any,
                p => parse_port(p.strip_prefix(':').ok_or("expected `:PORT` after `]`")?)?,
            };
            (parse_net(inside)?, ports)
        } else if text.matches(':').count() > 1 {
            // A bare IPv6 address or network, no port.
            (parse_net(text)?, Ports::Any)
        } else {
            let (host, ports) = match text.rsplit_once(':') {
                Some((h, p)) => (h, parse_port(p)?),
                None => (text, Ports::Any),
            };
            let looks_numeric = host
                .split('/')
                .next()
                .is_some_and(|h| h.parse::<IpAddr>().is_ok());
            let pattern = if host.eq_ignore_ascii_case("public") {
                HostPattern::Public
            } else if looks_numeric || host.contains('/') {
                parse_net(host)?
            } else {
                parse_name(host)?
            };
            (pattern, ports)
        };
        Ok(Rule {
            host,
            ports,
            text: text.to_owned(),
        })
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl AllowList {
    /// Parses every entry, reporting every bad one at once.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, Vec<RuleError>> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match Rule::parse(entry.as_ref()) {
                Ok(rule) => rules.push(rule),
                Err(reason) => errors.push(RuleError {
                    index,
                    entry: entry.as_ref().to_owned(),
                    reason,
                }),
            }
        }
        if errors.is_empty() {
            Ok(AllowList {
                rules,
                remedy: None,
            })
        } else {
            Err(errors)
        }
    }

    /// True when nothing at all is allowed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The entries as written, for logs and `--check-config`.
    pub fn entries(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.text.as_str())
    }

    fn ip_allowed(&self, ip: IpAddr, port: Option<u16>) -> bool {
        self.rules.iter().any(|r| match r.host {
            HostPattern::Net { addr, prefix } => {
                port.is_none_or(|p| r.ports.allows(p)) && in_net(ip, addr, prefix)
            }
            HostPattern::Public => port.is_none_or(|p| r.ports.allows(p)) && is_public(ip),
            _ => false,
        })
    }

    fn name_allowed(&self, name: &str, port: Option<u16>) -> bool {
        self.rules.iter().any(|r| {
            port.is_none_or(|p| r.ports.allows(p))
                && match &r.host {
                    HostPattern::Name(n) => n == name,
                    HostPattern::Suffix(s) => name.ends_with(s.as_str()),
                    HostPattern::Net { .. } | HostPattern::Public => false,
                }
        })
    }

    /// The same list, whose refusals name `remedy` as what to do (the cloud
    /// agent's list is the control plane's setting, not a dealer's file).
    pub fn with_remedy(mut self, remedy: impl Into<String>) -> AllowList {
        self.remedy = Some(remedy.into());
        self
    }

    /// Pre-flight check of a URL, before anything leaves the agent.
    pub fn check(&self, url: &Url) -> Result<Verdict, PolicyDenied> {
        let port = url
            .port_or_known_default()
            .ok_or_else(|| PolicyDenied(format!("{url} has no port")))?;
        let remedy = self
            .remedy
            .as_deref()
            .unwrap_or("the dealer can add it to `policy.allow` in the agent's config file");
        let denied = |what: String| {
            PolicyDenied(format!(
                "{what} is not in this agent's allow-list; {remedy}"
            ))
        };
        match url.host() {
            Some(url::Host::Ipv4(ip)) if self.ip_allowed(IpAddr::V4(ip), Some(port)) => {
                Ok(Verdict::Allowed)
            }
            Some(url::Host::Ipv6(ip)) if self.ip_allowed(IpAddr::V6(ip), Some(port)) => {
                Ok(Verdict::Allowed)
            }
            Some(url::Host::Ipv4(ip)) => Err(denied(format!("{ip}:{port}"))),
            Some(url::Host::Ipv6(ip)) => Err(denied(format!("[{ip}]:{port}"))),
            Some(url::Host::Domain(name)) => {
                let name = name.to_ascii_lowercase();
                let name = name.trim_end_matches('.');
                if self.name_allowed(name, Some(port)) {
                    Ok(Verdict::Allowed)
                } else if let Ok(ip) = name.parse::<IpAddr>() {
                    // url keeps some address forms as names; treat them as addresses.
                    if self.ip_allowed(ip, Some(port)) {
                        Ok(Verdict::Allowed)
                    } else {
                        Err(denied(format!("{name}:{port}")))
                    }
                } else if self.rules.iter().any(|r| {
                    matches!(r.host, HostPattern::Net { .. } | HostPattern::Public)
                        && r.ports.allows(port)
                }) {
                    Ok(Verdict::IfResolvesInside)
                } else {
                    Err(denied(format!("{name}:{port}")))
                }
            }
            None => Err(PolicyDenied(format!("{url} has no host"))),
        }
    }

    /// Filters resolved addresses of `name` to those the allow-list permits.
    pub fn filter_resolved(
        &self,
        name: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, PolicyDenied> {
        let name = name.to_ascii_lowercase();
        if self.name_allowed(name.trim_end_matches('.'), None) {
            return Ok(addrs);
        }
        let total = addrs.len();
        let kept: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| self.ip_allowed(a.ip(), None))
            .collect();
        if kept.is_empty() {
            return Err(PolicyDenied(format!(
                "{name} resolves to {total} address(es), none inside this agent's allowed networks"
            )));
        }
        Ok(kept)
    }
}

/// A DNS resolver for reqwest that applies the allow-list to every lookup,
/// so a name that passed the pre-flight check cannot connect elsewhere later.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<AllowList>,
}

impl PolicyResolver {
    /// Wraps the allow-list.
    pub fn new(policy: Arc<AllowList>) -> Self {
        PolicyResolver { policy }
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = policy.filter_resolved(&host, addrs)?;
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(entries).unwrap()
    }

    fn check(list: &AllowList, url: &str) -> Result<Verdict, PolicyDenied> {
        list.check(&Url::parse(url).unwrap())
    }

    #[test]
    fn names_ports_and_wildcards() {
        let l = list(&["dms.dealer.lan:8443", "*.oem.example:443", "crm.local"]);
        assert_eq!(
            check(&l, "https://dms.dealer.lan:8443/x"),
            Ok(Verdict::Allowed)
        );
        assert_eq!(
            check(&l, "https://DMS.dealer.lan:8443/x"),
            Ok(Verdict::Allowed)
        );
        assert!(
            check(&l, "https://dms.dealer.lan/x").is_err(),
            "port 443 is not 8443"
        );
        assert_eq!(
            check(&l, "https://api.oem.example/v1"),
            Ok(Verdict::Allowed)
        );
        assert!(
            check(&l, "https://oem.example/v1").is_err(),
            "the wildcard needs a subdomain"
        );
        assert!(check(&l, "https://evil-oem.example/v1").is_err());
        assert_eq!(check(&l, "http://crm.local:1234/"), Ok(Verdict::Allowed));
        assert!(check(&l, "http://other.local/").is_err());
    }

    #[test]
    fn addresses_and_networks() {
        let l = list(&[
            "127.0.0.1:9000",
            "10.20.0.0/16:8080",
            "[fd00::/8]:443",
            "192.168.1.5",
        ]);
        assert_eq!(check(&l, "http://127.0.0.1:9000/"), Ok(Verdict::Allowed));
        assert!(check(&l, "http://127.0.0.1:9001/").is_err());
        assert_eq!(check(&l, "http://10.20.255.1:8080/"), Ok(Verdict::Allowed));
        assert!(check(&l, "http://10.21.0.1:8080/").is_err());
        assert_eq!(check(&l, "https://[fd12::1]/"), Ok(Verdict::Allowed));
        assert_eq!(check(&l, "http://192.168.1.5:5000/"), Ok(Verdict::Allowed));
        assert_eq!(
            check(&l, "http://dms.lan:8080/"),
            Ok(Verdict::IfResolvesInside)
        );
        // 192.168.1.5 allows any port, so a name might resolve to it.
        assert_eq!(
            check(&l, "http://dms.lan:9999/"),
            Ok(Verdict::IfResolvesInside)
        );
        let ported = list(&["10.20.0.0/16:8080"]);
        assert!(
            check(&ported, "http://dms.lan:9999/").is_err(),
            "no network allows port 9999"
        );
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let l = list(&["10.0.0.0/8"]);
        let a: SocketAddr = "10.1.2.3:0".parse().unwrap();
        let b: SocketAddr = "8.8.8.8:0".parse().unwrap();
        assert_eq!(l.filter_resolved("dms.lan", vec![a, b]).unwrap(), vec![a]);
        assert!(l.filter_resolved("dms.lan", vec![b]).is_err());
    }

    #[test]
    fn empty_list_denies_everything() {
        let l = list(&[]);
        assert!(check(&l, "http://127.0.0.1/").is_err());
        assert!(check(&l, "http://localhost/").is_err());
    }

    #[test]
    fn every_bad_entry_is_reported() {
        let errors = AllowList::parse(&["ok.lan:80", "bad host", "10.0.0.0/40", "x:99999", "[::1"])
            .unwrap_err();
        let indexes: Vec<usize> = errors.iter().map(|e| e.index).collect();
        assert_eq!(indexes, vec![1, 2, 3, 4]);
        assert!(errors[2].to_string().contains("99999"));
    }

    #[test]
    fn denial_tells_the_dealer_what_to_do() {
        let err = check(&list(&[]), "http://10.0.0.1:22/").unwrap_err();
        assert!(
            err.0.contains("10.0.0.1:22") && err.0.contains("policy.allow"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod public_tests {
    use super::*;

    #[test]
    fn public_means_routable_addresses_only() {
        let list = AllowList::parse(&["public:443"]).unwrap();
        let ok = |u: &str| list.check(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://8.8.8.8/"));
        assert!(ok("https://[2606:4700::1111]/"));
        assert!(
            ok("https://api.example.com/"),
            "names are checked when resolved"
        );
        for denied in [
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/",
            "https://192.168.1.1/",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://8.8.8.8:8443/",
        ] {
            assert!(!ok(denied), "{denied} must be refused");
        }
        let resolved = list.filter_resolved(
            "api.example.com",
            vec![
                "10.0.0.1:443".parse().unwrap(),
                "1.1.1.1:443".parse().unwrap(),
            ],
        );
        assert_eq!(resolved.unwrap(), vec!["1.1.1.1:443".parse().unwrap()]);
    }
}

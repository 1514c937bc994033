//! The tunnel over TCP: real `dibop`, `dibop-agent` and `dms-sim`
//! processes; the agent dials the control plane's TCP tunnel port (TLS with
//! its certificate, a WebSocket, multiplexed streams) instead of QUIC.

use dibop_e2e::harness::{
    Agent, Api, ControlPlane, Dms, READY, eventually, forward_tcp, tcp_only_path,
};
use serde_json::{Value, json};

struct Site {
    dir: tempfile::TempDir,
    cp: ControlPlane,
    api: Api,
    dms: Dms,
    group: String,
}

impl Site {
    async fn new() -> Site {
        Site::with(&[]).await
    }

    /// A site whose control plane runs with extra `dibop serve` flags.
    async fn with(flags: &[&str]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let cp = ControlPlane::start_with(&dir.path().join("cp"), any, any, flags)
            .await
            .unwrap();
        let api = cp.tenant("acme-motors").await.unwrap();
        let dms = Dms::start().await.unwrap();
        let group = api.create_group("site-a").await.unwrap();
        Site {
            dir,
            cp,
            api,
            dms,
            group,
        }
    }

    /// A fresh enrollment token redeemed into `name`'s directory.
    async fn enrolled(&self, name: &str) -> std::path::PathBuf {
        let token = self.api.enrollment_token(&self.group, None).await.unwrap();
        let dir = self.dir.path().join(name);
        let (ok, text) = dibop_e2e::harness::enroll(&token, &dir).await.unwrap();
        assert!(ok, "enrolling {name}: {text}");
        dir
    }

    /// An agent enrolled and then run over the TCP transport.
    async fn wss_agent(&self, name: &str) -> Agent {
        let dir = self.enrolled(name).await;
        let agent = Agent::start_with(&dir, &[self.dms.addr.to_string()], "transport = \"wss\"")
            .await
            .unwrap();
        self.api.wait_online(&agent.id).await.unwrap();
        agent
    }

    async fn dms_get(&self, path: &str) -> (u16, Value) {
        let call = json!({
            "url": format!("{}{path}", self.dms.url),
            "headers": {"X-API-Key": "dms-demo-key"},
            "timeout_ms": 10_000,
        });
        self.api.call(&self.group, call).await.unwrap()
    }
}

#[tokio::test]
async fn an_agent_over_wss_serves_calls_like_one_over_quic() {
    let site = Site::new().await;
    let agent = site.wss_agent("agent-wss").await;
    assert!(
        agent.log_text().contains("transport=\"wss\"")
            || agent.log_text().contains("transport=wss"),
        "{}",
        agent.log_text()
    );
    let status: Value =
        serde_json::from_slice(&std::fs::read(agent.data_dir.join("status.json")).unwrap())
            .unwrap();
    assert_eq!(status["transport"], "wss", "{status}");
    assert_eq!(status["state"], "online", "{status}");

    // One call, then many at once over the one TCP connection.
    let (code, result) = site.dms_get("/api/v1/vehicles?page_size=5").await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["agentId"], agent.id.as_str(), "{result}");
    let calls = (0..32).map(|i| {
        let site = &site;
        async move {
            site.dms_get(&format!("/api/v1/vehicles?page_size={}", 1 + i % 20))
                .await
        }
    });
    for (code, result) in futures_util::future::join_all(calls).await {
        assert_eq!(code, 200, "{result}");
        assert_eq!(result["ok"], true, "{result}");
    }
    // A large answer (the longest page) crosses whole.
    let (code, big) = site.dms_get("/api/v1/vehicles?page_size=200").await;
    assert_eq!(code, 200, "{big}");
    assert_eq!(big["ok"], true, "{big}");
    assert!(
        big["text"].as_str().unwrap_or_default().len() > 20_000,
        "{}",
        big["text"].as_str().map_or(0, str::len)
    );
}

#[tokio::test]
async fn a_revoked_agent_over_wss_is_told_so_and_stops() {
    let site = Site::new().await;
    let mut agent = site.wss_agent("agent-wss").await;
    let (status, _) = site
        .api
        .send("DELETE", &format!("/agents/{}", agent.id), None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    let exit = agent.wait_exit(READY).await.unwrap();
    assert_eq!(exit.code(), Some(3), "{}", agent.log_text());
    assert!(agent.log_text().contains("revoked"), "{}", agent.log_text());
    let (_, result) = site.dms_get("/api/v1/vehicles").await;
    assert_eq!(result["error"]["class"], "agent_unavailable", "{result}");
}

#[tokio::test]
async fn a_wrong_transport_setting_is_refused_with_what_to_write() {
    let site = Site::new().await;
    let dir = site.enrolled("agent-typo").await;
    let mut agent = Agent::start_with(
        &dir,
        &[site.dms.addr.to_string()],
        "transport = \"websocket\"",
    )
    .await
    .unwrap();
    let exit = agent.wait_exit(READY).await.unwrap();
    assert!(!exit.success());
    let log = agent.log_text();
    assert!(
        log.contains("tunnel.transport = `websocket` must be `auto`, `quic` or `wss`"),
        "{log}"
    );
}

#[tokio::test]
async fn with_udp_blocked_the_agent_comes_online_over_tcp_and_remembers_it() {
    let site = Site::new().await;
    let dir = site.enrolled("agent-auto").await;
    let path = tcp_only_path(site.cp.tunnel_addr).await.unwrap();
    let tunnel = format!("control_plane = \"{path}\"");
    let allow = [site.dms.addr.to_string()];
    // The default transport is `auto`: QUIC gets no answer, TCP wins the race.
    let mut agent = Agent::start_with(&dir, &allow, &tunnel).await.unwrap();
    site.api.wait_online(&agent.id).await.unwrap();
    let (code, result) = site.dms_get("/api/v1/vehicles?page_size=3").await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(
        std::fs::read_to_string(dir.join("transport"))
            .unwrap()
            .trim(),
        "wss",
        "{}",
        agent.log_text()
    );
    agent.terminate().await.unwrap();

    // Started again, it begins with TCP, the remembered transport.
    let agent = Agent::start_with(&dir, &allow, &tunnel).await.unwrap();
    site.api.wait_online(&agent.id).await.unwrap();
    // (Both runs write to the same log: the second "tunnel up" is this run's.)
    eventually("the agent is up over wss again", READY, || async {
        let ups = agent
            .log_text()
            .lines()
            .filter(|l| l.contains("tunnel up") && l.contains("wss"))
            .count();
        (ups == 2).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        agent.log_text().matches("remembered the transport").count(),
        1,
        "nothing new to remember the second time: {}",
        agent.log_text()
    );
}

#[tokio::test]
async fn an_agent_enrolls_and_runs_where_only_tcp_reaches_the_control_plane() {
    // The address agents are given leads to a port where only TCP passes.
    let path = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = path.local_addr().unwrap().to_string();
    let site = Site::with(&["--public-tunnel-addr", &public]).await;
    forward_tcp(path, site.cp.tunnel_addr);
    let dir = site.enrolled("agent-tcp").await;
    // Run with the defaults (`auto`): online over TCP, and calls go through.
    let agent = Agent::start(&dir, &[site.dms.addr.to_string()])
        .await
        .unwrap();
    site.api.wait_online(&agent.id).await.unwrap();
    let (code, result) = site.dms_get("/api/v1/vehicles?page_size=2").await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(
        std::fs::read_to_string(dir.join("transport"))
            .unwrap()
            .trim(),
        "wss"
    );
}

#[tokio::test]
async fn through_an_authenticating_http_proxy_the_agent_comes_online_and_a_wrong_password_is_named()
{
    let site = Site::new().await;
    let proxy = dibop_e2e::harness::http_proxy("dealer", "proxy-pass")
        .await
        .unwrap();
    let dir = site.enrolled("agent-proxied").await;
    let allow = [site.dms.addr.to_string()];
    let through = |password: &str| {
        format!(
            "transport = \"wss\"\nproxy = \"http://dealer:{password}@127.0.0.1:{}\"",
            proxy.port
        )
    };
    let mut agent = Agent::start_with(&dir, &allow, &through("proxy-pass"))
        .await
        .unwrap();
    site.api.wait_online(&agent.id).await.unwrap();
    let (code, result) = site.dms_get("/api/v1/vehicles?page_size=2").await;
    assert_eq!(code, 200, "{result}");
    assert_eq!(result["ok"], true, "{result}");
    let tunnel = site.cp.tunnel_addr.to_string();
    assert!(
        proxy
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("CONNECT") && l.contains(&tunnel)),
        "the tunnel went through the proxy: {:?}",
        proxy.seen.lock().unwrap()
    );
    agent.terminate().await.unwrap();

    // A wrong password: the agent says the proxy refused the credentials,
    // and shows neither password.
    let agent = Agent::start_with(&dir, &allow, &through("wrong-pass"))
        .await
        .unwrap();
    let log = eventually("the agent names the 407", READY, || async {
        let log = agent.log_text();
        log.contains("refused the credentials (407").then_some(log)
    })
    .await
    .unwrap();
    assert!(log.contains("http://dealer:***@127.0.0.1"), "{log}");
    assert!(
        !log.contains("wrong-pass") && !log.contains("proxy-pass"),
        "{log}"
    );
}

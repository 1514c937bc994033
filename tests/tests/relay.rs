//! The relayed call, end to end: real `dibop`, `dibop-agent` and `dms-sim`
//! processes, real QUIC over UDP on loopback, real HTTP.

use std::time::Duration;

use dibop_e2e::harness::{Agent, Api, ControlPlane, Dms, READY, enroll, eventually};
use serde_json::{Value, json};

struct Site {
    _dir: tempfile::TempDir,
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
            _dir: dir,
            cp,
            api,
            dms,
            group,
        }
    }

    fn root(&self) -> std::path::PathBuf {
        self._dir.path().to_owned()
    }

    fn allow(&self) -> Vec<String> {
        vec![self.dms.addr.to_string()]
    }

    async fn agent(&self, name: &str) -> Agent {
        let token = self.api.enrollment_token(&self.group, None).await.unwrap();
        let agent = Agent::enroll_and_start(&self.root(), name, &token, &self.allow())
            .await
            .unwrap();
        self.api.wait_online(&agent.id).await.unwrap();
        agent
    }

    fn vehicles_call(&self) -> Value {
        json!({
            "method": "GET",
            "url": format!("{}/api/v1/vehicles?page_size=5", self.dms.url),
            "headers": {"X-API-Key": "dms-demo-key"},
            "timeout_ms": 10_000,
        })
    }

    /// A GET of `path` on the DMS through the site's agents, with the API key.
    async fn dms_get(&self, path: &str, timeout_ms: u32) -> Value {
        let call = json!({
            "url": format!("{}{path}", self.dms.url),
            "headers": {"X-API-Key": "dms-demo-key"},
            "timeout_ms": timeout_ms,
        });
        let (status, result) = self.api.call(&self.group, call).await.unwrap();
        assert_eq!(status, 200, "{result}");
        result
    }

    async fn call_ok(&self) -> Value {
        let (status, result) = self
            .api
            .call(&self.group, self.vehicles_call())
            .await
            .unwrap();
        assert_eq!(status, 200, "{result}");
        assert_eq!(result["ok"], true, "{result}");
        result
    }
}

#[tokio::test]
async fn enrolled_agent_relays_calls_to_the_dms() {
    let site = Site::new().await;
    let agent = site.agent("agent-1").await;

    let result = site.call_ok().await;
    assert_eq!(result["status"], 200);
    assert_eq!(result["statusText"], "OK");
    assert_eq!(result["method"], "GET");
    assert_eq!(result["agentId"], agent.id.as_str());
    assert_eq!(
        result["body"]["items"].as_array().unwrap().len(),
        5,
        "JSON body is parsed: {result}"
    );
    assert_eq!(result["body"]["total"], 240);
    assert!(result["text"].as_str().unwrap().starts_with('{'));
    assert_eq!(result["parseError"], Value::Null);
    assert_eq!(result["attempts"], 1);
    assert!(result["timing"]["totalMs"].as_f64().unwrap() > 0.0);
    assert!(
        result["headers"]["content-type"]
            .as_str()
            .unwrap()
            .contains("json")
    );

    // A POST with a JSON body reaches the DMS and its answer comes back.
    let (_, created) = site
        .api
        .call(
            &site.group,
            json!({
                "method": "POST",
                "url": format!("{}/api/v1/appointments", site.dms.url),
                "headers": {"X-API-Key": "dms-demo-key"},
                "body": {"start": "2026-12-01T09:00:00+01:00", "service": "Inspection"},
            }),
        )
        .await
        .unwrap();
    assert_eq!(created["status"], 201, "{created}");
    assert!(
        created["body"]["appointmentId"]
            .as_str()
            .unwrap()
            .starts_with("APT-")
    );

    // The target's own errors are classified, with the body kept.
    let (_, unauthorized) = site
        .api
        .call(
            &site.group,
            json!({"url": format!("{}/api/v1/vehicles", site.dms.url)}),
        )
        .await
        .unwrap();
    assert_eq!(unauthorized["ok"], false);
    assert_eq!(unauthorized["status"], 401);
    assert_eq!(unauthorized["error"]["class"], "auth_failure");
    let limited = site.dms_get("/api/v1/parts?sim_fault=429", 10_000).await;
    assert_eq!(limited["error"]["class"], "rate_limited");
    assert_eq!(limited["headers"]["retry-after"], "2");
    let failed = site.dms_get("/api/v1/parts?sim_fault=500", 10_000).await;
    assert_eq!(failed["error"]["class"], "upstream_error");
    assert_eq!(failed["status"], 500);

    // A slow target past the call's timeout is a timeout, reported by the agent.
    let slow = site.dms_get("/api/v1/parts?sim_delay_ms=5000", 300).await;
    assert_eq!(slow["error"]["class"], "timeout", "{slow}");

    // A dropped connection is a network error.
    let dropped = site.dms_get("/api/v1/parts?sim_fault=drop", 10_000).await;
    assert_eq!(dropped["error"]["class"], "network_error", "{dropped}");

    // The control plane counts what happened, for Prometheus.
    let metrics = reqwest::get(format!("{}/metrics", site.cp.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("dibop_agents_online 1"), "{metrics}");
    assert!(
        metrics.contains(
            "dibop_calls_total{mode=\"diagnostic\",outcome=\"failed\",error_class=\"timeout\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "dibop_calls_total{mode=\"diagnostic\",outcome=\"failed\",error_class=\"auth_failure\"} 1"
        ),
        "{metrics}"
    );

    let agents = site.api.agents().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["status"], "online");
    assert_eq!(agents[0]["group_id"], site.group.as_str());
    assert_eq!(agents[0]["version"], env!("CARGO_PKG_VERSION"));
    assert!(agents[0]["last_seen"].is_string());
}

#[tokio::test]
async fn allow_list_denies_what_the_dealer_did_not_allow() {
    let site = Site::new().await;
    let _agent = site.agent("agent-1").await;
    // The control plane's own API is reachable from the agent's host, but not allowed.
    let (status, result) = site
        .api
        .call(
            &site.group,
            json!({"url": format!("{}/healthz", site.cp.http)}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(result["ok"], false);
    assert_eq!(result["error"]["class"], "policy_denied", "{result}");
    assert!(
        result["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&site.cp.http_addr.to_string())
    );
    // A name that is not listed is refused too, before any DNS lookup leaves the agent.
    let (_, named) = site
        .api
        .call(&site.group, json!({"url": "http://localhost:1/"}))
        .await
        .unwrap();
    assert_eq!(named["error"]["class"], "policy_denied", "{named}");
}

#[tokio::test]
async fn api_errors_have_one_shape_and_other_tenants_see_404() {
    let site = Site::new().await;
    let other = site.cp.tenant("other-dealer").await.unwrap();

    let (status, body) = other.call(&site.group, site.vehicles_call()).await.unwrap();
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("req_")
    );
    let (status, _) = other
        .send(
            "POST",
            &format!("/agent-groups/{}/enrollment-tokens", site.group),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _) = other
        .send("GET", &format!("/agent-groups/{}", site.group), None)
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert!(other.agents().await.unwrap().is_empty());

    let anonymous = Api::new(&site.cp.http, "not-a-token");
    let (status, body) = anonymous.send("GET", "/agents", None).await.unwrap();
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthenticated");

    let (status, body) = site
        .api
        .call(&site.group, json!({"url": "ftp://x/", "timeout_ms": 0}))
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(
        body["error"]["details"].as_array().unwrap().len(),
        2,
        "every problem at once: {body}"
    );
    let (status, body) = site
        .api
        .call(&site.group, json!({"url": "http://x/", "bogus": 1}))
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("bogus"));

    // No agent online: a normalized result that says so.
    let (status, body) = site
        .api
        .call(&site.group, site.vehicles_call())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["error"]["class"], "agent_unavailable");
}

#[tokio::test]
async fn used_unknown_and_expired_tokens_are_refused_clearly() {
    let site = Site::new().await;
    let token = site.api.enrollment_token(&site.group, None).await.unwrap();
    let (ok, _) = enroll(&token, &site.root().join("a1")).await.unwrap();
    assert!(ok);
    let (ok, text) = enroll(&token, &site.root().join("a2")).await.unwrap();
    assert!(!ok);
    assert!(text.contains("already used"), "{text}");

    // Same control plane, same CA, a secret it never issued.
    let mut forged = dibop_protocol::EnrollmentToken::decode(&token).unwrap();
    forged.secret = "made-up".into();
    let (ok, text) = enroll(&forged.encode(), &site.root().join("a3"))
        .await
        .unwrap();
    assert!(!ok);
    assert!(text.contains("not known"), "{text}");

    let short = site
        .api
        .enrollment_token(&site.group, Some(1))
        .await
        .unwrap();
    let expires = dibop_protocol::EnrollmentToken::decode(&short)
        .unwrap()
        .expires_at_unix;
    eventually("the token's expiry", Duration::from_secs(5), || async {
        (time_now() > expires).then_some(())
    })
    .await
    .unwrap();
    let (ok, text) = enroll(&short, &site.root().join("a4")).await.unwrap();
    assert!(!ok);
    assert!(text.contains("expired"), "{text}");

    let (ok, text) = enroll("dibop-enroll-v1.garbage!", &site.root().join("a5"))
        .await
        .unwrap();
    assert!(!ok);
    assert!(text.contains("damaged"), "{text}");
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn calls_keep_succeeding_when_one_of_two_agents_is_killed() {
    let site = Site::new().await;
    let mut a = site.agent("agent-a").await;
    let b = site.agent("agent-b").await;

    let mut served = std::collections::HashMap::<String, usize>::new();
    for _ in 0..20 {
        let r = site.call_ok().await;
        *served
            .entry(r["agentId"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(served.len(), 2, "both agents take calls: {served:?}");

    // Calls run concurrently while agent A dies without a goodbye.
    let api = site.api.clone();
    let group = site.group.clone();
    let call = site.vehicles_call();
    let load = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..60 {
            let mut batch = Vec::new();
            for _ in 0..4 {
                let (api, group, call) = (api.clone(), group.clone(), call.clone());
                batch.push(tokio::spawn(async move { api.call(&group, call).await }));
            }
            for t in batch {
                results.push(t.await.unwrap().unwrap());
            }
        }
        results
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.kill().await;
    let results = load.await.unwrap();
    for (status, r) in &results {
        assert_eq!(*status, 200);
        assert_eq!(
            r["ok"], true,
            "a call failed after an agent was killed: {r}"
        );
    }
    // Afterwards everything goes to B.
    eventually("agent A offline", READY, || async {
        (site.api.agent_status(&a.id).await.ok()? == "offline").then_some(())
    })
    .await
    .unwrap();
    for _ in 0..5 {
        assert_eq!(site.call_ok().await["agentId"], b.id.as_str());
    }
}

/// An agent killed without a goodbye is noticed by liveness probes, not the
/// tunnel's idle timeout (a minute here): calls sent to it that it never
/// acknowledged move to the other agent, whatever their method, and all
/// succeed long before the idle timeout could have said anything.
#[tokio::test]
async fn calls_sent_to_a_dead_agent_move_to_a_live_one_within_seconds() {
    let site = Site::with(&["--agent-idle-timeout-ms", "60000"]).await;
    let mut a = site.agent("agent-a").await;
    let b = site.agent("agent-b").await;
    a.kill().await;
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for i in 0..8 {
        let (api, group) = (site.api.clone(), site.group.clone());
        let call = if i % 2 == 0 {
            site.vehicles_call()
        } else {
            json!({"method": "POST", "url": format!("{}/api/v1/appointments", site.dms.url),
                   "headers": {"X-API-Key": "dms-demo-key"},
                   "body": {"start": "2027-02-01T09:00:00Z", "service": format!("moved-{i}")},
                   "timeout_ms": 10_000})
        };
        calls.push(tokio::spawn(async move { api.call(&group, call).await }));
    }
    for c in calls {
        let (status, r) = c.await.unwrap().unwrap();
        assert_eq!(status, 200);
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["agentId"], b.id.as_str(), "{r}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the calls waited for the tunnel's idle timeout: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn agent_and_control_plane_restarts_heal_by_themselves() {
    let site = Site::new().await;
    let mut agent = site.agent("agent-1").await;
    site.call_ok().await;

    // Agent killed and restarted: same identity, back online.
    agent.kill().await;
    let mut agent = Agent::start(&agent.data_dir, &site.allow()).await.unwrap();
    site.api.wait_online(&agent.id).await.unwrap();
    site.call_ok().await;

    // Control plane killed: the agent keeps running and retrying.
    let Site {
        _dir,
        mut cp,
        api,
        dms,
        group,
    } = site;
    let (http, tunnel, data) = (cp.http_addr, cp.tunnel_addr, cp.data_dir.clone());
    cp.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        agent.is_running(),
        "the agent must not exit when the control plane is gone"
    );
    let cp = ControlPlane::start_on(&data, http, tunnel).await.unwrap();
    let site = Site {
        _dir,
        cp,
        api,
        dms,
        group,
    };
    site.api.wait_online(&agent.id).await.unwrap();
    site.call_ok().await;
    assert!(
        agent.log_text().contains("tunnel down"),
        "the agent logs the outage"
    );

    // A clean stop: SIGTERM ends the agent with success.
    let status = agent.terminate().await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn agent_that_starts_before_the_control_plane_connects_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut cp = ControlPlane::start(&dir.path().join("cp")).await.unwrap();
    let api = cp.tenant("acme").await.unwrap();
    let group = api.create_group("site").await.unwrap();
    let token = api.enrollment_token(&group, None).await.unwrap();
    let (ok, _) = enroll(&token, &dir.path().join("agent")).await.unwrap();
    assert!(ok);
    let (http, tunnel, data) = (cp.http_addr, cp.tunnel_addr, cp.data_dir.clone());
    cp.terminate().await.unwrap();

    let mut agent = Agent::start(&dir.path().join("agent"), &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        agent.is_running(),
        "an unreachable control plane at boot is not fatal"
    );
    let cp = ControlPlane::start_on(&data, http, tunnel).await.unwrap();
    let api = Api::new(&cp.http, api.token());
    api.wait_online(&agent.id).await.unwrap();
}

#[tokio::test]
async fn revoked_agent_is_cut_off_and_refused() {
    let site = Site::new().await;
    let mut agent = site.agent("agent-1").await;
    site.call_ok().await;

    let (status, _) = site
        .api
        .send("DELETE", &format!("/agents/{}", agent.id), None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    let (status, again) = site
        .api
        .send("DELETE", &format!("/agents/{}", agent.id), None)
        .await
        .unwrap();
    assert_eq!(status, 409, "revoked once: {again}");
    assert_eq!(again["error"]["code"], "already_revoked");
    let exit = agent.wait_exit(READY).await.unwrap();
    assert_eq!(exit.code(), Some(3));
    assert!(agent.log_text().contains("revoked"), "{}", agent.log_text());
    assert_eq!(site.api.agent_status(&agent.id).await.unwrap(), "revoked");
    let (_, result) = site
        .api
        .call(&site.group, site.vehicles_call())
        .await
        .unwrap();
    assert_eq!(result["error"]["class"], "agent_unavailable");

    // Started again, it is refused at the handshake and exits.
    let mut again = Agent::start(&agent.data_dir, &site.allow()).await.unwrap();
    let exit = again.wait_exit(READY).await.unwrap();
    assert_eq!(exit.code(), Some(3));
    assert!(again.log_text().contains("revoked"));
    assert!(
        site.cp.log_text().contains("refusing tunnel"),
        "{}",
        site.cp.log_text()
    );

    // Another tenant cannot revoke (or see) it.
    let other = site.cp.tenant("other").await.unwrap();
    let (status, _) = other
        .send("DELETE", &format!("/agents/{}", agent.id), None)
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn garbage_and_oversized_frames_do_not_hurt_the_control_plane() {
    let mut site = Site::new().await;
    let _agent = site.agent("agent-1").await;

    // Garbage datagrams on the tunnel port.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..200u32 {
        let junk: Vec<u8> = (0..(1 + i * 7 % 1400))
            .map(|j| (i * 31 + j) as u8)
            .collect();
        socket.send_to(&junk, site.cp.tunnel_addr).unwrap();
    }

    // A TLS-valid peer (no client certificate) announcing a 4 GiB frame.
    dibop_runtime::install_crypto_provider();
    let token = site.api.enrollment_token(&site.group, None).await.unwrap();
    let token = dibop_protocol::EnrollmentToken::decode(&token).unwrap();
    let config = dibop_runtime::tls::enrollment_client_config(token.ca_sha256).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(
            config,
            site.cp.tunnel_addr,
            dibop_runtime::tls::TUNNEL_SERVER_NAME,
        )
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    let reason = tokio::time::timeout(READY, conn.closed()).await.unwrap();
    let reason = reason.to_string();
    assert!(
        reason.contains("exceeds the maximum"),
        "the peer is told why: {reason}"
    );

    // Bytes that are not a message at all.
    let conn = endpoint
        .connect_with(
            dibop_runtime::tls::enrollment_client_config(token.ca_sha256).unwrap(),
            site.cp.tunnel_addr,
            dibop_runtime::tls::TUNNEL_SERVER_NAME,
        )
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 4, 0xee, 0xee, 0xee, 0xee])
        .await
        .unwrap();
    let reason = tokio::time::timeout(READY, conn.closed())
        .await
        .unwrap()
        .to_string();
    assert!(reason.contains("malformed"), "{reason}");

    // Still serving, and says why in its log.
    assert!(site.cp.is_running());
    site.call_ok().await;
    let log = site.cp.log_text();
    assert!(log.contains("exceeds the maximum"), "{log}");
    assert!(log.contains("malformed"), "{log}");
}

#[tokio::test]
async fn cancelled_call_cancels_the_agents_request() {
    let site = Site::new().await;
    let agent = site.agent("agent-1").await;
    // The API client gives up after 300 ms on a call the DMS answers after 20 s.
    let client = reqwest::Client::new();
    let call = json!({
        "url": format!("{}/api/v1/parts?sim_delay_ms=20000", site.dms.url),
        "headers": {"X-API-Key": "dms-demo-key"},
        "timeout_ms": 60_000,
    });
    let attempt = client
        .post(format!(
            "{}/api/v1/agent-groups/{}/calls",
            site.cp.http, site.group
        ))
        .bearer_auth(site.api.token())
        .json(&call)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(attempt.is_err(), "the client timed out");
    eventually(
        "the agent to abandon the call",
        Duration::from_secs(15),
        || async { agent.log_text().contains("call cancelled").then_some(()) },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_agent_speaking_only_a_future_protocol_is_told_what_to_upgrade() {
    use dibop_protocol::{AgentToControl, ControlToAgent, Hello, RejectCode};
    use dibop_runtime::wire::{MAX_CONTROL_FRAME_LEN, read_frame, write_frame};

    let site = Site::new().await;
    dibop_runtime::install_crypto_provider();
    let token = site.api.enrollment_token(&site.group, None).await.unwrap();
    let token = dibop_protocol::EnrollmentToken::decode(&token).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(
            dibop_runtime::tls::enrollment_client_config(token.ca_sha256).unwrap(),
            site.cp.tunnel_addr,
            dibop_runtime::tls::TUNNEL_SERVER_NAME,
        )
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Hello {
        min_version: 9,
        max_version: 11,
        agent_version: "9.0.0".into(),
        hostname: "future".into(),
    };
    write_frame(&mut send, &AgentToControl::Hello(hello))
        .await
        .unwrap();
    match read_frame::<ControlToAgent, _>(&mut recv, MAX_CONTROL_FRAME_LEN)
        .await
        .unwrap()
    {
        Some(ControlToAgent::Rejected(r)) => {
            assert_eq!(r.code, RejectCode::UnsupportedVersion);
            assert!(
                r.message.contains("9..=11") && r.message.contains("upgrade the control plane"),
                "{}",
                r.message
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn the_dms_simulator_speaks_basic_and_oauth2_through_the_agent() {
    let site = Site::new().await;
    let _agent = site.agent("agent-1").await;
    // OAuth2 client credentials: a form POST through the agent, then the bearer token.
    let (_, token) = site
        .api
        .call(
            &site.group,
            json!({
                "method": "POST",
                "url": format!("{}/oauth/token", site.dms.url),
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
                "body": "grant_type=client_credentials&client_id=dibop-client&client_secret=dibop-secret",
            }),
        )
        .await
        .unwrap();
    assert_eq!(token["status"], 200, "{token}");
    let access = token["body"]["access_token"].as_str().unwrap();
    let (_, jobs) = site
        .api
        .call(
            &site.group,
            json!({"url": format!("{}/api/v1/workshop-jobs?page_size=3", site.dms.url), "headers": {"Authorization": format!("Bearer {access}")}}),
        )
        .await
        .unwrap();
    assert_eq!(jobs["body"]["items"].as_array().unwrap().len(), 3, "{jobs}");
    let (_, refused) = site
        .api
        .call(
            &site.group,
            json!({"method": "POST", "url": format!("{}/oauth/token", site.dms.url), "body": "grant_type=client_credentials&client_id=x&client_secret=y"}),
        )
        .await
        .unwrap();
    assert_eq!(refused["error"]["class"], "auth_failure");

    // Basic auth ("dealer:dealer-pass").
    let (_, parts) = site
        .api
        .call(
            &site.group,
            json!({"url": format!("{}/api/v1/parts/P-100-0000", site.dms.url), "headers": {"Authorization": "Basic ZGVhbGVyOmRlYWxlci1wYXNz"}}),
        )
        .await
        .unwrap();
    assert_eq!(parts["body"]["partNo"], "P-100-0000", "{parts}");
}

//! `dibop-agent doctor` against a real control plane, a real DMS simulator
//! and closed ports: one line per check, OK or what to fix, and a non-zero
//! exit when a check fails.

use dibop_e2e::harness::{Api, ControlPlane, Dms, bin, enroll};

/// A control plane with a tenant, a relay group and an enrollment token for
/// it, and a DMS simulator (held to keep them running).
struct Site {
    cp: ControlPlane,
    api: Api,
    dms: Dms,
    group: String,
    token: String,
}

async fn site(dir: &std::path::Path, tenant: &str) -> Site {
    let cp = ControlPlane::start(&dir.join("cp")).await.unwrap();
    let api = cp.tenant(tenant).await.unwrap();
    let dms = Dms::start().await.unwrap();
    let group = api.create_group("site").await.unwrap();
    let token = api.enrollment_token(&group, None).await.unwrap();
    Site {
        cp,
        api,
        dms,
        group,
        token,
    }
}

/// One relayed call through the site's agents; asserts it was answered.
async fn one_call(s: &Site) {
    let (status, answer) = s
        .api
        .send(
            "POST",
            &format!("/agent-groups/{}/calls", s.group),
            Some(serde_json::json!({"method": "GET",
                "url": format!("{}/api/v1/vehicles?page_size=1", s.dms.url),
                "headers": {"X-API-Key": "dms-demo-key"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{answer}");
}

async fn doctor(data_dir: &std::path::Path, config: &std::path::Path) -> (bool, String) {
    let out = tokio::process::Command::new(bin("dibop-agent"))
        .args(["doctor", "--data-dir"])
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn line<'a>(report: &'a str, check: &str) -> &'a str {
    report
        .lines()
        .find(|l| l[5..].starts_with(check))
        .unwrap_or_else(|| panic!("no `{check}` line in:\n{report}"))
}

#[tokio::test]
async fn doctor_says_what_works_and_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), "doctor-motors").await;
    let agent_dir = dir.path().join("agent");
    let (ok, text) = enroll(&site.token, &agent_dir).await.unwrap();
    assert!(ok, "{text}");
    let config = dir.path().join("agent.toml");

    // Everything in order.
    std::fs::write(
        &config,
        format!("[policy]\nallow = [\"{}\"]\n", site.dms.addr),
    )
    .unwrap();
    let (passed, report) = doctor(&agent_dir, &config).await;
    assert!(passed, "{report}");
    for check in [
        "identity",
        "certificate",
        "config",
        "control plane DNS",
        "tunnel (QUIC, UDP)",
        "tunnel (TLS, TCP)",
    ] {
        assert!(line(&report, check).starts_with("OK"), "{report}");
    }
    assert!(
        line(&report, &format!("target {}", site.dms.addr)).starts_with("OK"),
        "{report}"
    );

    // Only TCP reaches the control plane (nothing answers UDP on the port):
    // QUIC is a warning, not a failure, because the agent gets through over TCP.
    let tcp_only_addr = dibop_e2e::harness::tcp_only_path(site.cp.tunnel_addr)
        .await
        .unwrap();
    std::fs::write(
        &config,
        format!(
            "[policy]\nallow = [\"{}\"]\n[tunnel]\ncontrol_plane = \"{tcp_only_addr}\"\n",
            site.dms.addr
        ),
    )
    .unwrap();
    let (passed, report) = doctor(&agent_dir, &config).await;
    assert!(passed, "{report}");
    assert!(
        line(&report, "tunnel (QUIC, UDP)").starts_with("WARN"),
        "{report}"
    );
    assert!(
        line(&report, "tunnel (TLS, TCP)").starts_with("OK"),
        "{report}"
    );

    // A target that refuses connections, and an empty-handed tunnel port.
    std::fs::write(
        &config,
        format!(
            "[policy]\nallow = [\"{}\", \"127.0.0.1:9\"]\n[tunnel]\ncontrol_plane = \"127.0.0.1:9\"\n",
            site.dms.addr
        ),
    )
    .unwrap();
    let (passed, report) = doctor(&agent_dir, &config).await;
    assert!(!passed, "{report}");
    let target = line(&report, "target 127.0.0.1:9");
    assert!(
        target.starts_with("FAIL") && target.contains("refuses connections"),
        "{report}"
    );
    let tunnel = line(&report, "tunnel (QUIC, UDP)");
    assert!(
        tunnel.starts_with("FAIL") && tunnel.contains("UDP"),
        "{report}"
    );
    let tcp = line(&report, "tunnel (TLS, TCP)");
    assert!(tcp.starts_with("FAIL") && tcp.contains("TCP"), "{report}");

    // Not enrolled: says how to enroll.
    let (passed, report) = doctor(&dir.path().join("nothing"), &config).await;
    assert!(!passed);
    assert!(
        line(&report, "identity").contains("dibop-agent enroll"),
        "{report}"
    );
}

async fn status(data_dir: &std::path::Path) -> (bool, String) {
    let out = tokio::process::Command::new(bin("dibop-agent"))
        .args(["status", "--data-dir"])
        .arg(data_dir)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn status_tells_whether_the_agent_runs_and_its_calls() {
    use dibop_e2e::harness::Agent;
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), "status-motors").await;
    // Before it ever ran: says so.
    let (ok, text) = status(&dir.path().join("agent")).await;
    assert!(!ok && text.contains("has not run"), "{text}");
    let mut agent = Agent::enroll_and_start(
        dir.path(),
        "agent",
        &site.token,
        &[site.dms.addr.to_string()],
    )
    .await
    .unwrap();
    site.api.wait_online(&agent.id).await.unwrap();
    one_call(&site).await;
    // The agent writes its state when the tunnel comes up and every few seconds.
    let report = dibop_e2e::harness::eventually(
        "the status shows the call",
        std::time::Duration::from_secs(20),
        || {
            let dir = agent.data_dir.clone();
            async move {
                let (ok, text) = status(&dir).await;
                (ok && text.contains("1 ok")).then_some(text)
            }
        },
    )
    .await
    .unwrap();
    assert!(report.contains("is online over quic"), "{report}");
    agent.terminate().await.unwrap();
    let (ok, text) = status(&agent.data_dir).await;
    assert!(!ok, "a stopped agent reported as running: {text}");
}

#[tokio::test]
async fn the_agent_serves_prometheus_metrics_where_asked() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), "metrics-motors").await;
    let agent_dir = dir.path().join("agent");
    let (ok, text) = enroll(&site.token, &agent_dir).await.unwrap();
    assert!(ok, "{text}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\nallow = [\"{}\"]\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            site.dms.addr
        ),
    )
    .unwrap();
    let _agent = tokio::process::Command::new(bin("dibop-agent"))
        .args(["run", "--data-dir"])
        .arg(&agent_dir)
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let online = dibop_e2e::harness::eventually(
        "the agent online in its metrics",
        std::time::Duration::from_secs(20),
        || {
            let url = url.clone();
            async move {
                let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
                text.contains("dibop_agent_tunnel_online 1").then_some(text)
            }
        },
    )
    .await
    .unwrap();
    assert!(online.contains("dibop_agent_tunnel_info{transport=\"quic\",state=\"online\"} 1"));
    one_call(&site).await;
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("dibop_agent_calls_total{outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dibop_agent_call_duration_seconds_count 1"),
        "{text}"
    );
    let other = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn an_agent_exits_when_its_tunnel_stays_down_if_asked() {
    let dir = tempfile::tempdir().unwrap();
    let site = site(dir.path(), "unhealthy-motors").await;
    let agent_dir = dir.path().join("agent");
    let (ok, text) = enroll(&site.token, &agent_dir).await.unwrap();
    assert!(ok, "{text}");
    // A tunnel address where nothing answers.
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[policy]\nallow = []\n[tunnel]\ncontrol_plane = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let run = tokio::process::Command::new(bin("dibop-agent"))
        .args(["run", "--exit-on-unhealthy", "1s", "--data-dir"])
        .arg(&agent_dir)
        .arg("--config")
        .arg(&config)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the agent did not give up")
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--exit-on-unhealthy"), "{stderr}");
    // A bad duration is refused before anything runs.
    let bad = tokio::process::Command::new(bin("dibop-agent"))
        .args(["run", "--exit-on-unhealthy", "soon", "--data-dir"])
        .arg(&agent_dir)
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a duration"));
}

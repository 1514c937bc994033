//! Connections end to end: real `dibop`, `dibop-agent` and `dms-sim`
//! processes. A connection in `agent_group` mode runs on the dealer's agent,
//! which also fetches the OAuth2 token from the on-premise token endpoint;
//! the cloud agent of a real `dibop serve` refuses private addresses.

use dibop_e2e::harness::{Agent, ControlPlane, Dms};
use serde_json::{Value, json};

#[tokio::test]
async fn a_connection_runs_on_the_sites_agent_with_an_on_premise_oauth2_server() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp")).await.unwrap();
    let api = cp.tenant("acme-motors").await.unwrap();
    let dms = Dms::start().await.unwrap();
    let group = api.create_group("site-a").await.unwrap();
    let token = api.enrollment_token(&group, None).await.unwrap();
    let mut agent = Agent::enroll_and_start(dir.path(), "gw", &token, &[dms.addr.to_string()])
        .await
        .unwrap();
    api.wait_online(&agent.id).await.unwrap();

    let (_, catalogue) = api.send("GET", "/catalogue?q=dms-sim", None).await.unwrap();
    let connector = catalogue[0]["id"].as_str().unwrap().to_owned();
    let (status, created) = api
        .send(
            "POST",
            "/connections",
            Some(json!({
                "connector_id": connector, "name": "Munich DMS", "auth_type": "oauth2_client_credentials",
                "credentials": {"client_id": "dibop-client", "client_secret": "dibop-secret"},
                "base_url": dms.url, "execution_mode": "agent_group", "agent_group_id": group,
                "activate": true,
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let (_, tested) = api
        .send("POST", &format!("/connections/{id}/test"), None)
        .await
        .unwrap();
    assert_eq!(tested["outcome"], "success", "{tested}");
    assert_eq!(tested["ran_on"], agent.id.as_str());

    let invoke = format!("/connections/{id}/operations/listVehicles/invoke");
    let (status, result) = api
        .send(
            "POST",
            &invoke,
            Some(json!({"parameters": {"page_size": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["ranOn"], agent.id.as_str());
    // Test Connection made the agent fetch a token (only the agent can reach
    // the token endpoint on loopback: the cloud agent refuses private
    // addresses); the call reuses it from the agent's cache.
    assert_eq!(result["tokenFetches"], 0, "{result}");
    assert_eq!(result["body"]["items"].as_array().unwrap().len(), 3);
    // New credentials start a new cache entry: one fetch, then none.
    let (status, _) = api
        .send(
            "PUT",
            &format!("/connections/{id}/credentials"),
            Some(json!({"credentials": {"client_id": "dibop-client", "client_secret": "dibop-secret"}})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (_, fresh) = api.send("POST", &invoke, Some(json!({}))).await.unwrap();
    assert_eq!(fresh["tokenFetches"], 1, "{fresh}");
    let (_, again) = api.send("POST", &invoke, Some(json!({}))).await.unwrap();
    assert_eq!(again["tokenFetches"], 0, "{again}");

    let (_, calls) = api
        .send("GET", &format!("/api-calls?connection_id={id}"), None)
        .await
        .unwrap();
    assert!(
        calls
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ran_on"] == agent.id.as_str()),
        "{calls}"
    );

    // The site goes dark: the outcome says so.
    agent.terminate().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let tested: Value = loop {
        let (_, t) = api
            .send("POST", &format!("/connections/{id}/test"), None)
            .await
            .unwrap();
        if t["outcome"] == "agent_unavailable" || std::time::Instant::now() > deadline {
            break t;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(tested["outcome"], "agent_unavailable", "{tested}");
}

#[tokio::test]
async fn the_cloud_agent_refuses_private_addresses_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp")).await.unwrap();
    let api = cp.tenant("acme-motors").await.unwrap();
    let dms = Dms::start().await.unwrap();
    let (_, catalogue) = api.send("GET", "/catalogue?q=dms-sim", None).await.unwrap();
    let (_, tested) = api
        .send(
            "POST",
            "/connections/test",
            Some(
                json!({"connector_id": catalogue[0]["id"], "auth_type": "api_key",
                "credentials": {"api_key": "dms-demo-key"}, "base_url": dms.url}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(tested["outcome"], "policy_denied", "{tested}");
    assert_eq!(tested["ran_on"], "cloud");
    // The remedy is the control plane's setting, not a dealer's config file.
    let detail = tested["detail"].as_str().unwrap();
    assert!(detail.contains("cloud_agent_allow"), "{detail}");
    assert!(!detail.contains("agent's config file"), "{detail}");
}

//! Connections against a real DMS simulator through the built-in cloud
//! agent: every auth scheme the simulator speaks, Test Connection outcomes,
//! retries, token caching, activation, rotation and deletion, the call log,
//! and credentials that never come back out.

use std::sync::Arc;

use dibop_control_plane::testing::{TestCp, code, spawn_dms_sim};
use serde_json::{Value, json};

/// `acme` connected to a DMS simulator.
struct Cp {
    cp: TestCp,
    sim: String,
    dms_sim: String,
}

impl std::ops::Deref for Cp {
    type Target = TestCp;
    fn deref(&self) -> &TestCp {
        &self.cp
    }
}

async fn cp() -> Cp {
    cp_with(|_| {}).await
}

async fn cp_with(tune: impl FnOnce(&mut dibop_control_plane::Settings)) -> Cp {
    let cp = TestCp::start_with(tune).await;
    let dms_sim = cp.dms_sim_connector().await;
    Cp {
        sim: spawn_dms_sim().await,
        dms_sim,
        cp,
    }
}

impl Cp {
    /// Creates and activates a connection to the simulator.
    async fn connect(&self, name: &str, auth_type: &str, credentials: Value) -> String {
        let (status, created) = self
            .post(
                "/connections",
                json!({"connector_id": self.dms_sim, "name": name, "auth_type": auth_type,
                    "credentials": credentials, "base_url": self.sim, "activate": true}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    /// The newest logged call of `operation`, with its bodies.
    async fn newest_call(&self, operation: &str) -> Value {
        let (_, calls) = self.get(&format!("/api-calls?operation={operation}")).await;
        let id = calls[0]["id"].as_str().unwrap();
        self.get(&format!("/api-calls/{id}")).await.1
    }

    async fn invoke(&self, id: &str, operation: &str, body: Value) -> (u16, Value) {
        self.post(
            &format!("/connections/{id}/operations/{operation}/invoke"),
            body,
        )
        .await
    }
}

#[tokio::test]
async fn every_scheme_of_the_simulator_calls_for_real() {
    let cp = cp().await;
    let key = cp
        .connect("dms key", "api_key", json!({"api_key": "dms-demo-key"}))
        .await;
    let basic = cp
        .connect(
            "dms basic",
            "basic",
            json!({"username": "dealer", "password": "dealer-pass"}),
        )
        .await;
    let oauth = cp
        .connect(
            "dms oauth",
            "oauth2_client_credentials",
            json!({"client_id": "dibop-client", "client_secret": "dibop-secret"}),
        )
        .await;
    let session = cp
        .connect(
            "dms session",
            "dynamic_api_key",
            json!({"username": "dealer", "password": "dealer-pass"}),
        )
        .await;
    for id in [&key, &basic, &oauth, &session] {
        let (status, result) = cp
            .invoke(id, "listVehicles", json!({"parameters": {"page_size": 2}}))
            .await;
        assert_eq!(status, 200, "{result}");
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["status"], 200);
        assert_eq!(result["ranOn"], "cloud");
        assert_eq!(
            result["body"]["items"].as_array().unwrap().len(),
            2,
            "{result}"
        );
    }
    // A path parameter, encoded; the VIN comes from the list.
    let (_, list) = cp
        .invoke(
            &key,
            "listVehicles",
            json!({"parameters": {"page_size": 1}}),
        )
        .await;
    let vin = list["body"]["items"][0]["vin"].as_str().unwrap().to_owned();
    let (_, one) = cp
        .invoke(&basic, "getVehicle", json!({"parameters": {"vin": vin}}))
        .await;
    assert_eq!(one["body"]["vin"], vin.as_str(), "{one}");

    // OAuth2: one token for many calls.
    let (_, second) = cp.invoke(&oauth, "listVehicles", json!({})).await;
    assert_eq!(
        second["tokenFetches"], 0,
        "the cached token is reused: {second}"
    );

    // Bad parameters are named, nothing is sent.
    let (status, answer) = cp
        .invoke(&key, "getVehicle", json!({"parameters": {"vim": "x"}}))
        .await;
    assert_eq!(status, 422, "{answer}");
    let problems = answer["error"]["details"].to_string();
    assert!(
        problems.contains("`vim` is not a parameter")
            && problems.contains("`vin` (path) is required"),
        "{problems}"
    );
    let (status, _) = cp.invoke(&key, "noSuchOperation", json!({})).await;
    assert_eq!(status, 404);

    // The call log: every call, its connection, no credentials.
    let (_, calls) = cp.get(&format!("/api-calls?connection_id={key}")).await;
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["connection_name"], "dms key");
    assert_eq!(calls[0]["ran_on"], "cloud");
    let (_, failed) = cp.get("/api-calls?outcome=failed").await;
    assert_eq!(failed, json!([]));
    let (_, all) = cp.get("/api-calls?limit=2").await;
    assert_eq!(all.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn test_connection_names_each_outcome() {
    let cp = cp().await;
    let test = |credentials: Value, base_url: String, settings: Value| {
        json!({"connector_id": cp.dms_sim, "auth_type": "basic", "credentials": credentials,
               "base_url": base_url, "settings": settings})
    };
    let good = json!({"username": "dealer", "password": "dealer-pass"});
    // Typed into the form, not saved.
    let (_, ok) = cp
        .post(
            "/connections/test",
            test(good.clone(), cp.sim.clone(), json!({})),
        )
        .await;
    assert_eq!(
        (ok["outcome"].as_str(), ok["success"].as_bool()),
        (Some("success"), Some(true)),
        "{ok}"
    );
    assert_eq!(ok["operation"], "listVehicles");

    // A wrong password.
    let (_, wrong) = cp
        .post(
            "/connections/test",
            test(
                json!({"username": "dealer", "password": "nope"}),
                cp.sim.clone(),
                json!({}),
            ),
        )
        .await;
    assert_eq!(wrong["outcome"], "auth_failure", "{wrong}");
    assert_eq!(wrong["http_status"], 401);
    assert!(
        wrong["detail"]
            .as_str()
            .unwrap()
            .contains("check the credentials"),
        "{wrong}"
    );

    // A closed port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        format!("http://{a}")
    };
    let (_, refused) = cp
        .post(
            "/connections/test",
            test(good.clone(), closed, json!({"max_retries": 0})),
        )
        .await;
    assert_eq!(refused["outcome"], "network_error", "{refused}");

    // A server that never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let (_, slow) = cp
        .post(
            "/connections/test",
            test(
                good.clone(),
                silent_url,
                json!({"timeout_ms": 300, "max_retries": 0}),
            ),
        )
        .await;
    assert_eq!(slow["outcome"], "timeout", "{slow}");
    assert!(
        slow["detail"].as_str().unwrap().contains("300 ms"),
        "{slow}"
    );

    // Outside the cloud agent's allow-list.
    let (_, denied) = cp
        .post(
            "/connections/test",
            test(good.clone(), "http://10.255.0.1:8080".into(), json!({})),
        )
        .await;
    assert_eq!(denied["outcome"], "policy_denied", "{denied}");

    // Missing and unknown credential fields are refused before anything runs.
    let (status, answer) = cp
        .post(
            "/connections/test",
            test(json!({"user": "x"}), cp.sim.clone(), json!({})),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    let details = answer["error"]["details"].to_string();
    for field in [
        "credentials.user",
        "credentials.username",
        "credentials.password",
    ] {
        assert!(details.contains(field), "{field} not named: {details}");
    }
    // Nothing of the unsaved tests was stored.
    let (_, list) = cp.get("/connections").await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn wrong_credentials_are_an_auth_failure_and_oauth_errors_are_explained() {
    let cp = cp().await;
    let bad = cp
        .connect("bad key", "api_key", json!({"api_key": "wrong-canary-key"}))
        .await;
    let (_, result) = cp.invoke(&bad, "listVehicles", json!({})).await;
    assert_eq!(
        (result["ok"].as_bool(), result["status"].as_u64()),
        (Some(false), Some(401)),
        "{result}"
    );
    assert_eq!(result["error"]["class"], "auth_failure");
    let bad_oauth = cp
        .connect(
            "bad oauth",
            "oauth2_client_credentials",
            json!({"client_id": "dibop-client", "client_secret": "nope-canary"}),
        )
        .await;
    let (_, result) = cp.invoke(&bad_oauth, "listVehicles", json!({})).await;
    assert_eq!(result["error"]["class"], "auth_failure", "{result}");
    let message = result["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("getting an OAuth2 token") && message.contains("/oauth/token"),
        "{message}"
    );
    // The secrets appear in no answer and no log entry.
    let (_, calls) = cp.get("/api-calls").await;
    let (_, views) = cp.get("/connections").await;
    for text in [result.to_string(), calls.to_string(), views.to_string()] {
        assert!(!text.contains("canary"), "a secret leaked: {text}");
    }
    // Non-secret fields are shown; secret ones only as set.
    let (_, one) = cp.get(&format!("/connections/{bad_oauth}")).await;
    assert_eq!(
        one["credentials"]["client_id"],
        json!({"secret": false, "set": true, "value": "dibop-client"})
    );
    assert_eq!(
        one["credentials"]["client_secret"],
        json!({"secret": true, "set": true})
    );
}

#[tokio::test]
async fn retries_follow_503_and_429_only_where_safe() {
    let cp = cp().await;
    let id = cp
        .connect("dms", "api_key", json!({"api_key": "dms-demo-key"}))
        .await;
    let faults = |fault: &str, count: u32| {
        let url = format!("{}/_sim/faults", cp.sim);
        let body = json!({"fault": fault, "count": count});
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    // Two 503s, then success: a GET is retried (the connector allows 3 tries).
    faults("503", 2).await;
    let (_, result) = cp.invoke(&id, "listVehicles", json!({})).await;
    assert_eq!(
        (result["ok"].as_bool(), result["attempts"].as_u64()),
        (Some(true), Some(3)),
        "{result}"
    );
    // A 429 with Retry-After: waited for, then retried.
    faults("429", 1).await;
    let started = std::time::Instant::now();
    let (_, result) = cp.invoke(&id, "listVehicles", json!({})).await;
    assert_eq!(
        (result["ok"].as_bool(), result["attempts"].as_u64()),
        (Some(true), Some(2)),
        "{result}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "Retry-After: 2 was not honoured"
    );
    // A POST is retried only because the DMS connector declares an
    // idempotency header: every try carries the same key.
    faults("503", 1).await;
    let (_, result) = cp
        .invoke(
            &id,
            "createAppointment",
            json!({"parameters": {"appointment": {"start": "2027-01-01T09:00:00Z"}}}),
        )
        .await;
    assert_eq!(
        (result["status"].as_u64(), result["attempts"].as_u64()),
        (Some(201), Some(2)),
        "{result}"
    );
    // Retries off.
    cp.patch(
        &format!("/connections/{id}"),
        json!({"settings": {"retry_on_failure": false}}),
    )
    .await;
    faults("503", 1).await;
    let (_, result) = cp.invoke(&id, "listVehicles", json!({})).await;
    assert_eq!(result["attempts"], 1, "{result}");
}

#[tokio::test]
async fn lifecycle_activation_rotation_deletion() {
    let cp = cp().await;
    let (status, created) = cp
        .post("/connections", json!({"connector_id": cp.dms_sim, "credentials": {"api_key": "old-canary"}, "base_url": cp.sim}))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["name"], "DMS Simulator",
        "the name defaults to the system's"
    );
    assert_eq!(created["status"], "inactive");
    assert_eq!(created["health"], "unchecked");
    assert_eq!(created["connector_version"], "1.0.0");
    let (status, answer) = cp.invoke(&id, "listVehicles", json!({})).await;
    assert_eq!((status, code(&answer)), (409, "connection_inactive"));
    // Saved credentials are wrong: Test Connection says so, and so does a call.
    let (_, tested) = cp
        .send("POST", &format!("/connections/{id}/test"), None)
        .await;
    assert_eq!(tested["outcome"], "auth_failure", "{tested}");
    let (_, activated) = cp
        .send("POST", &format!("/connections/{id}/activate"), None)
        .await;
    assert_eq!(activated["connection"]["status"], "active");
    assert_eq!(activated["active_orchestrations"], json!([]));
    let (_, result) = cp.invoke(&id, "listVehicles", json!({})).await;
    assert_eq!(result["status"], 401);
    // Rotation: audited, and the next call uses the new key.
    let (status, rotated) = cp
        .put(
            &format!("/connections/{id}/credentials"),
            json!({"credentials": {"api_key": "dms-demo-key"}}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let (_, result) = cp.invoke(&id, "listVehicles", json!({})).await;
    assert_eq!(result["ok"], true, "{result}");
    let (_, audit) = cp.get("/audit?action=connection.rotate_credentials").await;
    assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");
    assert!(!audit.to_string().contains("dms-demo-key"));
    // Health: checked now, recorded.
    let (_, h) = cp
        .send("POST", &format!("/connections/{id}/health/check"), None)
        .await;
    assert_eq!(h["status"], "healthy", "{h}");
    let (_, history) = cp.get(&format!("/connections/{id}/health")).await;
    assert_eq!(history.as_array().unwrap().len(), 1);
    let (_, now) = cp.get(&format!("/connections/{id}")).await;
    assert_eq!(now["health"], "healthy");
    // Log level changes at run time.
    let (status, patched) = cp
        .patch(
            &format!("/connections/{id}"),
            json!({"settings": {"log_level": "debug"}}),
        )
        .await;
    assert_eq!(
        (status, patched["settings"]["log_level"].as_str()),
        (200, Some("debug"))
    );
    let (status, _) = cp
        .patch(
            &format!("/connections/{id}"),
            json!({"settings": {"log_level": "loud"}}),
        )
        .await;
    assert_eq!(status, 422);
    // Deactivated: no calls; deleted: gone, the call log keeps the name.
    cp.send("POST", &format!("/connections/{id}/deactivate"), None)
        .await;
    let (status, _) = cp.invoke(&id, "listVehicles", json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(cp.delete(&format!("/connections/{id}")).await.0, 204);
    assert_eq!(cp.get(&format!("/connections/{id}")).await.0, 404);
    assert_eq!(cp.invoke(&id, "listVehicles", json!({})).await.0, 404);
    let (_, calls) = cp.get(&format!("/api-calls?connection_id={id}")).await;
    assert_eq!(calls[0]["connection_name"], "DMS Simulator");
    // No secret row is left behind.
    assert!(cp.core.store.secrets(&id).await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_connections_are_refused_with_every_problem() {
    let cp = cp().await;
    let (status, answer) = cp
        .post(
            "/connections",
            json!({"connector_id": cp.dms_sim, "auth_type": "kerberos", "base_url": "ftp://x",
                "execution_mode": "agent_group", "settings": {"timeout_ms": 0, "max_retries": 99}}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    let details = answer["error"]["details"].to_string();
    for field in [
        "auth_type",
        "base_url",
        "agent_group_id",
        "settings.timeout_ms",
        "settings.max_retries",
    ] {
        assert!(
            details.contains(&format!("\"{field}\"")),
            "{field} not named: {details}"
        );
    }
    let (status, _) = cp
        .post("/connections", json!({"connector_id": "cnr_nope"}))
        .await;
    assert_eq!(status, 404);
    // A draft is not usable.
    let draft: Value = serde_yaml_ng::from_str(
        &include_str!("../../catalogue/dms-sim.yaml").replace("slug: dms-sim", "slug: my-dms"),
    )
    .unwrap();
    let (_, d) = cp.post("/connectors", draft).await;
    let (status, answer) = cp
        .post(
            "/connections",
            json!({"connector_id": d["id"], "credentials": {"api_key": "k"}}),
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (409, "connector_not_published"),
        "{answer}"
    );
    // Names are unique per enterprise.
    cp.connect("twice", "api_key", json!({"api_key": "k"}))
        .await;
    let (status, _) = cp
        .post(
            "/connections",
            json!({"connector_id": cp.dms_sim, "name": "twice", "credentials": {"api_key": "k"}}),
        )
        .await;
    assert_eq!(status, 409);
    // A viewer reads, cannot invoke or create.
    let (_, viewer) = cp
        .post("/api-tokens", json!({"name": "v", "role": "viewer"}))
        .await;
    let viewer = viewer["token"].as_str().unwrap();
    assert_eq!(cp.get_as(viewer, "/connections").await.0, 200);
    let (_, list) = cp.get("/connections").await;
    let id = list[0]["id"].as_str().unwrap();
    assert_eq!(
        cp.post_as(
            viewer,
            &format!("/connections/{id}/operations/listVehicles/invoke"),
            json!({})
        )
        .await
        .0,
        403
    );
}

#[tokio::test]
async fn pagination_is_followed_up_to_the_cap() {
    let cp = cp().await;
    let id = cp
        .connect("dms", "api_key", json!({"api_key": "dms-demo-key"}))
        .await;
    let (status, result) = cp
        .invoke(
            &id,
            "listCustomers",
            json!({"parameters": {"page_size": 5}, "max_pages": 3}),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["pageCount"], 3, "{result}");
    assert_eq!(result["items"].as_array().unwrap().len(), 15);
    assert_eq!(result["truncated"], true);
    let ids: std::collections::HashSet<String> = result["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(ids.len(), 15, "pages repeat items");
    let (_, calls) = cp.get(&format!("/api-calls?connection_id={id}")).await;
    assert_eq!(
        calls.as_array().unwrap().len(),
        3,
        "each page is a recorded call"
    );
}

#[tokio::test]
async fn operators_need_the_verbs_role_on_the_connection() {
    let cp = cp().await;
    let id = cp
        .connect("dms", "api_key", json!({"api_key": "dms-demo-key"}))
        .await;
    let (_, op) = cp
        .post("/api-tokens", json!({"name": "ops", "role": "operator"}))
        .await;
    let (operator, operator_id) = (
        op["token"].as_str().unwrap().to_owned(),
        op["id"].as_str().unwrap().to_owned(),
    );
    let invoke = |operation: &str| format!("/connections/{id}/operations/{operation}/invoke");
    let (status, answer) = cp
        .post_as(&operator, &invoke("listVehicles"), json!({}))
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`GET` role"),
        "{answer}"
    );

    let (_, roles) = cp.get(&format!("/connections/{id}/grants")).await;
    assert_eq!(roles["roles"], json!(["admin", "GET", "POST"]));
    let grants_path = format!("/connections/{id}/grants");
    let grant = |grants: Value| cp.put(&grants_path, json!({"grants": grants}));
    let (status, answer) = grant(json!([{"subject": "token:tok_nope", "role": "GET"}, {"subject": format!("token:{operator_id}"), "role": "DELETE"}])).await;
    assert_eq!(status, 422, "{answer}");
    let details = answer["error"]["details"].to_string();
    assert!(
        details.contains("grants[0].subject") && details.contains("grants[1].role"),
        "{details}"
    );

    let (status, _) =
        grant(json!([{"subject": format!("token:{operator_id}"), "role": "GET"}])).await;
    assert_eq!(status, 200);
    let (status, result) = cp
        .post_as(&operator, &invoke("listVehicles"), json!({}))
        .await;
    assert_eq!(
        (status, result["ok"].as_bool()),
        (200, Some(true)),
        "{result}"
    );
    let (status, _) = cp
        .post_as(
            &operator,
            &invoke("createAppointment"),
            json!({"parameters": {"appointment": {"start": "2027-01-01T09:00:00Z"}}}),
        )
        .await;
    assert_eq!(status, 403, "GET does not allow POST");
    let (status, _) = cp
        .patch_as(
            &operator,
            &format!("/connections/{id}"),
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(status, 403, "managing needs admin");
    // The connection's admin role holds every verb and management.
    grant(json!([{"subject": format!("token:{operator_id}"), "role": "admin"}])).await;
    let (status, _) = cp
        .patch_as(
            &operator,
            &format!("/connections/{id}"),
            json!({"name": "renamed"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = cp
        .post_as(
            &operator,
            &invoke("createAppointment"),
            json!({"parameters": {"appointment": {"start": "2027-01-01T09:00:00Z"}}}),
        )
        .await;
    assert_eq!(status, 200);
    // Grants are audited; a viewer never invokes, grant or not.
    let (_, audit) = cp.get("/audit?action=connection.grants").await;
    assert_eq!(audit.as_array().unwrap().len(), 2);
    let (_, v) = cp
        .post("/api-tokens", json!({"name": "v", "role": "viewer"}))
        .await;
    grant(json!([{"subject": format!("token:{}", v["id"].as_str().unwrap()), "role": "admin"}]))
        .await;
    let (status, _) = cp
        .post_as(
            v["token"].as_str().unwrap(),
            &invoke("listVehicles"),
            json!({}),
        )
        .await;
    assert_eq!(status, 403);
}

/// Starts the npm `proxy` server with Basic credentials; returns its URL,
/// the process and its forwarded-request lines.
async fn proxy(
    user: &str,
    password: &str,
) -> (
    String,
    tokio::process::Child,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::AsyncBufReadExt as _;
    let deps = std::env::var("DIBOP_TEST_DEPS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-deps")
        });
    let lib = deps.join("node_modules/proxy/dist/proxy.js");
    assert!(
        lib.exists(),
        "{} is missing: run scripts/test (it installs the npm package proxy)",
        lib.display()
    );
    let mut child = tokio::process::Command::new("node")
        .arg(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/proxy/server.mjs"))
        .arg(lib)
        .args([user, password])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed (scripts/test installs it)");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(url) = line.strip_prefix("listening ") {
            let log = seen.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap().push(line);
                }
            });
            return (url.to_owned(), child, seen);
        }
    }
    panic!("the proxy did not start");
}

#[tokio::test]
async fn proxy_mode_goes_through_a_real_proxy_with_credentials() {
    let cp = cp().await;
    let (proxy_url, _proxy, seen) = proxy("dibop", "proxy-pass").await;
    let create = |name: &str, password: &str| {
        cp.post("/connections", json!({"connector_id": cp.dms_sim, "name": name, "auth_type": "api_key",
                "credentials": {"api_key": "dms-demo-key"}, "base_url": cp.sim, "activate": true,
                "execution_mode": "proxy", "proxy": {"url": proxy_url, "username": "dibop", "password": password}}))
    };
    let (status, good) = create("via proxy", "proxy-pass").await;
    assert_eq!(status, 201, "{good}");
    let (_, result) = cp
        .invoke(
            good["id"].as_str().unwrap(),
            "listVehicles",
            json!({"parameters": {"page_size": 1}}),
        )
        .await;
    assert_eq!(
        (result["ok"].as_bool(), result["ranOn"].as_str()),
        (Some(true), Some("cloud")),
        "{result}"
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("/api/v1/vehicles")),
        "the proxy forwarded nothing: {:?}",
        seen.lock().unwrap()
    );
    assert_eq!(good["proxy_url"], proxy_url.as_str());
    assert!(!good.to_string().contains("proxy-pass"));
    let (_, bad) = create("bad proxy password", "wrong").await;
    let (_, refused) = cp
        .invoke(bad["id"].as_str().unwrap(), "listVehicles", json!({}))
        .await;
    assert_eq!(
        (refused["ok"].as_bool(), refused["status"].as_u64()),
        (Some(false), Some(407)),
        "{refused}"
    );
    // Changing mode needs the proxy; leaving proxy mode drops it.
    let id = good["id"].as_str().unwrap();
    let (status, cloud) = cp
        .patch(
            &format!("/connections/{id}"),
            json!({"execution_mode": "cloud"}),
        )
        .await;
    assert_eq!(
        (status, cloud["proxy_url"].clone()),
        (200, Value::Null),
        "{cloud}"
    );
    let (status, _) = cp
        .patch(
            &format!("/connections/{id}"),
            json!({"execution_mode": "proxy"}),
        )
        .await;
    assert_eq!(status, 422, "proxy mode without a proxy");
}

#[tokio::test]
async fn usage_is_counted_and_a_major_version_notifies_its_users() {
    let cp = cp().await;
    let tenant = cp.core.store.tenant_by_name("acme").await.unwrap().unwrap();
    let mut plan = tenant.clone();
    plan.enterprise_publishing = 1;
    cp.core.store.update_tenant_plan(&plan).await.unwrap();
    let mut def: Value = serde_yaml_ng::from_str(
        &include_str!("../../catalogue/dms-sim.yaml").replace("slug: dms-sim", "slug: acme-dms"),
    )
    .unwrap();
    let (_, connector) = cp.post("/connectors", def.clone()).await;
    let connector = connector["id"].as_str().unwrap().to_owned();
    cp.post(
        &format!("/connectors/{connector}/publish"),
        json!({"scope": "enterprise"}),
    )
    .await;
    let (status, c) = cp
        .post("/connections", json!({"connector_id": connector, "name": "ours", "credentials": {"api_key": "dms-demo-key"},
                "base_url": cp.sim, "activate": true}))
        .await;
    assert_eq!(status, 201, "{c}");
    for _ in 0..2 {
        cp.invoke(c["id"].as_str().unwrap(), "listVehicles", json!({}))
            .await;
    }
    // An active orchestration calls the connection; a draft one does not count.
    for (name, activate) in [("uses-ours", true), ("draft-uses-ours", false)] {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/orchestrations", cp.base))
            .bearer_auth(&cp.admin)
            .header("content-type", "application/yaml")
            .body(format!(
                "format: dibop.orchestration/v1\nname: {name}\nsteps:\n  \
                 - {{id: list, type: call, connection: ours, operation: listVehicles}}\n"
            ))
            .send()
            .await
            .unwrap();
        let o: Value = resp.json().await.unwrap();
        if activate {
            let (status, a) = cp
                .send(
                    "POST",
                    &format!("/orchestrations/{}/activate", o["id"].as_str().unwrap()),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{a}");
        }
    }
    let (_, usage) = cp.get(&format!("/connectors/{connector}/usage")).await;
    assert_eq!(
        usage,
        json!({"enterprises": 1, "active_connections": 1, "orchestrations": 1, "calls_24h": 2, "calls_30d": 2})
    );

    // A breaking update: the enterprise hears about it, naming its connection.
    def["operations"]
        .as_array_mut()
        .unwrap()
        .retain(|o| o["id"] != "getPart");
    drop_orphan_mappings(&mut def);
    cp.put(&format!("/connectors/{connector}"), def).await;
    let (status, v2) = cp
        .post(
            &format!("/connectors/{connector}/versions"),
            json!({"bump": "major", "release_notes": "getPart removed."}),
        )
        .await;
    assert_eq!(status, 201, "{v2}");
    let (_, notes) = cp.get("/notifications?unread=true").await;
    assert_eq!(notes.as_array().unwrap().len(), 1, "{notes}");
    assert_eq!(notes[0]["kind"], "connector.major_version");
    assert!(
        notes[0]["message"].as_str().unwrap().contains("2.0.0"),
        "{notes}"
    );
    assert_eq!(notes[0]["details"]["connections"][0]["name"], "ours");
    // The connection stays on 1.0.0 and keeps working.
    let (_, still) = cp
        .get(&format!("/connections/{}", c["id"].as_str().unwrap()))
        .await;
    assert_eq!(still["connector_version"], "1.0.0");
    let (_, works) = cp
        .invoke(
            c["id"].as_str().unwrap(),
            "getPart",
            json!({"parameters": {"partNo": "X"}}),
        )
        .await;
    assert_eq!(
        works["method"], "GET",
        "the old version still has getPart: {works}"
    );
    // Moving it: a dry run shows the computed changes and nothing in the way.
    let conn = c["id"].as_str().unwrap();
    let (status, preview) = cp
        .post(
            &format!("/connections/{conn}/move"),
            json!({"version": "2.0.0", "dry_run": true}),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["moved"], false);
    assert_eq!(preview["problems"], json!([]), "{preview}");
    assert!(
        preview["changes"].to_string().contains("getPart"),
        "{preview}"
    );
    // A 3.0.0 that drops listVehicles would break the active orchestration: refused, naming it.
    let mut v3: Value = cp.get(&format!("/connectors/{connector}")).await.1["definition"].clone();
    v3["operations"]
        .as_array_mut()
        .unwrap()
        .retain(|o| o["id"] != "listVehicles");
    drop_orphan_mappings(&mut v3);
    if v3["health_check"] == "listVehicles" {
        v3["health_check"] = json!("health");
    }
    let (status, put) = cp.put(&format!("/connectors/{connector}"), v3).await;
    assert_eq!(status, 200, "{put}");
    let (status, v3) = cp
        .post(
            &format!("/connectors/{connector}/versions"),
            json!({"bump": "major", "release_notes": "listVehicles removed."}),
        )
        .await;
    assert_eq!(status, 201, "{v3}");
    let (status, refused) = cp
        .post(
            &format!("/connections/{conn}/move"),
            json!({"version": "3.0.0"}),
        )
        .await;
    assert_eq!(
        (status, code(&refused)),
        (409, "incompatible_version"),
        "{refused}"
    );
    let why = refused["error"]["message"].as_str().unwrap();
    assert!(
        why.contains("uses-ours") && why.contains("listVehicles"),
        "{why}"
    );
    // Unknown versions do not exist; the safe move happens and is audited.
    let (status, _) = cp
        .post(
            &format!("/connections/{conn}/move"),
            json!({"version": "9.9.9"}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, moved) = cp
        .post(
            &format!("/connections/{conn}/move"),
            json!({"version": "2.0.0"}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["connection"]["connector_version"], "2.0.0", "{moved}");
    let (status, _) = cp
        .invoke(conn, "getPart", json!({"parameters": {"partNo": "X"}}))
        .await;
    assert!(status >= 400, "2.0.0 has no getPart");
    let (_, works) = cp.invoke(conn, "listVehicles", json!({})).await;
    assert_eq!(works["ok"], true, "{works}");
    let (_, audit) = cp.get("/audit?action=connection.move_version").await;
    assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");

    let id = notes[0]["id"].as_str().unwrap();
    assert_eq!(
        cp.send("POST", &format!("/notifications/{id}/read"), None)
            .await
            .0,
        204
    );
    let (_, unread) = cp.get("/notifications?unread=true").await;
    assert_eq!(
        unread.as_array().unwrap().len(),
        1,
        "only 3.0.0's: {unread}"
    );
    assert_eq!(unread[0]["details"]["version"], "3.0.0");
}

/// A credential that no longer decrypts (its master key is gone, or the
/// stored value is damaged): calls say so with a clear error (never a 500),
/// health reports it as a failure, and rotation replaces it.
#[tokio::test]
async fn rotation_repairs_a_credential_that_no_longer_decrypts() {
    let cp = cp().await;
    let id = cp
        .connect("damaged", "api_key", json!({"api_key": "dms-demo-key"}))
        .await;
    let tenant = cp.core.store.tenant_by_name("acme").await.unwrap().unwrap();
    // Sealed under a key that no longer exists.
    let mut sealed = cp.core.store.secrets(&id).await.unwrap();
    for (_, s) in &mut sealed {
        *s = s.chars().rev().collect();
    }
    cp.core
        .store
        .replace_secrets(&tenant.id, &id, &sealed, 0)
        .await
        .unwrap();
    dibop_control_plane::connections::execute::forget(&cp.core, &id);
    let (status, answer) = cp.invoke(&id, "listVehicles", json!({})).await;
    assert_eq!(
        (status, code(&answer)),
        (409, "credentials_unreadable"),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/credentials")
    );
    let (status, h) = cp
        .send("POST", &format!("/connections/{id}/health/check"), None)
        .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(
        (h["status"].as_str(), h["outcome"].as_str()),
        (Some("offline"), Some("credentials_unreadable")),
        "{h}"
    );
    let (_, c) = cp.get(&format!("/connections/{id}")).await;
    assert_eq!(c["health"], "offline", "{c}");
    let (status, rotated) = cp
        .put(
            &format!("/connections/{id}/credentials"),
            json!({"credentials": {"api_key": "dms-demo-key"}}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let (_, result) = cp.invoke(&id, "listVehicles", json!({})).await;
    assert_eq!(result["ok"], true, "{result}");
}

#[tokio::test]
async fn active_connections_are_monitored_and_inactive_ones_are_not() {
    let cp = cp_with(|s| s.health_check_interval = std::time::Duration::from_millis(200)).await;
    let healthy = cp
        .connect("healthy", "api_key", json!({"api_key": "dms-demo-key"}))
        .await;
    let degraded = cp
        .connect("wrong key", "api_key", json!({"api_key": "nope"}))
        .await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (_, offline) = cp
        .post(
            "/connections",
            json!({"connector_id": cp.dms_sim, "name": "offline", "credentials": {"api_key": "k"},
                "base_url": closed, "activate": true, "settings": {"max_retries": 0}}),
        )
        .await;
    let offline = offline["id"].as_str().unwrap().to_owned();
    let (_, inactive) = cp
        .post("/connections", json!({"connector_id": cp.dms_sim, "name": "inactive", "credentials": {"api_key": "k"}, "base_url": cp.sim}))
        .await;
    let inactive = inactive["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for (id, expected) in [
        (&healthy, "healthy"),
        (&degraded, "degraded"),
        (&offline, "offline"),
    ] {
        loop {
            let (_, c) = cp.get(&format!("/connections/{id}")).await;
            if c["health"] == expected {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id} never became {expected}: {c}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let (_, history) = cp.get(&format!("/connections/{degraded}/health")).await;
    assert_eq!(history[0]["outcome"], "auth_failure", "{history}");
    let (_, none) = cp.get(&format!("/connections/{inactive}/health")).await;
    assert_eq!(none, json!([]), "an inactive connection is not checked");
    // Health checks are calls too, recorded as the system's.
    let (_, calls) = cp.get(&format!("/api-calls?connection_id={healthy}")).await;
    assert_eq!(calls[0]["actor"], "system:health");
}

#[tokio::test]
async fn password_grant_and_rotating_refresh_tokens_are_stored_back() {
    let cp = cp().await;
    let client = json!({"client_id": "dibop-client", "client_secret": "dibop-secret"});
    let mut password = client.clone();
    password["username"] = json!("dealer");
    password["password"] = json!("dealer-pass");
    let id = cp
        .connect("password grant", "oauth2_password", password)
        .await;
    let (_, result) = cp.invoke(&id, "listVehicles", json!({})).await;
    assert_eq!(
        (result["ok"].as_bool(), result["tokenFetches"].as_u64()),
        (Some(true), Some(1)),
        "{result}"
    );

    // An authorization-code connection starts from a refresh token the user's
    // consent left; every refresh rotates it, and the newest is stored.
    let minted: Value = reqwest::Client::new()
        .post(format!("{}/_sim/refresh-tokens", cp.sim))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first_refresh = minted["refresh_token"].as_str().unwrap().to_owned();
    let mut code = client.clone();
    code["refresh_token"] = json!(first_refresh);
    let id = cp
        .connect("authorization code", "oauth2_authorization_code", code)
        .await;
    let (_, result) = cp.invoke(&id, "listVehicles", json!({})).await;
    assert_eq!(result["ok"], true, "{result}");
    let stored = |cp: &Cp, id: String| {
        let core = cp.core.clone();
        async move {
            let row = core
                .store
                .connection(
                    &core.store.tenant_by_name("acme").await.unwrap().unwrap().id,
                    &id,
                )
                .await
                .unwrap()
                .unwrap();
            let resolved = dibop_control_plane::connections::execute::resolve(&core, row)
                .await
                .unwrap();
            resolved.credentials["refresh_token"].expose().to_owned()
        }
    };
    let rotated = stored(&cp, id.clone()).await;
    assert_ne!(
        rotated, first_refresh,
        "the rotated refresh token was stored back"
    );
    assert!(rotated.starts_with("dms-rt-"));
    // The old one is spent: a fresh connection with it fails; the stored one works
    // after the cache is gone (new credentials version).
    let mut spent = client.clone();
    spent["refresh_token"] = json!(first_refresh);
    let dead = cp
        .connect("spent", "oauth2_authorization_code", spent)
        .await;
    let (_, refused) = cp.invoke(&dead, "listVehicles", json!({})).await;
    assert_eq!(refused["error"]["class"], "auth_failure", "{refused}");
    let mut fresh = client.clone();
    fresh["refresh_token"] = json!(rotated);
    let (status, _) = cp
        .put(
            &format!("/connections/{id}/credentials"),
            json!({"credentials": fresh}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, again) = cp.invoke(&id, "listVehicles", json!({})).await;
    assert_eq!(
        (again["ok"].as_bool(), again["tokenFetches"].as_u64()),
        (Some(true), Some(1)),
        "{again}"
    );
}

/// Drops the CDM mappings of operations a test removed from a definition.
fn drop_orphan_mappings(def: &mut Value) {
    let ids: Vec<Value> = def["operations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| o["id"].clone())
        .collect();
    if let Some(m) = def["mappings"].as_object_mut() {
        m.retain(|k, _| ids.contains(&Value::String(k.clone())));
    }
}

/// The call log filters by time, and one call shows the bodies it sent and
/// received, with personal data hidden from a viewer.
#[tokio::test]
async fn the_call_log_filters_by_time_and_keeps_each_calls_bodies() {
    let cp = cp().await;
    let id = cp
        .connect("logged", "api_key", json!({"api_key": "dms-demo-key"}))
        .await;
    // By default only failed calls keep their bodies: a success has none.
    let (_, ok) = cp.invoke(&id, "listVehicles", json!({})).await;
    assert_eq!(ok["ok"], true);
    let plain = cp.newest_call("listVehicles").await;
    assert_eq!(
        (
            plain["payload_kept"].as_bool(),
            plain["response_body"].is_null()
        ),
        (Some(false), true),
        "{plain}"
    );
    let (_, failed) = cp
        .invoke(
            &id,
            "getVehicle",
            json!({"parameters": {"vin": "NOSUCHVIN00000000"}}),
        )
        .await;
    assert_eq!(failed["ok"], false, "{failed}");
    let kept = cp.newest_call("getVehicle").await;
    assert_eq!(
        kept["payload_kept"], true,
        "a failure keeps its body: {kept}"
    );
    // Every call's bodies from here on.
    let (status, _) = cp
        .patch(
            &format!("/connections/{id}"),
            json!({"settings": {"log_payloads": "all"}}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, customers) = cp
        .invoke(
            &id,
            "listCustomers",
            json!({"parameters": {"page_size": 2}}),
        )
        .await;
    assert_eq!(customers["ok"], true, "{customers}");
    let email = customers["body"]["items"][0]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, calls) = cp
        .get("/api-calls?since=2020-01-01&operation=listCustomers")
        .await;
    assert_eq!(status, 200, "{calls}");
    assert_eq!(calls.as_array().unwrap().len(), 1, "{calls}");
    let (_, none) = cp.get("/api-calls?until=2020-01-01T00:00:00Z").await;
    assert_eq!(none, json!([]));
    let (status, e) = cp.get("/api-calls?since=yesterday").await;
    assert_eq!(status, 422, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("since"),
        "{e}"
    );

    let call = calls[0]["id"].as_str().unwrap();
    let (status, one) = cp.get(&format!("/api-calls/{call}")).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["operation"], "listCustomers");
    assert_eq!(one["payload_kept"], true);
    assert_eq!(
        one["response_body"]["items"][0]["email"],
        email.as_str(),
        "{one}"
    );
    assert!(
        !one.to_string().contains("dms-demo-key"),
        "no credential in the log"
    );
    // A viewer sees the call, not the personal data in it.
    let (_, viewer) = cp
        .post("/api-tokens", json!({"name": "auditor", "role": "viewer"}))
        .await;
    let viewer = viewer["token"].as_str().unwrap().to_owned();
    let (status, seen) = cp.get_as(&viewer, &format!("/api-calls/{call}")).await;
    assert_eq!(status, 200, "{seen}");
    assert!(!seen.to_string().contains(&email), "{seen}");
    assert_eq!(seen["response_body"]["items"][0]["email"], "[redacted]");
    assert_eq!(cp.get("/api-calls/call_nope").await.0, 404);
    // What a call sent is kept too.
    let (_, booked) = cp
        .invoke(
            &id,
            "createAppointment",
            json!({"parameters": {"appointment": {"start": "2027-01-04T09:00:00Z", "service": "logged-body"}}}),
        )
        .await;
    assert_eq!(booked["ok"], true, "{booked}");
    let one = cp.newest_call("createAppointment").await;
    assert_eq!(one["request_body"]["service"], "logged-body", "{one}");
    assert_eq!(one["request_truncated"], false);
}

//! Tenant isolation: every endpoint that names a tenant's resource answers
//! 404 to another tenant (never 403, never the resource), and no list shows
//! another tenant's rows. The walk covers every `{id}` route of the router;
//! a new route that is not in the walk fails `the_walk_covers_every_route`.

use dibop_control_plane::store::{AgentRow, now_unix};
use dibop_control_plane::testing::TestCp;
use serde_json::Value;

/// (method, path template, body) of every tenant-scoped `{id}` endpoint.
/// `{group}`, `{agent}`, `{token}`, `{user}` are tenant A's resources.
const WALK: &[(&str, &str, Option<&str>)] = &[
    ("GET", "/agent-groups/{group}", None),
    ("POST", "/agent-groups/{group}/enrollment-tokens", None),
    (
        "POST",
        "/agent-groups/{group}/calls",
        Some(r#"{"url":"http://127.0.0.1:9/"}"#),
    ),
    ("GET", "/agents/{agent}", None),
    ("DELETE", "/agents/{agent}", None),
    ("DELETE", "/api-tokens/{token}", None),
    ("PATCH", "/users/{user}", Some(r#"{"role":"viewer"}"#)),
    ("GET", "/connectors/{connector}", None),
    ("PUT", "/connectors/{connector}", Some(DMS_SIM)),
    ("DELETE", "/connectors/{connector}", None),
    (
        "POST",
        "/connectors/{connector}/publish",
        Some(r#"{"scope":"enterprise"}"#),
    ),
    (
        "POST",
        "/connectors/{connector}/versions",
        Some(r#"{"bump":"patch","release_notes":"x"}"#),
    ),
    ("GET", "/connectors/{connector}/versions", None),
    ("GET", "/connectors/{connector}/versions/{version}", None),
    ("POST", "/connectors/{connector}/checklist", Some("{}")),
    ("POST", "/connectors/{connector}/unpublish", None),
    (
        "POST",
        "/connectors/{connector}/deprecate",
        Some(r#"{"until":"2099-01-01","message":"x"}"#),
    ),
    ("POST", "/connectors/{connector}/review", Some("{}")),
    ("GET", "/connectors/{connector}/usage", None),
    ("GET", "/catalogue/{connector}", None),
    ("GET", "/catalogue/{connector}/versions/{version}", None),
    ("POST", "/notifications/{notification}/read", None),
    ("GET", "/orchestrations/{orchestration}", None),
    (
        "PUT",
        "/orchestrations/{orchestration}",
        Some(ORCHESTRATION),
    ),
    ("DELETE", "/orchestrations/{orchestration}", None),
    ("GET", "/orchestrations/{orchestration}/versions", None),
    ("POST", "/orchestrations/{orchestration}/activate", None),
    ("POST", "/orchestrations/{orchestration}/pause", None),
    ("POST", "/orchestrations/{orchestration}/archive", None),
    ("POST", "/orchestrations/{orchestration}/restore", None),
    (
        "POST",
        "/orchestrations/{orchestration}/execute",
        Some(r#"{"parameters":{}}"#),
    ),
    (
        "POST",
        "/orchestrations/{orchestration}/webhook-secret",
        None,
    ),
    ("GET", "/executions/{execution}", None),
    ("POST", "/executions/{execution}/cancel", None),
    (
        "POST",
        "/executions/{execution}/rerun",
        Some(r#"{"from":"start"}"#),
    ),
    ("POST", "/dead-letters/{execution}/replay", None),
    ("POST", "/dead-letters/{execution}/discard", None),
    ("GET", "/connections/{connection}", None),
    (
        "PATCH",
        "/connections/{connection}",
        Some(r#"{"name":"mine"}"#),
    ),
    ("DELETE", "/connections/{connection}", None),
    ("POST", "/connections/{connection}/activate", None),
    ("POST", "/connections/{connection}/deactivate", None),
    (
        "PUT",
        "/connections/{connection}/credentials",
        Some(r#"{"credentials":{"api_key":"k"}}"#),
    ),
    ("POST", "/connections/{connection}/test", None),
    (
        "POST",
        "/connections/{connection}/move",
        Some(r#"{"version":"1.0.1","dry_run":true}"#),
    ),
    ("GET", "/connections/{connection}/grants", None),
    (
        "PUT",
        "/connections/{connection}/grants",
        Some(r#"{"grants":[]}"#),
    ),
    ("GET", "/connections/{connection}/health", None),
    ("POST", "/connections/{connection}/health/check", None),
    (
        "POST",
        "/connections/{connection}/operations/{operation}/invoke",
        Some("{}"),
    ),
    (
        "POST",
        "/connectors/{connector}/mappings/{operation}/suggest",
        Some(r#"{"domain":"vehicle","sample":{"vin":"1HGCM82633A004352"}}"#),
    ),
    (
        "POST",
        "/connectors/{connector}/mappings/{operation}/confirm",
        Some(r#"{"fields":["vin"]}"#),
    ),
    (
        "POST",
        "/connections/{connection}/operations/{operation}/suggest",
        Some(r#"{"domain":"vehicle"}"#),
    ),
    ("GET", "/dead-letters/items/{item}", None),
    ("GET", "/api-calls/{call}", None),
    ("POST", "/dead-letters/items/{item}/discard", None),
    ("POST", "/dead-letters/items/{item}/replay", Some("{}")),
];

/// A valid orchestration definition (no connections needed).
const ORCHESTRATION: &str = r#"{"format":"dibop.orchestration/v1","name":"noop","steps":[{"id":"a","type":"transform","expression":"."}]}"#;

/// A valid connector definition.
const DMS_SIM: &str = include_str!("../../catalogue/dms-sim.yaml");

/// Routes that are not tenant-scoped (platform-only, checked elsewhere).
const NOT_TENANT_SCOPED: &[&str] = &[
    "/tenants/{id}",
    "/tenants/{id}/users",
    "/catalogue/{id}/promote",
    "/reviews/{id}/approve",
    "/reviews/{id}/reject",
    "/hooks/{id}",
];

/// (method, path) of every operation in the OpenAPI document.
fn documented() -> Vec<(String, String)> {
    let doc = dibop_control_plane::http::openapi::document();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.push((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// The walk is driven by the OpenAPI document: every documented operation
/// on a tenant resource (`{id}`) must be walked.
#[test]
fn the_walk_covers_every_documented_tenant_resource() {
    let walked: Vec<(String, String)> = WALK
        .iter()
        .map(|(m, p, _)| {
            let p = [
                "{group}",
                "{agent}",
                "{token}",
                "{user}",
                "{connector}",
                "{connection}",
                "{notification}",
                "{orchestration}",
                "{execution}",
                "{item}",
                "{call}",
            ]
            .iter()
            .fold(p.to_string(), |p, k| p.replace(k, "{id}"));
            (m.to_string(), format!("/api/v1{p}"))
        })
        .collect();
    for (method, path) in documented().into_iter().filter(|(_, p)| p.contains("{id}")) {
        if NOT_TENANT_SCOPED.iter().any(|n| path.ends_with(n)) {
            continue;
        }
        assert!(
            walked.contains(&(method.clone(), path.clone())),
            "{method} {path} is documented but not in the isolation walk"
        );
    }
}

/// Routes and documentation are registered together, so every documented
/// operation must reach a handler: asked through the router itself (no
/// socket), none may fall through to the unknown-path or wrong-method
/// answer. The secured ones refuse a caller without a token.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    use tower::ServiceExt;
    let cp = TestCp::start().await;
    let doc = dibop_control_plane::http::openapi::document();
    let mut routed = 0;
    for (method, path) in documented() {
        let secured = doc["paths"][&path][method.to_lowercase()]["security"]
            .as_array()
            .is_some_and(|s| !s.is_empty());
        let uri = path
            .split('/')
            .map(|part| if part.starts_with('{') { "x" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        let request = axum::http::Request::builder()
            .method(method.as_str())
            .uri(&uri)
            .header("content-type", "application/json")
            .body(axum::body::Body::from("{}"))
            .unwrap();
        let response = dibop_control_plane::http::router(cp.core.clone())
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(
            status != 405 && !text.contains("there is nothing at this path"),
            "{method} {path} is documented but not routed: {status} {text}"
        );
        if secured {
            assert_eq!(status, 401, "{method} {path} without a token: {text}");
        }
        routed += 1;
    }
    assert_eq!(routed, 105, "the document lists every operation");
}

#[tokio::test]
async fn another_tenants_resources_do_not_exist() {
    let cp = TestCp::start().await;
    let store = cp.core.store.clone();
    let (tenant_a, a) = cp.tenant("tenant-a").await;
    let (tenant_b, b) = cp.tenant("tenant-b").await;
    // The walk makes more requests than a tier's minute allows: no quota in the way.
    for tenant in [&tenant_a, &tenant_b] {
        dibop_control_plane::set_tenant_plan(&store, tenant, None, None, Some(1_000_000))
            .await
            .unwrap();
    }

    // Tenant A's resources.
    let (_, group) = cp
        .send_text(
            &a,
            "POST",
            "/agent-groups",
            Some(("application/json", r#"{"name":"site"}"#)),
        )
        .await;
    let group = group["id"].as_str().unwrap().to_owned();
    let (_, token) = cp
        .send_text(
            &a,
            "POST",
            "/api-tokens",
            Some(("application/json", r#"{"name":"ci","role":"viewer"}"#)),
        )
        .await;
    let token = token["id"].as_str().unwrap().to_owned();
    let (_, user) = cp
        .send_text(
            &a,
            "POST",
            "/users",
            Some((
                "application/json",
                r#"{"email":"a@a.example","password":"a long passphrase","role":"viewer"}"#,
            )),
        )
        .await;
    let user = user["id"].as_str().unwrap().to_owned();
    store
        .create_enrollment_token("enr_x", &tenant_a, &group, "hash-x", now_unix() + 60)
        .await
        .unwrap();
    let agent = AgentRow {
        id: "agt_isolation".into(),
        tenant_id: tenant_a.clone(),
        group_id: group.clone(),
        name: "gw".into(),
        hostname: "gw".into(),
        version: "0.1.0".into(),
        enrolled_at: now_unix(),
        last_seen: None,
        cert_not_after: now_unix() + 3600,
        revoked_at: None,
    };
    store.create_agent(&agent, "enr_x").await.unwrap();

    let connector = reqwest::Client::new()
        .post(format!("{}/api/v1/connectors", cp.base))
        .bearer_auth(&a)
        .header("content-type", "application/yaml")
        .body(DMS_SIM)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let connector = connector["id"].as_str().unwrap().to_owned();
    // Published for A's enterprise only, so the catalogue routes have
    // something A sees and B must not.
    let mut plan = store.tenant(&tenant_a).await.unwrap().unwrap();
    plan.enterprise_publishing = 1;
    store.update_tenant_plan(&plan).await.unwrap();
    let (status, published) = cp
        .send_text(
            &a,
            "POST",
            &format!("/connectors/{connector}/publish"),
            Some(("application/json", r#"{"scope":"enterprise"}"#)),
        )
        .await;
    assert_eq!(status, 200, "{published}");
    let (_, catalogue) = cp.send_text(&a, "GET", "/catalogue?q=dms-sim", None).await;
    let (status, connection) = cp.send_text(&a,
        "POST",
        "/connections",
        Some(("application/json", 
            &serde_json::json!({"connector_id": catalogue[0]["id"], "credentials": {"api_key": "k"},
                "base_url": "http://127.0.0.1:9", "activate": true})
            .to_string(),
        )),
    )
    .await;
    assert_eq!(status, 201, "{connection}");
    let connection = connection["id"].as_str().unwrap().to_owned();
    // One call in A's call log (refused by the cloud agent's allow-list: recorded all the same).
    cp.send_text(
        &a,
        "POST",
        &format!("/connections/{connection}/operations/listVehicles/invoke"),
        Some(("application/json", "{}")),
    )
    .await;
    let (_, calls) = cp.send_text(&a, "GET", "/api-calls", None).await;
    let call = calls[0]["id"].as_str().unwrap().to_owned();
    store
        .notify(&tenant_a, "test", "for tenant A", "{}")
        .await
        .unwrap();
    let notification = store
        .notifications(&tenant_a, false, None, 1)
        .await
        .unwrap()[0]
        .0
        .clone();
    let (status, orchestration) = cp
        .send_text(
            &a,
            "POST",
            "/orchestrations",
            Some(("application/json", ORCHESTRATION)),
        )
        .await;
    assert_eq!(status, 201, "{orchestration}");
    let orchestration = orchestration["id"].as_str().unwrap().to_owned();
    let (status, execution) = cp
        .send_text(
            &a,
            "POST",
            &format!("/orchestrations/{orchestration}/execute"),
            Some(("application/json", r#"{"wait_ms":10000}"#)),
        )
        .await;
    assert_eq!(status, 201, "{execution}");
    let execution = execution["id"].as_str().unwrap().to_owned();
    let item = "dli_isolation";
    store
        .add_dead_letter_item(&dibop_control_plane::store::DeadLetterItem {
            id: item.into(),
            tenant_id: tenant_a.clone(),
            execution_id: execution.clone(),
            orchestration_id: orchestration.clone(),
            step_path: "steps[0]".into(),
            domain: "vehicle".into(),
            direction: "inbound".into(),
            record: r#"{"make":"x"}"#.into(),
            problems: "[]".into(),
            status: "open".into(),
            created_at: now_unix(),
            replay_execution_id: None,
        })
        .await
        .unwrap();
    let ids = [
        ("{group}", group.as_str()),
        ("{agent}", "agt_isolation"),
        ("{token}", token.as_str()),
        ("{user}", user.as_str()),
        ("{connector}", connector.as_str()),
        ("{version}", "1.0.0"),
        ("{connection}", connection.as_str()),
        ("{operation}", "listVehicles"),
        ("{notification}", notification.as_str()),
        ("{orchestration}", orchestration.as_str()),
        ("{execution}", execution.as_str()),
        ("{item}", item),
        ("{call}", call.as_str()),
    ];
    for (method, template, body) in WALK {
        let path = ids
            .iter()
            .fold(template.to_string(), |p, (k, v)| p.replace(k, v));
        let body = body.map(|b| ("application/json", b));
        let (status, answer) = cp.send_text(&b, method, &path, body).await;
        assert_eq!(status, 404, "{method} {path} as another tenant: {answer}");
        assert_eq!(answer["error"]["code"], "not_found");
        // And tenant A still has it: the 404 is about B, not a broken route.
        if *method == "GET" {
            assert_eq!(
                cp.send_text(&a, method, &path, None).await.0,
                200,
                "{method} {path} as its owner"
            );
        }
    }
    for list in [
        "/connectors",
        "/agent-groups",
        "/agents",
        "/api-tokens",
        "/users",
        "/audit",
        "/catalogue",
        "/connections",
        "/api-calls",
        "/notifications",
        "/orchestrations",
        "/executions",
        "/dead-letters",
        "/dead-letters/items",
    ] {
        let (status, rows) = cp.send_text(&b, "GET", list, None).await;
        assert_eq!(status, 200, "{list}");
        let text = rows.to_string();
        for (_, id) in ids
            .iter()
            .filter(|(k, _)| !["{version}", "{operation}"].contains(k))
        {
            assert!(!text.contains(id), "{list} of tenant B shows {id}");
        }
    }
    let (_, still) = cp.send_text(&a, "GET", "/agents/agt_isolation", None).await;
    assert_eq!(
        still["status"], "offline",
        "B's DELETE did not revoke A's agent"
    );
}

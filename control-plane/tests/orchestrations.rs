//! Orchestrations through the API: definitions checked against the
//! enterprise's connections, versions on every save, the lifecycle.

use serde_json::{Value, json};

use dibop_control_plane::testing::TestCp;

const EXAMPLE: &str = include_str!("../../catalogue/orchestrations/vin-decode-and-enrich.yaml");

async fn post_yaml(cp: &TestCp, method: &str, path: &str, yaml: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}/api/v1{path}", cp.base))
        .bearer_auth(&cp.admin)
        .header("content-type", "application/yaml")
        .body(yaml.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn definitions_versions_and_lifecycle() {
    let cp = TestCp::start().await;
    // The example calls connection `Demo DMS`: not there yet.
    let (status, answer) = post_yaml(&cp, "POST", "/orchestrations", EXAMPLE).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["error"]["details"][0]["path"], "$.steps[0].connection",
        "{answer}"
    );
    let (_, catalogue) = cp.get("/catalogue?q=dms-sim").await;
    let (status, _) = cp
        .post("/connections", json!({"connector_id": catalogue[0]["id"], "name": "Demo DMS", "credentials": {"api_key": "k"},
                        "base_url": "http://127.0.0.1:9"}))
        .await;
    assert_eq!(status, 201);
    let (status, created) = post_yaml(&cp, "POST", "/orchestrations", EXAMPLE).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        (created["status"].as_str(), created["version"].as_i64()),
        (Some("draft"), Some(1))
    );
    assert_eq!(created["steps"], 4);
    let id = created["id"].as_str().unwrap().to_owned();
    // The list shows each one's trigger and step count from its newest version.
    let (status, list) = cp.get("/orchestrations").await;
    assert_eq!(status, 200, "{list}");
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == id.as_str())
        .unwrap();
    assert_eq!(
        (listed["trigger"].as_str(), listed["steps"].as_u64()),
        (Some("manual"), Some(4))
    );
    assert!(listed.get("definition").is_none(), "{listed}");

    // A wrong operation is named; nothing is saved.
    let wrong = EXAMPLE.replace("operation: getVehicle", "operation: getTractor");
    let (status, answer) = post_yaml(&cp, "PUT", &format!("/orchestrations/{id}"), &wrong).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["details"]
            .to_string()
            .contains("no operation `getTractor`"),
        "{answer}"
    );
    // Every save is a new version.
    let edited = EXAMPLE.replace("default: web", "default: showroom");
    let (status, saved) = post_yaml(&cp, "PUT", &format!("/orchestrations/{id}"), &edited).await;
    assert_eq!(
        (status, saved["version"].as_i64()),
        (200, Some(2)),
        "{saved}"
    );
    let (_, versions) = cp.get(&format!("/orchestrations/{id}/versions")).await;
    let numbers: Vec<i64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1]);
    assert!(versions[1]["definition"].to_string().contains("\"web\""));

    // Lifecycle.
    let act =
        |action: &'static str| cp.send("POST", format!("/orchestrations/{id}/{action}"), None);
    assert_eq!(act("pause").await.0, 409, "a draft cannot pause");
    assert_eq!(act("activate").await.1["status"], "active");
    assert_eq!(act("pause").await.1["status"], "paused");
    assert_eq!(act("activate").await.1["status"], "active");
    assert_eq!(act("archive").await.1["status"], "archived");
    let (status, answer) = post_yaml(&cp, "PUT", &format!("/orchestrations/{id}"), EXAMPLE).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("archived"))
    );
    assert_eq!(act("restore").await.1["status"], "draft");
    // Validate without saving; delete.
    let (_, checked) = post_yaml(
        &cp,
        "POST",
        "/orchestrations/validate",
        "format: dibop.orchestration/v1\nname: x\nsteps: []\n",
    )
    .await;
    assert_eq!(checked["valid"], false);
    assert_eq!(cp.delete(format!("/orchestrations/{id}")).await.0, 204);
    assert_eq!(cp.get(format!("/orchestrations/{id}")).await.0, 404);
    let (_, audit) = cp.get("/audit?resource_type=orchestration").await;
    assert!(audit.as_array().unwrap().len() >= 7, "{audit}");
}

/// An expression nested a thousand levels deep (2 KB), or a chain of pipes
/// as long as allowed, sent by any signed-in user to every route that checks
/// expressions, is refused or checked, and the control plane lives.
#[tokio::test]
async fn deep_expressions_are_refused_and_the_process_lives() {
    let cp = TestCp::start().await;
    let deep = format!("{}.{}", "(".repeat(1000), ")".repeat(1000));
    let chain = format!("{}.", ". | ".repeat(16_000));
    let dms = include_str!("../../catalogue/dms-sim.yaml");
    for expression in [&deep, &chain] {
        let orchestration = EXAMPLE.replace(
            "vin: \"{{ .params.vin }}\"",
            &format!("vin: '{{{{ {expression} }}}}'"),
        );
        assert_ne!(orchestration, EXAMPLE);
        let transform = format!(
            "format: dibop.orchestration/v1\nname: deep\nsteps:\n  - {{id: t, type: transform, expression: '{expression}'}}\n"
        );
        let connector = dms.replacen("records: .items", &format!("records: '{expression}'"), 1);
        assert_ne!(connector, dms);
        for (path, body) in [
            ("/orchestrations/validate", &orchestration),
            ("/orchestrations/validate", &transform),
            ("/orchestrations", &transform),
            ("/connectors/validate", &connector),
        ] {
            let (status, answer) = post_yaml(&cp, "POST", path, body).await;
            if expression == &deep {
                assert!(
                    status == 422 || (status == 200 && answer["valid"] == false),
                    "{path}: {status} {answer}"
                );
                assert!(
                    answer.to_string().contains("levels deep"),
                    "{path}: {answer}"
                );
            } else {
                assert!(status < 500, "{path}: {status} {answer}");
            }
        }
    }
    // Still serving.
    let (status, _) = cp.get("/orchestrations").await;
    assert_eq!(status, 200);
}

//! The connector catalogue through the HTTP API of an in-process control
//! plane: the publishing lifecycle (scopes, review, promotion), versions
//! with computed breaking changes, deprecation, browse and search, operation
//! tests against a real DMS simulator, and OpenAPI import of real public
//! documents.

use dibop_control_plane::testing::{TestCp, code};
use serde_json::{Value, json};

const DMS_SIM: &str = include_str!("../../catalogue/dms-sim.yaml");

async fn create(cp: &TestCp, token: &str, definition: &Value) -> String {
    let (status, created) = cp.post_as(token, "/connectors", definition.clone()).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

async fn slugs(cp: &TestCp, token: &str, query: &str) -> Vec<String> {
    let (status, list) = cp.get_as(token, &format!("/catalogue{query}")).await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e["slug"].as_str().unwrap().to_owned())
        .collect()
}

fn dms(slug: &str) -> Value {
    let mut d: Value = serde_yaml_ng::from_str(DMS_SIM).unwrap();
    d["slug"] = json!(slug);
    d["name"] = json!(format!("DMS {slug}"));
    d
}

#[tokio::test]
async fn publish_version_deprecate_and_unpublish() {
    let cp = TestCp::builder().enterprise_publishing(false).start().await;
    let platform = cp.platform_admin().await;
    let (acme_id, acme) = cp.tenant("acme").await;
    let (_, other) = cp.tenant("other").await;
    let id = create(&cp, &acme, &dms("acme-dms")).await;
    let publish = format!("/connectors/{id}/publish");

    // Who may publish what.
    let (_, viewer) = cp
        .post_as(&acme, "/api-tokens", json!({"name": "v", "role": "viewer"}))
        .await;
    let viewer = viewer["token"].as_str().unwrap();
    let (status, answer) = cp
        .post_as(viewer, &publish, json!({"scope": "enterprise"}))
        .await;
    assert_eq!((status, code(&answer)), (403, "forbidden"), "{answer}");
    let (status, answer) = cp
        .post_as(&acme, &publish, json!({"scope": "global"}))
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("review"),
        "{answer}"
    );
    let (status, answer) = cp
        .post_as(&acme, &publish, json!({"scope": "enterprise"}))
        .await;
    assert_eq!(
        (status, code(&answer)),
        (403, "enterprise_publishing_disabled"),
        "{answer}"
    );
    let (status, answer) = cp
        .post_as(&acme, &publish, json!({"scope": "everywhere"}))
        .await;
    assert_eq!(status, 422, "{answer}");
    let (status, _) = cp
        .patch_as(
            &platform,
            &format!("/tenants/{acme_id}"),
            json!({"enterprise_publishing": true}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, published) = cp
        .post_as(
            &acme,
            &publish,
            json!({"scope": "enterprise", "release_notes": "First."}),
        )
        .await;
    assert_eq!(status, 200, "{published}");
    assert_eq!(published["latest_version"], "1.0.0");
    assert_eq!(published["scope"], "enterprise");
    let (status, answer) = cp
        .post_as(&acme, &publish, json!({"scope": "enterprise"}))
        .await;
    assert_eq!(
        (status, code(&answer)),
        (409, "already_published"),
        "{answer}"
    );

    // The catalogue: built-ins for everyone, acme's connector for acme only.
    let mine = slugs(&cp, &acme, "").await;
    for slug in [
        "acme-dms",
        "dms-sim",
        "nhtsa-vpic",
        "rest-countries",
        "open-meteo",
    ] {
        assert!(
            mine.contains(&slug.to_owned()),
            "{slug} missing from {mine:?}"
        );
    }
    assert!(
        !slugs(&cp, &other, "")
            .await
            .contains(&"acme-dms".to_owned())
    );
    assert_eq!(cp.get_as(&other, &format!("/catalogue/{id}")).await.0, 404);
    assert_eq!(slugs(&cp, &acme, "?q=VIN").await, ["nhtsa-vpic"]);
    let mut reference = slugs(&cp, &acme, "?category=reference").await;
    reference.sort();
    assert_eq!(reference, ["open-meteo", "rest-countries"]);
    let mut keyed = slugs(&cp, &acme, "?auth_type=api_key").await;
    keyed.sort();
    assert_eq!(keyed, ["acme-dms", "dms-sim"]);
    assert_eq!(slugs(&cp, &acme, "?scope=enterprise").await, ["acme-dms"]);
    assert!(
        slugs(&cp, &acme, "?q=50%25_").await.is_empty(),
        "LIKE wildcards are literal"
    );
    let (status, answer) = cp.get_as(&acme, "/catalogue?auth_type=kerberos").await;
    assert_eq!(status, 422, "{answer}");
    let (status, detail) = cp.get_as(&acme, &format!("/catalogue/{id}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["operations_list"].as_array().unwrap().len(), 10);
    assert_eq!(detail["versions"][0]["version"], "1.0.0");
    assert_eq!(detail["owned_by_you"], true);

    // An update that removes an operation breaks: minor is refused, major taken.
    let mut def = dms("acme-dms");
    def["operations"]
        .as_array_mut()
        .unwrap()
        .retain(|o| o["id"] != "getPart");
    drop_orphan_mappings(&mut def);
    assert_eq!(
        cp.put_as(&acme, &format!("/connectors/{id}"), def.clone())
            .await
            .0,
        200
    );
    let versions = format!("/connectors/{id}/versions");
    let (status, answer) = cp
        .post_as(
            &acme,
            &versions,
            json!({"bump": "minor", "release_notes": "Tidy."}),
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (409, "breaking_change"),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("getPart"),
        "{answer}"
    );
    assert_eq!(answer["error"]["details"][0]["impact"], "breaking");
    let (status, answer) = cp
        .post_as(
            &acme,
            &versions,
            json!({"bump": "major", "release_notes": ""}),
        )
        .await;
    assert_eq!(status, 422, "release notes are required: {answer}");
    let (status, v2) = cp
        .post_as(
            &acme,
            &versions,
            json!({"bump": "major", "release_notes": "getPart is gone."}),
        )
        .await;
    assert_eq!(status, 201, "{v2}");
    assert_eq!(
        (v2["version"].as_str(), v2["breaking"].as_bool()),
        (Some("2.0.0"), Some(true))
    );
    // An addition needs minor, not patch.
    def["operations"].as_array_mut().unwrap().push(
        json!({"id": "listLocations", "name": "Locations", "method": "GET", "path": "/api/v1/locations"}),
    );
    cp.put_as(&acme, &format!("/connectors/{id}"), def.clone())
        .await;
    let (status, answer) = cp
        .post_as(
            &acme,
            &versions,
            json!({"bump": "patch", "release_notes": "Parts."}),
        )
        .await;
    assert_eq!((status, code(&answer)), (409, "bump_too_small"), "{answer}");
    let (status, v21) = cp
        .post_as(
            &acme,
            &versions,
            json!({"bump": "minor", "release_notes": "Parts."}),
        )
        .await;
    assert_eq!(
        (status, v21["version"].as_str()),
        (201, Some("2.1.0")),
        "{v21}"
    );
    let (status, answer) = cp
        .post_as(
            &acme,
            &versions,
            json!({"bump": "patch", "release_notes": "Again."}),
        )
        .await;
    assert_eq!((status, code(&answer)), (409, "no_changes"), "{answer}");
    let (_, list) = cp.get_as(&acme, &versions).await;
    let listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["2.1.0", "2.0.0", "1.0.0"]);
    // Old versions are frozen: 1.0.0 still has getPart.
    let (_, v1) = cp.get_as(&acme, &format!("{versions}/1.0.0")).await;
    assert!(v1["definition"].to_string().contains("getPart"));
    let mut renamed = def.clone();
    renamed["slug"] = json!("acme-dms-2");
    let (status, answer) = cp
        .put_as(&acme, &format!("/connectors/{id}"), renamed)
        .await;
    assert_eq!((status, code(&answer)), (409, "slug_frozen"), "{answer}");
    let (status, answer) = cp.delete_as(&acme, &format!("/connectors/{id}")).await;
    assert_eq!((status, code(&answer)), (409, "published"), "{answer}");

    // Deprecation: at least 30 days' notice, a warning, then out.
    let deprecate = format!("/connectors/{id}/deprecate");
    let soon =
        dibop_runtime::support::rfc3339(dibop_control_plane::store::now_unix() + 10 * 86_400);
    let (status, answer) = cp
        .post_as(
            &acme,
            &deprecate,
            json!({"until": soon, "message": "Use v3."}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("30 days")
    );
    let later =
        dibop_runtime::support::rfc3339(dibop_control_plane::store::now_unix() + 40 * 86_400);
    let (status, answer) = cp
        .post_as(
            &acme,
            &deprecate,
            json!({"until": later, "message": "Use acme-dms-3."}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (_, detail) = cp.get_as(&acme, &format!("/catalogue/{id}")).await;
    assert_eq!(detail["status"], "deprecated");
    assert_eq!(detail["deprecation"]["message"], "Use acme-dms-3.");
    let swept = dibop_control_plane::catalogue::publishing::unpublish_expired(
        &cp.core,
        dibop_control_plane::store::now_unix() + 41 * 86_400,
    )
    .await
    .unwrap();
    assert_eq!(swept, 1);
    assert!(!slugs(&cp, &acme, "").await.contains(&"acme-dms".to_owned()));
    let (_, own) = cp.get_as(&acme, &format!("/connectors/{id}")).await;
    assert_eq!(
        (own["status"].as_str(), own["latest_version"].as_str()),
        (Some("draft"), Some("2.1.0"))
    );
    let (status, answer) = cp
        .post_as(&acme, &publish, json!({"scope": "enterprise"}))
        .await;
    assert_eq!(
        (status, code(&answer)),
        (409, "already_versioned"),
        "{answer}"
    );
    // The audit log has the whole story.
    let (_, audit) = cp.get_as(&acme, "/audit").await;
    let actions = audit.to_string();
    for action in [
        "connector.publish",
        "connector.publish_update",
        "connector.deprecate",
        "connector.unpublish",
    ] {
        assert!(actions.contains(action), "{action} not audited");
    }
}

#[tokio::test]
async fn review_reject_approve_and_promote() {
    let cp = TestCp::builder().enterprise_publishing(false).start().await;
    let platform = cp.platform_admin().await;
    let (_, dealer) = cp.tenant("dealer").await;
    let (acme_id, acme) = cp.tenant("acme").await;
    let mut incomplete = dms("dealer-dms");
    incomplete
        .as_object_mut()
        .unwrap()
        .remove("documentation_url");
    let id = create(&cp, &dealer, &incomplete).await;
    let review = format!("/connectors/{id}/review");
    let (status, answer) = cp.post_as(&dealer, &review, json!({})).await;
    assert_eq!(
        (status, code(&answer)),
        (422, "checklist_failed"),
        "{answer}"
    );
    assert_eq!(answer["error"]["details"][0]["item"], "overview");
    assert!(
        answer["error"]["details"][0]["problems"][0]
            .as_str()
            .unwrap()
            .contains("documentation_url")
    );
    cp.put_as(&dealer, &format!("/connectors/{id}"), dms("dealer-dms"))
        .await;
    let (status, answer) = cp.post_as(&dealer, &review, json!({})).await;
    assert_eq!(
        (status, answer["review_status"].as_str()),
        (200, Some("pending")),
        "{answer}"
    );
    let (status, answer) = cp.post_as(&dealer, &review, json!({})).await;
    assert_eq!((status, code(&answer)), (409, "review_pending"));

    // Only platform admins see and decide reviews.
    assert_eq!(cp.get_as(&dealer, "/reviews").await.0, 403);
    let (status, queue) = cp.get_as(&platform, "/reviews").await;
    assert_eq!(status, 200);
    assert_eq!(queue[0]["id"], id.as_str());
    assert_eq!(
        cp.send_as(&acme, "POST", &format!("/reviews/{id}/approve"), None)
            .await
            .0,
        403
    );
    let (status, _) = cp
        .post_as(
            &platform,
            &format!("/reviews/{id}/reject"),
            json!({"reason": " "}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, rejected) = cp
        .post_as(
            &platform,
            &format!("/reviews/{id}/reject"),
            json!({"reason": "Add a VIN decode mapping."}),
        )
        .await;
    assert_eq!(status, 200, "{rejected}");
    let (_, own) = cp.get_as(&dealer, &format!("/connectors/{id}")).await;
    assert_eq!(
        (own["review_status"].as_str(), own["review_reason"].as_str()),
        (Some("rejected"), Some("Add a VIN decode mapping."))
    );
    assert_eq!(
        cp.send_as(&platform, "POST", &format!("/reviews/{id}/approve"), None)
            .await
            .0,
        404
    );

    // Resubmitted and approved: global, version 1.0.0, visible to everyone.
    cp.post_as(&dealer, &review, json!({})).await;
    let (status, approved) = cp
        .send_as(&platform, "POST", &format!("/reviews/{id}/approve"), None)
        .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(
        (
            approved["scope"].as_str(),
            approved["latest_version"].as_str()
        ),
        (Some("global"), Some("1.0.0"))
    );
    assert!(
        slugs(&cp, &acme, "")
            .await
            .contains(&"dealer-dms".to_owned())
    );
    let (_, entry) = cp.get_as(&acme, &format!("/catalogue/{id}")).await;
    assert_eq!(entry["owned_by_you"], false);

    // Promotion of an enterprise connector.
    cp.patch_as(
        &platform,
        &format!("/tenants/{acme_id}"),
        json!({"enterprise_publishing": true}),
    )
    .await;
    let own_id = create(&cp, &acme, &dms("acme-own")).await;
    cp.post_as(
        &acme,
        &format!("/connectors/{own_id}/publish"),
        json!({"scope": "enterprise"}),
    )
    .await;
    assert!(
        !slugs(&cp, &dealer, "")
            .await
            .contains(&"acme-own".to_owned())
    );
    assert_eq!(
        cp.send_as(&acme, "POST", &format!("/catalogue/{own_id}/promote"), None)
            .await
            .0,
        403
    );
    let (status, promoted) = cp
        .send_as(
            &platform,
            "POST",
            &format!("/catalogue/{own_id}/promote"),
            None,
        )
        .await;
    assert_eq!(
        (status, promoted["scope"].as_str()),
        (200, Some("global")),
        "{promoted}"
    );
    assert!(
        slugs(&cp, &dealer, "")
            .await
            .contains(&"acme-own".to_owned())
    );
    let (status, answer) = cp
        .send_as(
            &platform,
            "POST",
            &format!("/catalogue/{own_id}/promote"),
            None,
        )
        .await;
    assert_eq!((status, code(&answer)), (409, "already_global"));

    // The platform's own connectors are global.
    let pid = create(&cp, &platform, &dms("platform-dms")).await;
    let (status, _) = cp
        .post_as(
            &platform,
            &format!("/connectors/{pid}/publish"),
            json!({"scope": "enterprise"}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = cp
        .post_as(
            &platform,
            &format!("/connectors/{pid}/publish"),
            json!({"scope": "global"}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        slugs(&cp, &dealer, "?scope=global")
            .await
            .contains(&"platform-dms".to_owned())
    );
}

#[tokio::test]
async fn publishing_tests_each_operation_against_a_test_target() {
    let cp = TestCp::builder().enterprise_publishing(false).start().await;
    let platform = cp.platform_admin().await;
    let (_, admin) = cp.tenant("acme").await;
    let (sim, _task) = dibop_dms_sim::spawn("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let sim_url = format!("http://{sim}");
    let vehicles: Value = reqwest::Client::new()
        .get(format!("{sim_url}/api/v1/vehicles?page_size=1"))
        .header("X-API-Key", "dms-demo-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vin = vehicles["items"][0]["vin"].as_str().unwrap().to_owned();
    let mut def = dms("tested-dms");
    // The read operations only: the test target is a real system.
    def["operations"]
        .as_array_mut()
        .unwrap()
        .retain(|o| o["method"] == "GET" && o["id"] != "getPart");
    drop_orphan_mappings(&mut def);
    def["health_check"] = json!("health");
    let id = create(&cp, &admin, &def).await;
    let checklist = format!("/connectors/{id}/checklist");
    let target = |key: &str| {
        json!({"test_target": {"base_url": sim_url, "credentials": {"api_key": key},
            "parameters": {"getVehicle": {"vin": vin}}}})
    };

    let (status, report) = cp.post_as(&admin, &checklist, target("dms-demo-key")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["passed"], true, "{report}");

    let (_, report) = cp
        .post_as(&admin, &checklist, target("wrong-key-canary"))
        .await;
    assert_eq!(report["passed"], false);
    let tests = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["item"] == "operation_tests")
        .unwrap();
    let problems = tests["problems"].to_string();
    assert!(
        problems.contains("listVehicles") && problems.contains("401"),
        "{problems}"
    );
    assert!(
        !problems.contains("health"),
        "the health check needs no key: {problems}"
    );
    assert!(
        !report.to_string().contains("wrong-key-canary"),
        "a credential leaked into the report"
    );

    // A response that does not match its schema fails, naming the field.
    def["operations"][2]["response_schema"] =
        json!({"type": "object", "required": ["vin", "chassis_number"]});
    cp.put_as(&admin, &format!("/connectors/{id}"), def).await;
    let mut body = target("dms-demo-key");
    body["scope"] = json!("global");
    let (status, answer) = cp
        .post_as(
            &platform,
            &format!("/connectors/{id}/publish"),
            body.clone(),
        )
        .await;
    assert_eq!(
        status, 404,
        "the platform cannot publish a tenant's draft: {answer}"
    );
    let (_, report) = cp.post_as(&admin, &checklist, target("dms-demo-key")).await;
    assert!(
        report
            .to_string()
            .contains("/chassis_number: required but missing"),
        "{report}"
    );

    // A target that never answers is a timeout, not a hang.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let mut short = dms("silent-dms");
    short["resilience"]["timeout_ms"] = json!(300);
    short["operations"].as_array_mut().unwrap().truncate(1);
    drop_orphan_mappings(&mut short);
    short["health_check"] = json!("health");
    short["operations"][0]["parameters"] =
        json!([{"name": "probe", "in": "query", "type": "string"}]);
    let sid = create(&cp, &admin, &short).await;
    let (_, report) = cp
        .post_as(
            &admin,
            &format!("/connectors/{sid}/checklist"),
            json!({"test_target": {"base_url": silent_url, "credentials": {"api_key": "k"}}}),
        )
        .await;
    assert!(
        report.to_string().contains("no answer within 300 ms"),
        "{report}"
    );
}

/// Where `scripts/test` installs the npm package `@readme/oas-examples`
/// (real public OpenAPI documents: the Swagger Petstore in 2.0, 3.0 and 3.1).
fn oas_examples() -> std::path::PathBuf {
    let dir = std::env::var("DIBOP_OAS_EXAMPLES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/test-deps/node_modules/@readme/oas-examples")
        });
    assert!(
        dir.join("3.0/json/petstore.json").exists(),
        "{} has no OpenAPI examples: run scripts/test (it installs @readme/oas-examples with npm) \
         or set DIBOP_OAS_EXAMPLES",
        dir.display()
    );
    dir
}

#[tokio::test]
async fn imports_real_openapi_documents() {
    let examples = oas_examples();
    let cp = TestCp::builder().enterprise_publishing(false).start().await;
    let _platform = cp.platform_admin().await;
    let (_, admin) = cp.tenant("acme").await;
    let client = reqwest::Client::new();
    let import = |path: &str, query: &str| {
        let text = std::fs::read_to_string(examples.join(path)).unwrap();
        let kind = if path.ends_with(".json") {
            "application/json"
        } else {
            "application/yaml"
        };
        client
            .post(format!("{}/api/v1/connectors/import{query}", cp.base))
            .bearer_auth(&admin)
            .header("content-type", kind)
            .body(text)
            .send()
    };
    for (path, slug) in [
        ("3.0/json/petstore.json", "petstore-30"),
        ("2.0/json/petstore.json", "petstore-20"),
        ("3.1/yaml/petstore.yaml", "petstore-31"),
    ] {
        let resp = import(path, &format!("?slug={slug}&category=demo"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{path}");
        let answer: Value = resp.json().await.unwrap();
        let def = &answer["connector"]["definition"];
        assert_eq!(def["name"], "Swagger Petstore", "{path}");
        assert_eq!(answer["connector"]["status"], "draft");
        let ops = def["operations"].as_array().unwrap();
        assert!(ops.len() >= 19, "{path}: {} operations", ops.len());
        let get_pet = ops.iter().find(|o| o["id"] == "getPetById").unwrap();
        assert_eq!(get_pet["path"], "/pet/{petId}", "{path}");
        assert_eq!(
            get_pet["parameters"][0],
            json!({"name": "petId", "in": "path", "type": "integer", "required": true, "description": "ID of pet to return"}),
            "{path}"
        );
        // `$ref`s are inlined: the Pet schema with its nested Category.
        assert_eq!(
            get_pet["response_schema"]["properties"]["category"]["type"], "object",
            "{path}"
        );
        assert!(
            def["auth"]["schemes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["type"] == "api_key" && s["header"] == "api_key"),
            "{path}"
        );
        let warnings = answer["warnings"].to_string();
        assert!(warnings.contains("implicit flow"), "{path}: {warnings}");
    }
    // Documents with relative or no servers get a visible placeholder.
    let resp = import("3.1/json/train-travel.json", "").await.unwrap();
    assert_eq!(resp.status(), 201);

    // Every document of the collection imports into a valid definition (or
    // is refused with a reason), never a panic.
    let mut imported = 0;
    for dir in ["2.0/json", "3.0/json", "3.1/json", "3.0/yaml"] {
        for entry in std::fs::read_dir(examples.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            match dibop_control_plane::catalogue::import::from_openapi(&text, &Default::default()) {
                Ok(i) => {
                    let problems =
                        dibop_control_plane::catalogue::connector::validate(&i.definition);
                    assert!(problems.is_empty(), "{}: {problems:?}", path.display());
                    imported += 1;
                }
                Err(e) => assert!(
                    path.to_string_lossy().contains("webhooks"),
                    "{} refused: {e:?}",
                    path.display()
                ),
            }
        }
    }
    assert!(imported >= 60, "only {imported} documents imported");
}

#[tokio::test]
async fn bad_imports_are_refused_and_nothing_is_saved() {
    let cp = TestCp::builder().enterprise_publishing(false).start().await;
    let _platform = cp.platform_admin().await;
    let (_, admin) = cp.tenant("acme").await;
    let post = |body: String, kind: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/api/v1/connectors/import", cp.base))
            .bearer_auth(&admin)
            .header("content-type", kind)
            .body(body)
            .send()
    };
    let cyclic = r##"{"openapi": "3.0.3", "info": {"title": "Loop"}, "paths": {"/a": {"get": {"responses": {"200": {
        "description": "x", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}}}}}},
        "components": {"schemas": {"A": {"$ref": "#/components/schemas/B"}, "B": {"$ref": "#/components/schemas/A"}}}}"##;
    let huge = format!(
        "{{\"openapi\": \"3.0.0\", \"x\": \"{}\"}}",
        "a".repeat(3 * 1024 * 1024)
    );
    for (body, kind, status, expected) in [
        (
            "{\"name\": \"not openapi\"}".to_owned(),
            "application/json",
            422,
            "not an OpenAPI document",
        ),
        (
            "hello: [unclosed".to_owned(),
            "application/yaml",
            422,
            "not valid JSON or YAML",
        ),
        (cyclic.to_owned(), "application/json", 422, "cyclic $ref"),
        (huge, "application/json", 413, ""),
        ("openapi: 3.0.0".to_owned(), "text/plain", 415, ""),
    ] {
        let resp = post(body, kind).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{expected}");
        let answer: Value = resp.json().await.unwrap();
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{answer}"
        );
    }
    let (_, list) = cp.get_as(&admin, "/connectors").await;
    assert_eq!(list, json!([]), "a refused import saved something");
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

//! The Canonical Data Model through the API, against a real DMS simulator:
//! the explorer, validation, mapping steps in orchestrations with invalid
//! records dead-lettered, suggestions confirmed by a person, and personal
//! data redacted for a viewer in traces, the call log, dead letters and
//! exports.

use serde_json::{Value, json};

use dibop_control_plane::testing::TestCp;

struct Setup {
    cp: TestCp,
    sim: String,
    viewer: String,
}

async fn setup() -> Setup {
    let cp = TestCp::start_with(|s| s.run_scheduler = false).await;
    let (sim, _) = cp.demo_dms().await;
    let (status, token) = cp
        .post("/api-tokens", json!({"name": "auditor", "role": "viewer"}))
        .await;
    assert_eq!(status, 201, "{token}");
    Setup {
        viewer: token["token"].as_str().unwrap().to_owned(),
        cp,
        sim,
    }
}

async fn as_token(cp: &TestCp, token: &str, path: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1{path}", cp.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn create(cp: &TestCp, body: &str) -> String {
    cp.create_orchestration(body).await
}

#[tokio::test]
async fn the_explorer_lists_22_domains_with_pii_classes_and_who_maps_them() {
    let s = setup().await;
    let (status, domains) = s.cp.get("/cdm/domains").await;
    assert_eq!(status, 200, "{domains}");
    let domains = domains.as_array().unwrap();
    assert_eq!(domains.len(), 22);
    let vehicle = domains.iter().find(|d| d["name"] == "vehicle").unwrap();
    assert_eq!(vehicle["required"], json!(["vin"]));
    assert!(vehicle["mapped_by"].as_u64().unwrap() >= 2, "{vehicle}");

    let (_, v) = s.cp.get("/cdm/domains/vehicle").await;
    let field = |name: &str| {
        v["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .cloned()
            .unwrap()
    };
    let vin = field("vin");
    assert_eq!(
        (
            vin["type"].as_str(),
            vin["required"].as_bool(),
            vin["pii"].as_str(),
            vin["format"].as_str()
        ),
        (Some("string"), Some(true), Some("none"), Some("vin"))
    );
    let mappers: Vec<&str> = vin["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        mappers.contains(&"dms-sim") && mappers.contains(&"nhtsa-vpic"),
        "{vin}"
    );
    assert_eq!(field("interior_colour")["mapped_by"], 0);
    assert!(v["source"].as_str().unwrap().contains("ISO 3779"));

    let (_, c) = s.cp.get("/cdm/domains/customer").await;
    for f in c["fields"].as_array().unwrap() {
        let expected = match f["name"].as_str().unwrap() {
            "customer_name" | "first_name" | "last_name" | "email" | "phone" | "address_line_1"
            | "address_line_2" | "city" | "state_province" | "postal_code" => "pii",
            "date_of_birth" => "sensitive_pii",
            _ => "none",
        };
        assert_eq!(f["pii"], expected, "{f}");
    }
    let (status, err) = s.cp.get("/cdm/domains/spaceship").await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");

    let (status, checked) =
        s.cp.post(
            "/cdm/validate",
            json!({"domain": "customer", "record": [
                {"customer_id": "C1", "email": "jane@example.com", "country": "DE"},
                {"email": "nope", "customer_type": "alien"}]}),
        )
        .await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["valid"], false);
    assert_eq!(checked["results"][0]["valid"], true);
    let rules: Vec<String> = checked["results"][1]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}:{}",
                p["field"].as_str().unwrap(),
                p["rule"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        rules,
        ["customer_id:required", "customer_type:enum", "email:format"]
    );
}

/// Customers from the DMS onto the CDM, the second one's email broken on
/// the way (so it fails validation and is dead-lettered), then `last`.
fn customers_with_a_broken_email(name: &str, last: &str) -> String {
    format!(
        r#"format: dibop.orchestration/v1
name: {name}
steps:
  - {{ id: list, type: call, connection: Demo DMS, operation: listCustomers, parameters: {{ page_size: 3 }} }}
  - id: cdm
    type: map_to_cdm
    connection: Demo DMS
    operation: listCustomers
    from: '.steps.list.response | .items[1].email = "not-an-email"'
  - {{ id: last, type: transform, expression: '{last}' }}
"#
    )
}

#[tokio::test]
async fn invalid_records_go_to_the_dead_letter_queue_and_personal_data_stays_hidden_from_viewers() {
    let s = setup().await;
    // Customers from the DMS onto the CDM; the second one's email is broken
    // on the way, so it fails validation and is dead-lettered.
    let id = create(
        &s.cp,
        &customers_with_a_broken_email("customers-to-cdm", ".steps.cdm.records[0]"),
    )
    .await;
    let e = s.cp.run(&id, json!({})).await;
    // A record set aside: a partial success, not a success.
    assert_eq!(e["status"], "partially_succeeded", "{e}");
    let cdm = &e["steps"][1]["output"];
    assert_eq!(
        (cdm["count"].as_u64(), cdm["invalid"].as_u64()),
        (Some(2), Some(1)),
        "{cdm}"
    );
    let customer = &e["output"];
    assert_eq!(customer["customer_type"], "fleet", "{customer}");
    let email = customer["email"].as_str().unwrap().to_owned();
    let phone = customer["phone"].as_str().unwrap().to_owned();
    let last_name = customer["last_name"].as_str().unwrap().to_owned();
    assert!(email.contains('@') && phone.starts_with('+'));

    let (_, items) = s.cp.get("/dead-letters/items").await;
    let items = items.as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    let item = &items[0];
    assert_eq!(
        (item["domain"].as_str(), item["direction"].as_str()),
        (Some("customer"), Some("inbound"))
    );
    assert_eq!(item["problems"][0]["field"], "email");
    assert_eq!(item["problems"][0]["rule"], "format");
    assert_eq!(item["execution_id"], e["id"]);
    let item_id = item["id"].as_str().unwrap().to_owned();

    // The admin (view_pii) sees the personal data; the viewer sees none of it
    // in the execution, the execution list, the export, the call log or the dead letter.
    let exe = format!("/executions/{}", e["id"].as_str().unwrap());
    let (_, admin_view) = as_token(&s.cp, &s.cp.admin, &exe).await;
    assert!(admin_view.contains(&email) && admin_view.contains(&phone));
    for path in [
        exe.clone(),
        "/executions".to_owned(),
        "/executions/export".to_owned(),
        "/api-calls".to_owned(),
        "/dead-letters/items".to_owned(),
        format!("/dead-letters/items/{item_id}"),
    ] {
        let (status, body) = as_token(&s.cp, &s.viewer, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        for secret in [&email, &phone, &last_name] {
            assert!(
                !body.contains(secret.as_str()),
                "{path} shows `{secret}` to a viewer: {body}"
            );
        }
        if path == exe {
            assert!(body.contains("[redacted]"), "{body}");
            // Not personal: still shown.
            assert!(body.contains("fleet"), "{body}");
        }
    }
    // `view_pii` is a permission: given to one viewer token, withheld from one operator token.
    let (_, trusted) =
        s.cp.post(
            "/api-tokens",
            json!({"name": "dpo", "role": "viewer", "view_pii": true}),
        )
        .await;
    assert_eq!(trusted["view_pii"], true, "{trusted}");
    let (_, restricted) =
        s.cp.post(
            "/api-tokens",
            json!({"name": "ops", "role": "operator", "view_pii": false}),
        )
        .await;
    assert_eq!(restricted["view_pii"], false, "{restricted}");
    let (_, seen) = as_token(&s.cp, trusted["token"].as_str().unwrap(), &exe).await;
    assert!(seen.contains(&email), "a viewer given view_pii sees it");
    let (_, seen) = as_token(&s.cp, restricted["token"].as_str().unwrap(), &exe).await;
    assert!(
        !seen.contains(&email) && !seen.contains(&phone),
        "an operator without view_pii does not"
    );
    // A person: a viewer signs in, sees no personal data, is given view_pii, sees it at once.
    let (status, user) = s
        .cp
        .post("/users", json!({"email": "dpo@dealer.example", "password": "a long passphrase", "role": "viewer"}))
        .await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["view_pii"], false);
    let login: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", s.cp.base))
        .json(&json!({"email": "dpo@dealer.example", "password": "a long passphrase"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = login["token"].as_str().unwrap().to_owned();
    let (_, seen) = as_token(&s.cp, &session, &exe).await;
    assert!(!seen.contains(&email));
    let (status, changed) =
        s.cp.patch(
            format!("/users/{}", user["id"].as_str().unwrap()),
            json!({"view_pii": true}),
        )
        .await;
    assert_eq!(
        (status, &changed["view_pii"]),
        (200, &json!(true)),
        "{changed}"
    );
    let (_, seen) = as_token(&s.cp, &session, &exe).await;
    assert!(
        seen.contains(&email),
        "the grant applies on the next request"
    );

    let (_, tokens) = s.cp.get("/api-tokens").await;
    let auditor = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "auditor")
        .unwrap();
    assert_eq!(auditor["view_pii"], false, "a viewer's default");

    let (status, export) = as_token(&s.cp, &s.cp.admin, "/executions/export").await;
    assert_eq!(status, 200);
    assert_eq!(export.lines().count(), 1);
    assert!(export.contains(&email), "the admin's export is complete");

    // A viewer cannot discard; an admin can, once.
    let discard = format!("/dead-letters/items/{item_id}/discard");
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1{discard}", s.cp.base))
        .bearer_auth(&s.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let (status, d) = s.cp.send("POST", discard.clone(), None).await;
    assert_eq!(
        (status, d["status"].as_str()),
        (200, Some("discarded")),
        "{d}"
    );
    assert_eq!(s.cp.send("POST", discard, None).await.0, 404);
    let (_, open) = s.cp.get("/dead-letters/items").await;
    assert_eq!(open.as_array().unwrap().len(), 0);
}

/// A dead-lettered record is corrected and sent on from its mapping step:
/// still invalid, it is refused with what it breaks; valid, a new execution
/// reuses the steps before the mapping, takes the record as the mapping's
/// output and runs the steps after it.
#[tokio::test]
async fn a_corrected_dead_lettered_record_is_replayed_from_its_mapping_step() {
    let s = setup().await;
    let id = create(
        &s.cp,
        &customers_with_a_broken_email("customers-replayed", "[.steps.cdm.records[].email]"),
    )
    .await;
    let e = s.cp.run(&id, json!({})).await;
    assert_eq!(e["status"], "partially_succeeded", "{e}");
    let (_, items) = s.cp.get("/dead-letters/items").await;
    let item = items[0].clone();
    let item_id = item["id"].as_str().unwrap().to_owned();
    let replay = format!("/dead-letters/items/{item_id}/replay");
    // Sent on as it is, it still breaks the rule: refused, naming the field.
    let (status, refused) = s.cp.post(replay.clone(), json!({})).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["error"]["details"][0]["field"], "email",
        "{refused}"
    );
    // Corrected: a new execution takes it on from the mapping step.
    let mut fixed = item["record"].clone();
    fixed["email"] = json!("fixed.customer@dealer.example");
    let (_, calls_before) = s.cp.get("/api-calls").await;
    let (status, replayed) = s.cp.post(replay.clone(), json!({"record": fixed})).await;
    assert_eq!(status, 201, "{replayed}");
    assert_eq!(replayed["item"]["status"], "replayed");
    let exe = replayed["execution_id"].as_str().unwrap().to_owned();
    assert_eq!(replayed["item"]["replay_execution_id"], exe.as_str());
    let mut rx = s.cp.core.engine.subscribe();
    let (_, mut now) = s.cp.get(format!("/executions/{exe}")).await;
    while !matches!(
        now["status"].as_str(),
        Some("succeeded" | "partially_succeeded" | "failed")
    ) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv()).await;
        now = s.cp.get(format!("/executions/{exe}")).await.1;
    }
    assert_eq!(now["status"], "succeeded", "{now}");
    assert_eq!(
        now["output"],
        json!(["fixed.customer@dealer.example"]),
        "{now}"
    );
    assert_eq!(now["rerun_of"], e["id"]);
    let (_, calls_after) = s.cp.get("/api-calls").await;
    assert_eq!(
        calls_after.as_array().unwrap().len(),
        calls_before.as_array().unwrap().len(),
        "the DMS was not called again: the steps before the mapping were reused"
    );
    // Once only.
    assert_eq!(s.cp.post(replay, json!({})).await.0, 404);
    let (_, replayed_list) = s.cp.get("/dead-letters/items?status=replayed").await;
    assert_eq!(replayed_list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn map_from_cdm_builds_the_native_body_and_on_invalid_fail_names_field_and_rule() {
    let s = setup().await;
    let id = create(
        &s.cp,
        r#"format: dibop.orchestration/v1
name: book-from-cdm
parameters:
  - { name: start, type: string, required: true }
steps:
  - id: appointment
    type: set
    values:
      appointment: { appointment_id: "new", start: "{{ .params.start }}", customer_id: C000500, service: Inspection, status: booked }
  - id: native
    type: map_from_cdm
    connection: Demo DMS
    operation: createAppointment
    from: .steps.appointment.appointment
    on_invalid: fail
  - { id: book, type: call, connection: Demo DMS, operation: createAppointment, parameters: { appointment: { expr: .steps.native.record } } }
"#,
    )
    .await;
    let (status, e) =
        s.cp.post(
            format!("/orchestrations/{id}/execute"),
            json!({"parameters": {"start": "2027-03-01T09:00:00Z"}, "wait_ms": 30000}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["steps"][1]["output"]["record"],
        json!({"start": "2027-03-01T09:00:00Z", "customerNo": "C000500", "service": "Inspection"})
    );
    assert_eq!(e["steps"][2]["output"]["status_code"], 201);

    let (_, e) =
        s.cp.post(
            format!("/orchestrations/{id}/execute"),
            json!({"parameters": {"start": "next tuesday"}, "wait_ms": 30000}),
        )
        .await;
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["error"]["class"], "validation_error");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("start: format") && message.contains("RFC 3339"),
        "{message}"
    );
    let _ = &s.sim;
}

#[tokio::test]
async fn suggestions_are_assumed_until_confirmed_and_block_publishing_meanwhile() {
    let s = setup().await;
    let sample: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/vehicles?page_size=2", s.sim))
        .header("X-API-Key", "dms-demo-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (status, proposal) =
        s.cp.post(
            "/cdm/suggest",
            json!({"domain": "vehicle", "sample": sample, "records": ".items"}),
        )
        .await;
    assert_eq!(status, 200, "{proposal}");
    let by: std::collections::HashMap<String, Value> = proposal["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["field"].as_str().unwrap().to_owned(), x.clone()))
        .collect();
    for (field, expression) in [
        ("vin", ".vin"),
        ("make", ".make"),
        ("year", ".modelYear"),
        ("mileage_km", ".odometerKm"),
        ("stock_number", ".stockNo"),
        ("exterior_colour", ".colourExt"),
        ("list_price", ".priceEur"),
        ("first_registration_date", ".firstRegistered"),
    ] {
        assert_eq!(by[field]["expression"], expression, "{field}: {proposal}");
        assert_eq!(by[field]["status"], "assumed");
    }
    assert_eq!(proposal["unmapped_required"], json!([]));

    // Into a draft of our own: suggested fields are assumed, publishing refuses them.
    let mut def: Value = serde_yaml_ng::from_str(
        &include_str!("../../catalogue/dms-sim.yaml").replace("slug: dms-sim", "slug: my-dms"),
    )
    .unwrap();
    def.as_object_mut().unwrap().remove("mappings");
    let (status, draft) = s.cp.post("/connectors", def).await;
    assert_eq!(status, 201, "{draft}");
    let cid = draft["id"].as_str().unwrap().to_owned();
    let (status, _) =
        s.cp.post(
            format!("/connectors/{cid}/mappings/listVehicles/suggest"),
            json!({"domain": "vehicle", "sample": sample, "records": ".items"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, got) = s.cp.get(format!("/connectors/{cid}")).await;
    let mapping = &got["definition"]["mappings"]["listVehicles"];
    assert_eq!(mapping["records"], ".items");
    assert_eq!(mapping["inbound"]["vin"], ".vin");
    let assumed: Vec<&str> = mapping["assumed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        assumed.contains(&"vin") && assumed.contains(&"mileage_km"),
        "{mapping}"
    );
    let (status, refused) =
        s.cp.post(
            format!("/connectors/{cid}/publish"),
            json!({"scope": "enterprise"}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused.to_string().contains("nobody confirmed yet"),
        "{refused}"
    );

    // Confirming something not assumed is refused; confirming all of them clears the list.
    let (status, _) =
        s.cp.post(
            format!("/connectors/{cid}/mappings/listVehicles/confirm"),
            json!({"fields": ["interior_colour"]}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, confirmed) =
        s.cp.post(
            format!("/connectors/{cid}/mappings/listVehicles/confirm"),
            json!({"fields": assumed}),
        )
        .await;
    assert_eq!(status, 200, "{confirmed}");
    assert!(confirmed.get("assumed").is_none(), "{confirmed}");
    let (status, published) =
        s.cp.post(
            format!("/connectors/{cid}/publish"),
            json!({"scope": "enterprise"}),
        )
        .await;
    assert_eq!(status, 200, "{published}");
}

#[tokio::test]
async fn suggestions_from_a_live_call_of_a_connection() {
    let s = setup().await;
    let (_, connections) = s.cp.get("/connections").await;
    let id = connections[0]["id"].as_str().unwrap().to_owned();
    // The domain defaults to the one the connector maps the operation onto.
    let (status, proposal) =
        s.cp.post(
            format!("/connections/{id}/operations/listCustomers/suggest"),
            json!({"parameters": {"page_size": 3}}),
        )
        .await;
    assert_eq!(status, 200, "{proposal}");
    assert_eq!(proposal["domain"], "customer");
    let by: std::collections::HashMap<String, String> = proposal["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["field"].as_str().unwrap().to_owned(),
                x["expression"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (field, expression) in [
        ("email", ".email"),
        ("phone", ".phone"),
        ("first_name", ".firstName"),
        ("last_name", ".lastName"),
        ("postal_code", ".postcode"),
        ("address_line_1", ".street"),
        ("country", ".country"),
        ("customer_id", ".customerNo"),
    ] {
        assert_eq!(
            by.get(field).map(String::as_str),
            Some(expression),
            "{field}: {proposal}"
        );
    }
    // The call went through the normal path: it is in the call log.
    let (_, calls) =
        s.cp.get(format!(
            "/api-calls?connection_id={id}&operation=listCustomers"
        ))
        .await;
    assert_eq!(calls.as_array().unwrap().len(), 1, "{calls}");
    // An operation without a mapping needs a domain named.
    let (status, err) =
        s.cp.post(
            format!("/connections/{id}/operations/health/suggest"),
            json!({}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("name one"),
        "{err}"
    );
}

//! API tokens, roles, readiness and the audit log, through a real HTTP
//! socket against an in-process control plane.

use dibop_control_plane::identity::{Role, tokens};
use dibop_control_plane::testing::TestCp;
use dibop_control_plane::{Settings, start, store::now_unix};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn tokens_carry_roles_and_can_be_revoked() {
    let cp = TestCp::start().await;
    let (status, created) = cp
        .post_as(
            &cp.admin,
            "/api-tokens",
            json!({"name": "ci", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let viewer = created["token"].as_str().unwrap().to_owned();
    assert!(viewer.starts_with("dibop_"));
    assert_eq!(created["prefix"].as_str().unwrap(), &viewer[..12]);

    // A viewer reads but cannot change.
    let (status, _) = cp.get_as(&viewer, "/agent-groups").await;
    assert_eq!(status, 200);
    let (status, body) = cp
        .post_as(&viewer, "/agent-groups", json!({"name": "x"}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");

    // Listed without the secret, with its last use.
    let (_, list) = cp.get_as(&cp.admin, "/api-tokens").await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == created["id"])
        .unwrap()
        .clone();
    assert!(
        listed.get("token").is_none(),
        "the secret is never listed: {listed}"
    );
    assert!(listed["last_used_at"].is_string());
    assert!(
        !list.to_string().contains(&viewer),
        "no secret anywhere in the list"
    );

    let (status, _) = cp
        .delete_as(
            &cp.admin,
            &format!("/api-tokens/{}", created["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 204);
    // Revoking it again says so, and writes no second audit entry.
    let (status, again) = cp
        .delete_as(
            &cp.admin,
            &format!("/api-tokens/{}", created["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("already_revoked")),
        "{again}"
    );
    let (_, audit) = cp.get_as(&cp.admin, "/audit?action=api_token.revoke").await;
    assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");
    let (status, body) = cp.get_as(&viewer, "/agent-groups").await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );

    let (status, body) = cp
        .post_as(
            &cp.admin,
            "/api-tokens",
            json!({"name": "", "role": "root"}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        body["error"]["details"].as_array().unwrap().len(),
        2,
        "{body}"
    );
}

#[tokio::test]
async fn expired_tokens_say_so() {
    let cp = TestCp::start().await;
    let (_, secret) = tokens::issue_token(
        &cp.core.store,
        &cp.tenant_id,
        "old",
        Role::Operator,
        Some(now_unix() - 1),
    )
    .await
    .unwrap();
    let (status, body) = cp.get_as(&secret, "/agents").await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn changes_are_audited_with_who_what_and_where() {
    let cp = TestCp::start().await;
    let (_, group) = cp
        .post_as(&cp.admin, "/agent-groups", json!({"name": "site-a"}))
        .await;
    let group_id = group["id"].as_str().unwrap();
    cp.send_as(
        &cp.admin,
        "POST",
        &format!("/agent-groups/{group_id}/enrollment-tokens"),
        None,
    )
    .await;
    let (status, audit) = cp.get_as(&cp.admin, "/audit").await;
    assert_eq!(status, 200, "{audit}");
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "enrollment_token.create",
            "agent_group.create",
            "api_token.create"
        ],
        "newest first"
    );
    let entry = &audit[1];
    assert_eq!(entry["resource_id"], group_id);
    assert!(entry["actor"].as_str().unwrap().starts_with("token:tok_"));
    assert_eq!(entry["source_ip"], "127.0.0.1");
    assert!(entry["request_id"].as_str().unwrap().starts_with("req_"));
    assert!(
        !audit.to_string().contains("dibop-enroll-v1."),
        "no enrollment secret in the audit log"
    );

    let (_, filtered) = cp
        .get_as(&cp.admin, "/audit?action=agent_group.create")
        .await;
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    let (status, body) = cp.get_as(&cp.admin, "/audit?cursor=nonsense").await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = cp.get_as(&cp.admin, "/audit?limit=0").await;
    assert_eq!(status, 422, "{body}");
    // A viewer may not read it, and is told what is missing (a read, not a change).
    let (_, viewer) = cp
        .post_as(
            &cp.admin,
            "/api-tokens",
            json!({"name": "reader", "role": "viewer"}),
        )
        .await;
    let viewer = viewer["token"].as_str().unwrap().to_owned();
    let (status, body) = cp.get_as(&viewer, "/audit").await;
    assert_eq!(status, 403);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot read the audit log"), "{message}");

    // Another tenant sees none of it.
    let (_, other) = dibop_control_plane::bootstrap_tenant(&cp.core.store, "other", "cli")
        .await
        .unwrap();
    let (_, theirs) = cp.get_as(&other, "/audit").await;
    assert!(
        theirs
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["resource_id"] != group_id)
    );
}

#[tokio::test]
async fn readiness_reflects_the_store() {
    let cp = TestCp::start().await;
    let resp = reqwest::get(format!("{}/readyz", cp.base)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    cp.core.store.close().await;
    let resp = reqwest::get(format!("{}/readyz", cp.base)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_ready");
}

async fn login(cp: &TestCp, email: &str, password: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", cp.base))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn people_sign_in_and_role_changes_apply_on_the_next_request() {
    let cp = TestCp::start().await;
    let (status, user) = cp.post_as(&cp.admin, "/users", json!({"email": "Ana@Dealer.example", "password": "a long passphrase", "role": "operator"}))
    .await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["email"], "ana@dealer.example");
    assert!(user.get("password_hash").is_none() && !user.to_string().contains("argon2"));

    let (status, body) = login(&cp, "ana@dealer.example", "a long passphrase").await;
    assert_eq!(status, 200, "{body}");
    let session = body["token"].as_str().unwrap().to_owned();
    assert_eq!(body["user"]["role"], "operator");

    // An operator may not create groups; promoted, the same session may.
    let (status, _) = cp
        .post_as(&session, "/agent-groups", json!({"name": "a"}))
        .await;
    assert_eq!(status, 403);
    let (status, _) = cp
        .patch_as(
            &cp.admin,
            &format!("/users/{}", user["id"].as_str().unwrap()),
            json!({"role": "enterprise_admin"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = cp
        .post_as(&session, "/agent-groups", json!({"name": "a"}))
        .await;
    assert_eq!(status, 201, "{body}");

    // Logout ends the session.
    let (status, _) = cp.send_as(&session, "POST", "/auth/logout", None).await;
    assert_eq!(status, 204);
    let (status, _) = cp.get_as(&session, "/agents").await;
    assert_eq!(status, 401);

    // Disabling a user ends every session and refuses sign-in.
    let (_, body) = login(&cp, "ana@dealer.example", "a long passphrase").await;
    let session = body["token"].as_str().unwrap().to_owned();
    cp.patch_as(
        &cp.admin,
        &format!("/users/{}", user["id"].as_str().unwrap()),
        json!({"disabled": true}),
    )
    .await;
    let (status, _) = cp.get_as(&session, "/agents").await;
    assert_eq!(status, 401);
    let (status, _) = login(&cp, "ana@dealer.example", "a long passphrase").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn wrong_credentials_say_nothing_about_which_part_is_wrong() {
    let cp = TestCp::start().await;
    cp.post_as(
        &cp.admin,
        "/users",
        json!({"email": "bo@dealer.example", "password": "another passphrase", "role": "viewer"}),
    )
    .await;
    let (s1, wrong_password) = login(&cp, "bo@dealer.example", "not the passphrase").await;
    let (s2, unknown_user) = login(&cp, "nobody@dealer.example", "not the passphrase").await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(
        wrong_password["error"]["message"],
        unknown_user["error"]["message"]
    );
    assert_eq!(wrong_password["error"]["code"], "invalid_credentials");

    let (status, body) = cp
        .post_as(
            &cp.admin,
            "/users",
            json!({"email": "x", "password": "short", "role": "god"}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        body["error"]["details"].as_array().unwrap().len(),
        3,
        "{body}"
    );
    let (status, body) = cp.post_as(&cp.admin, "/users", json!({"email": "BO@dealer.example", "password": "another passphrase", "role": "viewer"})).await;
    assert_eq!(
        status, 409,
        "emails are unique, whatever their case: {body}"
    );
}

#[tokio::test]
async fn platform_admins_manage_tenants_and_limits_answer_429() {
    let cp = TestCp::start().await;
    let platform = cp.platform_admin().await;

    // Tenant admins cannot manage tenants; platform admins see no tenant data.
    let (status, _) = cp.get_as(&cp.admin, "/tenants").await;
    assert_eq!(status, 403);
    let (status, groups) = cp.get_as(&platform, "/agent-groups").await;
    assert_eq!((status, groups.as_array().unwrap().len()), (200, 0));

    let (status, t) = cp
        .post_as(
            &platform,
            "/tenants",
            json!({"name": "small-dealer", "tier": "free"}),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    assert_eq!(
        t["limits"],
        json!({"calls_per_month": 1000, "requests_per_minute": 10, "concurrent_executions": 2,
            "storage_bytes": 100 * 1024 * 1024, "retention_days": 7})
    );
    let tenant_id = t["id"].as_str().unwrap().to_owned();
    let (_, small) = dibop_control_plane::bootstrap_tenant(&cp.core.store, "small-dealer", "cli")
        .await
        .unwrap();

    // Ten requests a minute, then 429 with Retry-After and the limit named.
    for _ in 0..10 {
        assert_eq!(cp.get_as(&small, "/agents").await.0, 200);
    }
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/agents", cp.base))
        .bearer_auth(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10 API requests per minute"),
        "{body}"
    );

    // A custom monthly quota of two calls.
    let (status, t) = cp
        .patch_as(
            &platform,
            &format!("/tenants/{tenant_id}"),
            json!({"requests_per_minute": 1000, "calls_per_month": 2, "retention_days": 90}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["limits"]["retention_days"], 90);
    assert_eq!(t["custom_retention_days"], 90);
    let (status, bad) = cp
        .patch_as(
            &platform,
            &format!("/tenants/{tenant_id}"),
            json!({"storage_bytes": 0, "retention_days": "long"}),
        )
        .await;
    assert_eq!(status, 422, "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retention_days"),
        "{bad}"
    );
    let (_, group) = cp
        .post_as(&small, "/agent-groups", json!({"name": "g"}))
        .await;
    let calls = format!("/agent-groups/{}/calls", group["id"].as_str().unwrap());
    for _ in 0..2 {
        let (status, r) = cp
            .post_as(&small, &calls, json!({"url": "http://127.0.0.1:9/"}))
            .await;
        assert_eq!(status, 200, "{r}");
    }
    let (status, body) = cp
        .post_as(&small, &calls, json!({"url": "http://127.0.0.1:9/"}))
        .await;
    assert_eq!(status, 429);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("monthly quota of 2 calls"),
        "{body}"
    );
    cp.core.quotas.flush(&cp.core.store).await;
    let (_, t) = cp.get_as(&platform, &format!("/tenants/{tenant_id}")).await;
    assert_eq!(t["calls_this_month"], 2, "{t}");

    // Suspended: every request refused, saying why; resumed: back.
    cp.patch_as(
        &platform,
        &format!("/tenants/{tenant_id}"),
        json!({"status": "suspended"}),
    )
    .await;
    let (status, body) = cp.get_as(&small, "/agents").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("tenant_suspended"))
    );
    cp.patch_as(
        &platform,
        &format!("/tenants/{tenant_id}"),
        json!({"status": "active"}),
    )
    .await;
    assert_eq!(cp.get_as(&small, "/agents").await.0, 200);

    let (status, body) = cp
        .patch_as(
            &platform,
            &format!("/tenants/{tenant_id}"),
            json!({"tier": "gold", "calls_per_month": 0}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        body["error"]["details"].as_array().unwrap().len(),
        2,
        "{body}"
    );
}

#[tokio::test]
async fn rotate_master_key_keeps_secrets_and_a_wrong_key_stops_the_start() {
    use dibop_control_plane::vault::{Secret, Vault, default_provider};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let store = dibop_control_plane::store::Store::open_sqlite(&data.join("dibop.db"))
        .await
        .unwrap();
    store.create_tenant("ten_a", "A").await.unwrap();
    let vault = Vault::new(default_provider(data).unwrap());
    let sealed = vault
        .seal(&store, "ten_a", "con_1", "password", &Secret::new("pw-123"))
        .await
        .unwrap();
    store.close().await;
    let old_key = std::fs::read(data.join("master.key")).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dibop"))
        .args(["admin", "--data-dir"])
        .arg(data)
        .arg("rotate-master-key")
        .env_remove("DIBOP_MASTER_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["data_keys_rewrapped"], 1);
    assert_ne!(std::fs::read(data.join("master.key")).unwrap(), old_key);

    let store = dibop_control_plane::store::Store::open_sqlite(&data.join("dibop.db"))
        .await
        .unwrap();
    let vault = Vault::new(default_provider(data).unwrap());
    vault.verify(&store).await.unwrap();
    assert_eq!(
        vault
            .open(&store, "ten_a", "con_1", "password", &sealed)
            .await
            .unwrap()
            .expose(),
        "pw-123"
    );
    let audit = store
        .list_audit(None, &Default::default(), 10)
        .await
        .unwrap();
    assert!(audit.iter().any(|e| e.action == "vault.rotate_master_key"));
    store.close().await;

    // Put the old key back: the control plane refuses to start, and says why.
    std::fs::write(data.join("master.key"), &old_key).unwrap();
    let mut settings = Settings::new(data.to_owned());
    settings.http_addr = "127.0.0.1:0".parse().unwrap();
    settings.tunnel_addr = "127.0.0.1:0".parse().unwrap();
    let err = start(settings, CancellationToken::new()).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("does not open the data keys"),
        "{err:#}"
    );
}

#[tokio::test]
async fn bad_input_gets_the_error_shape_never_a_500() {
    let cp = TestCp::start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/agent-groups", cp.base);
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            client
                .post(&url)
                .bearer_auth(&cp.admin)
                .header("content-type", "application/json")
                .body("{\"name\":"),
            400,
        ),
        (
            client
                .post(&url)
                .bearer_auth(&cp.admin)
                .header("content-type", "application/json")
                .body("{\"name\": 7}"),
            422,
        ),
        // A NUL byte in a name.
        (
            client
                .post(&url)
                .bearer_auth(&cp.admin)
                .header("content-type", "application/json")
                .body("{\"name\": \"site\\u0000x\"}"),
            422,
        ),
        (client.post(&url).bearer_auth(&cp.admin).body("name=x"), 415),
        (
            client
                .post(&url)
                .bearer_auth(&cp.admin)
                .header("content-type", "application/json")
                .body(format!("{{\"name\":\"{}\"}}", "x".repeat(3 * 1024 * 1024))),
            413,
        ),
        (
            client
                .get(format!("{url}?limit=abc"))
                .bearer_auth(&cp.admin),
            422,
        ),
        (
            client
                .get(format!("{url}?cursor=zzz&bogus=1"))
                .bearer_auth(&cp.admin),
            422,
        ),
        (client.delete(&url).bearer_auth(&cp.admin), 405),
        (
            client
                .get(format!("{}/api/v1/nope", cp.base))
                .bearer_auth(&cp.admin),
            404,
        ),
        (client.get(&url).header("authorization", "Basic abc"), 401),
        // A record nested deeper than JSON bodies may be: invalid, like a too-deep definition.
        (
            client
                .post(format!("{}/api/v1/cdm/validate", cp.base))
                .bearer_auth(&cp.admin)
                .header("content-type", "application/json")
                .body(format!(
                    "{{\"domain\":\"vehicle\",\"record\":{}1{}}}",
                    "[".repeat(200),
                    "]".repeat(200)
                )),
            422,
        ),
    ];
    for (i, (req, expected)) in cases.into_iter().enumerate() {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), expected, "case {i}");
        let body: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("case {i}: not JSON: {e}"));
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "case {i}: {body}"
        );
        assert!(
            body["error"]["request_id"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "case {i}: {body}"
        );
    }
}

#[tokio::test]
async fn idempotency_keys_replay_creations_and_refuse_reuse() {
    let cp = TestCp::start().await;
    let client = reqwest::Client::new();
    let post = |key: &str, body: Value| {
        client
            .post(format!("{}/api/v1/api-tokens", cp.base))
            .bearer_auth(&cp.admin)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = post(
        "create-ci-token-1",
        json!({"name": "ci", "role": "operator"}),
    )
    .await
    .unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = first.json().await.unwrap();
    let again = post(
        "create-ci-token-1",
        json!({"name": "ci", "role": "operator"}),
    )
    .await
    .unwrap();
    assert_eq!(again.status().as_u16(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"], "the same token, not a second one");
    assert_eq!(again["token"], first["token"]);
    let (_, list) = cp.get_as(&cp.admin, "/api-tokens").await;
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .filter(|t| t["name"] == "ci")
            .count(),
        1
    );

    let other = post(
        "create-ci-token-1",
        json!({"name": "other", "role": "viewer"}),
    )
    .await
    .unwrap();
    assert_eq!(other.status().as_u16(), 422);
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["error"]["code"], "idempotency_key_reused");

    // The stored response holds a secret: it is sealed in the database.
    cp.core.store.close().await;
    let db = std::fs::read(cp.data_dir.join("dibop.db")).unwrap();
    let wal = std::fs::read(cp.data_dir.join("dibop.db-wal")).unwrap_or_default();
    let secret = first["token"].as_str().unwrap().as_bytes();
    for file in [db, wal] {
        assert!(
            !file.windows(secret.len()).any(|w| w == secret),
            "a token secret is on disk in plaintext"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_and_docs_are_served_without_a_cdn() {
    let cp = TestCp::start().await;
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", cp.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["paths"]["/api/v1/agent-groups/{id}/calls"]["post"].is_object());
    let page = reqwest::get(format!("{}/api/v1/docs/", cp.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("swagger-ui-bundle.js") && !page.contains("https://"),
        "assets are local: {page}"
    );
    let bundle = reqwest::get(format!("{}/api/v1/docs/swagger-ui-bundle.js", cp.base))
        .await
        .unwrap();
    assert_eq!(bundle.status().as_u16(), 200);
    // Without the slash, the docs are still found (a redirect to them, followed here).
    let page = reqwest::get(format!("{}/api/v1/docs", cp.base))
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(page.url().path(), "/api/v1/docs/");
    // Nothing at a path under them is a 404 that says so.
    let missing = reqwest::get(format!("{}/api/v1/docs/nothing-here.js", cp.base))
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let e: Value = missing.json().await.unwrap();
    assert_eq!(e["error"]["code"], "not_found", "{e}");
}

#[tokio::test]
async fn the_cli_issues_api_tokens_that_work() {
    let cp = TestCp::start().await;
    // The CLI runs while this runtime keeps serving the control plane: a
    // blocking wait here would stall its tasks, a write transaction among
    // them, and the CLI would wait for SQLite's lock in vain.
    let data = cp.data_dir.clone();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dibop"))
        .args(["admin", "--data-dir"])
        .arg(&data)
        .args([
            "create-api-token",
            "--tenant",
            "acme",
            "--role",
            "viewer",
            "--name",
            "reporting",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = created["api_token"].as_str().unwrap();
    assert_eq!(cp.get_as(token, "/agents").await.0, 200);
    assert_eq!(
        cp.post_as(token, "/agent-groups", json!({"name": "x"}))
            .await
            .0,
        403,
        "a viewer"
    );
    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_dibop"))
        .args(["admin", "--data-dir"])
        .arg(&data)
        .args(["create-api-token", "--tenant", "no-such-tenant"])
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no tenant named `no-such-tenant`"));
}

#[tokio::test]
async fn connector_drafts_from_json_or_yaml_with_every_problem_named() {
    let cp = TestCp::start().await;
    let yaml = include_str!("../../catalogue/dms-sim.yaml");
    let post = |path: &str, content_type: &str, body: String| {
        reqwest::Client::new()
            .post(format!("{}/api/v1{path}", cp.base))
            .bearer_auth(&cp.admin)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let resp = post("/connectors", "application/yaml", yaml.to_owned())
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(
        (created["slug"].as_str(), created["status"].as_str()),
        (Some("dms-sim"), Some("draft"))
    );
    assert_eq!(created["operations"], 10);

    // The same slug twice: conflict. As JSON with a new slug: fine.
    let again = post("/connectors", "application/yaml", yaml.to_owned())
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 409);
    let mut doc = created["definition"].clone();
    doc["slug"] = json!("dms-sim-eu");
    let resp = post("/connectors", "application/json", doc.to_string())
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    // Invalid: 422 with every problem and its path; nothing saved.
    doc["slug"] = json!("Bad Slug");
    doc["operations"][0]["method"] = json!("FETCH");
    doc["health_check"] = json!("nope");
    let resp = post("/connectors", "application/json", doc.to_string())
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let body: Value = resp.json().await.unwrap();
    let paths: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["slug", "operations[0].method", "health_check"],
        "{body}"
    );
    let (_, list) = cp.get_as(&cp.admin, "/connectors").await;
    assert_eq!(list.as_array().unwrap().len(), 2, "nothing half-saved");

    // Validate without saving.
    let report: Value = post("/connectors/validate", "application/json", doc.to_string())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["problems"].as_array().unwrap().len(), 3);
    let not_yaml: Value = post("/connectors/validate", "application/yaml", "a: [".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(not_yaml["problems"][0]["path"], "$");

    // Replace, then delete; viewers may read but not write.
    let id = created["id"].as_str().unwrap();
    let (status, replaced) = cp
        .put_as(
            &cp.admin,
            &format!("/connectors/{id}"),
            created["definition"].clone(),
        )
        .await;
    assert_eq!(status, 200, "{replaced}");
    let (_, viewer) = tokens::issue_token(&cp.core.store, &cp.tenant_id, "v", Role::Viewer, None)
        .await
        .unwrap();
    assert_eq!(
        cp.get_as(&viewer, &format!("/connectors/{id}")).await.0,
        200
    );
    assert_eq!(
        cp.delete_as(&viewer, &format!("/connectors/{id}")).await.0,
        403
    );
    assert_eq!(
        cp.delete_as(&cp.admin, &format!("/connectors/{id}"))
            .await
            .0,
        204
    );
    assert_eq!(
        cp.get_as(&cp.admin, &format!("/connectors/{id}")).await.0,
        404
    );
}

/// The platform tenant holds platform admins only: no enterprise role can be
/// made there (users, tokens, role changes), a row from before that rule
/// cannot act, and platform admins give a tenant its first enterprise admin
/// through `POST /tenants/{id}/users` without seeing its data afterwards.
#[tokio::test]
async fn enterprise_roles_never_exist_in_the_platform_tenant() {
    let cp = TestCp::start().await;
    let platform = cp.platform_admin().await;
    let password = "a long enough password";
    for role in ["enterprise_admin", "operator", "viewer"] {
        let (status, e) = cp.post_as(&platform, "/users", json!({"email": format!("{role}@dibop.example"), "password": password, "role": role}))
        .await;
        assert_eq!(status, 422, "{role}: {e}");
        assert_eq!(e["error"]["details"][0]["field"], "role", "{e}");
        let (status, e) = cp
            .post_as(&platform, "/api-tokens", json!({"name": "t", "role": role}))
            .await;
        assert_eq!(status, 422, "{role}: {e}");
    }
    // An enterprise-role token in the platform tenant made before the rule: refused.
    let platform_tenant = cp
        .core
        .store
        .tenant_by_name("platform")
        .await
        .unwrap()
        .unwrap();
    let (_, stray) = tokens::issue_token(
        &cp.core.store,
        &platform_tenant.id,
        "stray",
        Role::EnterpriseAdmin,
        None,
    )
    .await
    .unwrap();
    let (_, catalogue) = cp.get_as(&cp.admin, "/catalogue?q=dms-sim").await;
    let global = catalogue[0]["id"].as_str().unwrap().to_owned();
    let (status, e) = cp
        .send_as(
            &stray,
            "POST",
            &format!("/connectors/{global}/unpublish"),
            None,
        )
        .await;
    assert_eq!(status, 403, "{e}");
    let (_, still) = cp.get_as(&cp.admin, "/catalogue?q=dms-sim").await;
    assert_eq!(
        still[0]["id"],
        global.as_str(),
        "the global connector stays"
    );

    // The proper path: the tenant's first enterprise admin.
    let (status, user) = cp
        .post_as(
            &platform,
            &format!("/tenants/{}/users", cp.tenant_id),
            json!({"email": "first-admin@acme.example", "password": password}),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["role"], "enterprise_admin");
    let (status, session) = login(&cp, "first-admin@acme.example", password).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["tenant_id"], cp.tenant_id.as_str());
    // Bad input, the platform tenant itself and unknown tenants are refused.
    let (status, e) = cp
        .post_as(
            &platform,
            &format!("/tenants/{}/users", cp.tenant_id),
            json!({"email": "x@acme.example", "password": password, "role": "platform_admin"}),
        )
        .await;
    assert_eq!(status, 422, "{e}");
    let (status, _) = cp
        .post_as(
            &platform,
            &format!("/tenants/{}/users", platform_tenant.id),
            json!({"email": "y@acme.example", "password": password}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = cp
        .post_as(
            &platform,
            "/tenants/ten_nope/users",
            json!({"email": "z@acme.example", "password": password}),
        )
        .await;
    assert_eq!(status, 404);
    // Enterprise admins cannot use it; the platform admin still sees no tenant users.
    let (status, _) = cp
        .post_as(
            &cp.admin,
            &format!("/tenants/{}/users", cp.tenant_id),
            json!({"email": "w@acme.example", "password": password}),
        )
        .await;
    assert_eq!(status, 403);
    let (_, users) = cp.get_as(&platform, "/users").await;
    assert!(
        !users.to_string().contains("first-admin@acme.example"),
        "{users}"
    );
    // The tenant's own audit log says who made the user.
    let (_, audit) = cp.get_as(&cp.admin, "/audit?action=user.create").await;
    assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");
}

/// The audit entry is written in the transaction of the change it records:
/// when the audit log cannot be written, the change is refused and leaves
/// nothing behind (no group without its audit entry).
#[tokio::test]
async fn a_change_whose_audit_entry_cannot_be_written_does_not_happen() {
    use sqlx::Connection;
    let cp = TestCp::start().await;
    let url = format!("sqlite://{}", cp.data_dir.join("dibop.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER audit_down BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'the audit log is down'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();

    let (status, body) = cp.post("/agent-groups", json!({"name": "unaudited"})).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "internal", "{body}");
    assert!(
        !body.to_string().contains("audit log is down"),
        "storage detail stays in the logs: {body}"
    );
    let (status, body) = cp
        .post(
            "/api-tokens",
            json!({"name": "unaudited", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 500, "{body}");

    sqlx::query("DROP TRIGGER audit_down")
        .execute(&mut db)
        .await
        .unwrap();
    let (_, groups) = cp.get("/agent-groups").await;
    assert!(
        !groups.to_string().contains("unaudited"),
        "the refused change was rolled back: {groups}"
    );
    let (_, tokens) = cp.get("/api-tokens").await;
    assert!(
        !tokens.to_string().contains("unaudited"),
        "the refused token was rolled back: {tokens}"
    );
    // With the log back, the same change goes through and is audited.
    let (status, _) = cp.post("/agent-groups", json!({"name": "unaudited"})).await;
    assert_eq!(status, 201);
    let (_, audit) = cp.get("/audit?action=agent_group.create").await;
    assert_eq!(audit.as_array().unwrap().len(), 1, "{audit}");
}

//! The web console over real HTTP: sign-in and sign-out, sessions in
//! cookies, CSRF, the security headers, roles, and escaping of what users
//! typed. (The flows in a real browser are the Chromium tests.)

use std::collections::HashMap;

use dibop_control_plane::testing::{TestCp, spawn_dms_sim};
use serde_json::json;

/// A browser without script: follows nothing by itself, keeps cookies.
struct Browser {
    base: String,
    client: reqwest::Client,
    cookies: HashMap<String, String>,
    /// Asks for a result region only (`X-Console-Partial`).
    partial: bool,
}

/// A page as the browser got it.
struct Page {
    status: u16,
    location: Option<String>,
    headers: reqwest::header::HeaderMap,
    set_cookies: Vec<String>,
    body: String,
}

impl Browser {
    fn new(cp: &TestCp) -> Browser {
        Browser {
            base: cp.base.clone(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            partial: false,
        }
    }

    async fn send(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req = req.header("cookie", jar.join("; "));
        }
        if self.partial {
            req = req.header("x-console-partial", "1");
        }
        if let Some(form) = form {
            let body: String = form
                .iter()
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect::<Vec<_>>()
                .join("&");
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let resp = req.send().await.unwrap();
        let headers = resp.headers().clone();
        let set_cookies: Vec<String> = headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for c in &set_cookies {
            let pair = c.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        Page {
            status: resp.status().as_u16(),
            location: headers
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned()),
            set_cookies,
            headers,
            body: resp.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, None).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send("POST", path, Some(form)).await
    }

    /// A POST as the console's script makes it for a result region.
    async fn post_partial(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.partial = true;
        let page = self.send("POST", path, Some(form)).await;
        self.partial = false;
        page
    }

    /// Signs in through the sign-in form: the answer to the form's POST.
    async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let form = self.get("/sign-in").await;
        assert_eq!(form.status, 200);
        let binding = hidden(&form.body, "binding");
        self.post(
            "/sign-in",
            &[
                ("email", email),
                ("password", password),
                ("binding", &binding),
                ("next", "/relays"),
            ],
        )
        .await
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of a hidden input of a page.
fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        + marker.len();
    body[at..body[at..].find('"').unwrap() + at].to_owned()
}

/// Makes a user of `acme` with `role`; its password.
async fn user(cp: &TestCp, email: &str, role: &str) -> String {
    let password = "a long enough password";
    let (status, u) = cp
        .post(
            "/users",
            json!({"email": email, "password": password, "role": role}),
        )
        .await;
    assert_eq!(status, 201, "{u}");
    password.into()
}

#[tokio::test]
async fn signing_in_and_out_with_a_session_cookie() {
    let cp = TestCp::start().await;
    let password = user(&cp, "ada@acme.example", "enterprise_admin").await;
    let mut b = Browser::new(&cp);

    // Not signed in: every page sends to the sign-in form and back.
    let page = b.get("/connections").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/sign-in?next=/connections"));

    // A wrong password says so, and sets no session.
    let page = b.sign_in("ada@acme.example", "not the password").await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("The email or the password is wrong"));
    assert!(!b.cookies.contains_key("dibop_session"));

    let page = b.sign_in("ada@acme.example", &password).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/relays"));
    let session = page
        .set_cookies
        .iter()
        .find(|c| c.starts_with("dibop_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=43200"] {
        assert!(session.contains(attribute), "{session} lacks {attribute}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: {session}");

    // Every page renders, with the security headers and no inline script.
    for path in [
        "/",
        "/integrations",
        "/connections",
        "/relays",
        "/settings/users",
        "/audit",
    ] {
        let page = b.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
        assert!(page.body.contains("ada@acme.example"), "{path}");
        assert!(
            !page.body.contains("<script>"),
            "{path} has an inline script"
        );
        assert!(
            !page.body.contains("style=\""),
            "{path} has an inline style"
        );
    }
    // Its assets are served with long-lived caching under hashed names.
    let page = b.get("/").await;
    let css = page
        .body
        .split("rel=\"stylesheet\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(
        css.starts_with("/assets/console.") && css.ends_with(".css"),
        "{css}"
    );
    let asset = b.get(css).await;
    assert_eq!(asset.status, 200);
    assert!(
        asset.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(b.get("/assets/console.0000.css").await.status, 404);

    // Signing out needs the form's CSRF token; then the session is gone.
    let csrf = hidden(&page.body, "csrf");
    let refused = b.post("/sign-out", &[("csrf", "forged")]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        b.get("/").await.status,
        200,
        "a forged sign-out changed nothing"
    );
    let out = b.post("/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location.as_deref(), Some("/sign-in?signed_out=1"));
    let stolen = session
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    b.cookies.insert("dibop_session".into(), stolen.clone());
    assert_eq!(
        b.get("/").await.status,
        303,
        "a signed-out session still works"
    );
    let (status, _) = cp.get_as(&stolen, "/connections").await;
    assert_eq!(status, 401, "the session's token still works on the API");
}

#[tokio::test]
async fn a_sign_in_post_from_elsewhere_and_an_api_token_cookie_are_refused() {
    let cp = TestCp::start().await;
    let password = user(&cp, "bob@acme.example", "operator").await;
    let mut b = Browser::new(&cp);
    // No form binding: a page of another site posting credentials.
    let page = b
        .post(
            "/sign-in",
            &[("email", "bob@acme.example"), ("password", &password)],
        )
        .await;
    assert_eq!(page.status, 403);
    assert!(!b.cookies.contains_key("dibop_session"));
    // An API token is not a console session.
    b.cookies.insert("dibop_session".into(), cp.admin.clone());
    assert_eq!(b.get("/").await.status, 303);
    // Returning only to this console's own pages.
    let mut b = Browser::new(&cp);
    let form = b.get("/sign-in?next=https://evil.example/").await;
    assert_eq!(hidden(&form.body, "next"), "/");
}

#[tokio::test]
async fn viewers_see_no_write_controls_and_cannot_forge_them() {
    let cp = TestCp::start().await;
    let (status, group) = cp
        .post("/agent-groups", json!({"name": "north-site"}))
        .await;
    assert_eq!(status, 201, "{group}");
    let group_id = group["id"].as_str().unwrap().to_owned();

    let password = user(&cp, "vic@acme.example", "viewer").await;
    let mut viewer = Browser::new(&cp);
    assert_eq!(
        viewer.sign_in("vic@acme.example", &password).await.status,
        303
    );
    let relays = viewer.get("/relays").await;
    assert!(relays.body.contains("north-site"));
    assert!(
        !relays.body.contains("Add a relay</button>"),
        "a viewer sees the button"
    );
    assert!(!relays.body.contains("Connect a system"));
    // Its own valid CSRF token does not make the write allowed.
    let csrf = hidden(&relays.body, "csrf");
    let forged = viewer
        .post(
            "/relays/enroll",
            &[("csrf", &csrf), ("group_id", &group_id)],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(!forged.body.contains("dibop-agent enroll"));
    let forged = viewer
        .post("/relays/agents/agt_any/revoke", &[("csrf", &csrf)])
        .await;
    assert_eq!(forged.status, 403, "a viewer may revoke agents");

    let password = user(&cp, "ada@acme.example", "enterprise_admin").await;
    let mut admin = Browser::new(&cp);
    assert_eq!(
        admin.sign_in("ada@acme.example", &password).await.status,
        303
    );
    let relays = admin.get("/relays").await;
    assert!(relays.body.contains("Add a relay</button>"));
    // Without the CSRF token nothing is issued.
    let refused = admin
        .post("/relays/enroll", &[("group_id", &group_id)])
        .await;
    assert_eq!(refused.status, 403);
    let csrf = hidden(&relays.body, "csrf");
    let issued = admin
        .post(
            "/relays/enroll",
            &[("csrf", &csrf), ("group_id", &group_id)],
        )
        .await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    assert!(
        issued.body.contains("dibop-agent enroll &#39;")
            || issued.body.contains("dibop-agent enroll '")
    );
    assert!(issued.body.contains("Enrollment token created"));
    // One token issued, audited; the refused posts issued none.
    let (_, audit) = cp.get("/audit?action=enrollment_token.create").await;
    assert_eq!(audit.as_array().map(Vec::len), Some(1), "{audit}");
    // Another tenant's group does not exist here.
    let (_, other) = cp.tenant("globex").await;
    let (_, theirs) = cp
        .post_as(&other, "/agent-groups", json!({"name": "theirs"}))
        .await;
    let missing = admin
        .post(
            "/relays/enroll",
            &[
                ("csrf", &csrf),
                ("group_id", theirs["id"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(missing.status, 404);
    let missing = admin
        .post("/relays/agents/agt_nobody/revoke", &[("csrf", &csrf)])
        .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn what_users_typed_is_shown_as_text() {
    let cp = TestCp::start().await;
    let xss = "<img src=x onerror=alert(1)>";
    let (status, group) = cp.post("/agent-groups", json!({"name": xss})).await;
    assert_eq!(status, 201, "{group}");
    let password = user(&cp, "ada@acme.example", "enterprise_admin").await;
    let mut b = Browser::new(&cp);
    b.sign_in("ada@acme.example", &password).await;
    let relays = b.get("/relays").await;
    assert!(
        !relays.body.contains(xss),
        "the name reached the page unescaped"
    );
    assert!(
        relays.body.contains("&#60;img src=x onerror=alert(1)&#62;"),
        "{}",
        relays.body
    );
    // A search that is markup stays text too.
    let search = b
        .get("/integrations?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        .await;
    assert_eq!(search.status, 200);
    assert!(!search.body.contains("<script>alert(1)"));
    // A malformed query string fails nothing.
    assert_eq!(b.get("/integrations?category=%ZZ&&=").await.status, 200);
}

#[tokio::test]
async fn a_session_left_idle_for_30_minutes_ends() {
    let cp = TestCp::start().await;
    let password = user(&cp, "ada@acme.example", "enterprise_admin").await;
    let mut b = Browser::new(&cp);
    assert_eq!(b.sign_in("ada@acme.example", &password).await.status, 303);
    assert_eq!(b.get("/").await.status, 200);
    let secret = b.cookies["dibop_session"].clone();
    let hash = dibop_control_plane::support::ids::hash_secret(&secret);
    let session = cp
        .core
        .store
        .api_token_by_hash(&hash)
        .await
        .unwrap()
        .unwrap();
    // Last used 31 minutes ago; forgotten by the token cache, as after 10 s.
    let idle = dibop_control_plane::store::now_unix() - 31 * 60;
    cp.core
        .store
        .touch_api_token(&session.id, idle)
        .await
        .unwrap();
    cp.core.tokens.forget(&session.id);
    let page = b.get("/").await;
    assert_eq!(page.status, 303, "an idle session still opens the console");
    let (status, answer) = cp.get_as(&secret, "/connections").await;
    assert_eq!(
        status, 401,
        "an idle session still works on the API: {answer}"
    );
}

/// The fields of Connect a System for the simulator's API key scheme.
fn setup_form<'a>(
    csrf: &'a str,
    sim: &'a str,
    key: &'a str,
    intent: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("auth_type", "api_key"),
        ("name", "Showroom DMS"),
        ("cred.api_key", key),
        ("base_url", sim),
        ("timeout_s", "30"),
        ("retry", "on"),
        ("max_retries", "3"),
        ("log_level", "info"),
        ("log_payloads", "failures"),
        ("mode", "cloud"),
        ("intent", intent),
    ]
}

#[tokio::test]
async fn connecting_a_system_tests_saves_and_manages_it() {
    let cp = TestCp::start().await;
    let sim = spawn_dms_sim().await;
    let connector = cp.dms_sim_connector().await;
    let password = user(&cp, "ada@acme.example", "enterprise_admin").await;
    let mut b = Browser::new(&cp);
    b.sign_in("ada@acme.example", &password).await;

    // The form, pre-filled from the connector with the guide's defaults.
    let detail = b.get(&format!("/integrations/{connector}")).await;
    assert!(
        detail
            .body
            .contains(&format!("/integrations/{connector}/connect"))
    );
    let connect = format!("/integrations/{connector}/connect");
    let form = b.get(&connect).await;
    assert_eq!(form.status, 200, "{}", form.body);
    for wanted in [
        "Test Connection",
        "Save &amp; Activate",
        r#"type="password" id="cred-api_key" name="cred.api_key""#,
        r#"name="timeout_s" value="30""#,
        r#"name="max_retries" value="3""#,
        "X-API-Key",
        "Relay options",
    ] {
        assert!(form.body.contains(wanted), "the form lacks {wanted}");
    }
    // Another scheme's fields on request.
    let basic = b.get(&format!("{connect}?auth=basic")).await;
    assert!(basic.body.contains(r#"name="cred.username""#));
    assert!(basic.body.contains(r#"type="password" id="cred-password""#));
    let csrf = hidden(&form.body, "csrf");

    // A wrong key: Auth Failure in red, the key never on the page.
    let wrong = b
        .post(&connect, &setup_form(&csrf, &sim, "wrong-key-4711", "test"))
        .await;
    assert_eq!(wrong.status, 200, "{}", wrong.body);
    assert!(wrong.body.contains("Auth Failure"), "{}", wrong.body);
    assert!(wrong.body.contains("alert-error"));
    assert!(
        !wrong.body.contains("wrong-key-4711"),
        "a secret was rendered back"
    );
    // The script's background test answers the result region only.
    let fragment = b
        .post_partial(&connect, &setup_form(&csrf, &sim, "dms-demo-key", "test"))
        .await;
    assert_eq!(fragment.status, 200);
    assert!(
        fragment
            .body
            .contains("data-toast=\"Connection test succeeded.\""),
        "{}",
        fragment.body
    );
    assert!(!fragment.body.contains("<html"), "a whole page came back");
    // A network error names itself.
    let unreachable = b
        .post_partial(
            &connect,
            &setup_form(&csrf, "http://127.0.0.1:9", "dms-demo-key", "test"),
        )
        .await;
    assert!(
        unreachable.body.contains("Network Error"),
        "{}",
        unreachable.body
    );
    // Testing stored nothing; neither did a form without its CSRF token.
    let mut no_csrf = setup_form("", &sim, "dms-demo-key", "activate");
    no_csrf.retain(|(k, _)| *k != "csrf");
    assert_eq!(b.post(&connect, &no_csrf).await.status, 403);
    assert_eq!(cp.get("/connections").await.1, json!([]));

    // Bad fields: each named inline, nothing saved.
    let mut bad = setup_form(&csrf, &sim, "", "activate");
    bad.retain(|(k, _)| !matches!(*k, "timeout_s" | "name"));
    bad.push(("timeout_s", "forever"));
    bad.push(("name", ""));
    let refused = b.post(&connect, &bad).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("must be a whole number of seconds"));
    assert!(refused.body.contains("fix the fields marked in red"));
    assert_eq!(cp.get("/connections").await.1, json!([]));

    // Save & Activate: on My Connections, active and healthy.
    let saved = b
        .post(
            &connect,
            &setup_form(&csrf, &sim, "dms-demo-key", "activate"),
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert_eq!(
        saved.location.as_deref(),
        Some("/connections?done=connection_activated")
    );
    let (_, list) = cp.get("/connections").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let c = &list[0];
    assert_eq!(
        (c["status"].as_str(), c["health"].as_str()),
        (Some("active"), Some("healthy"))
    );
    assert_eq!(c["settings"]["timeout_ms"], 30_000);
    assert_eq!(c["settings"]["max_retries"], 3);
    let id = c["id"].as_str().unwrap().to_owned();
    let mine = b.get("/connections?done=connection_activated").await;
    assert!(mine.body.contains("Showroom DMS"));
    assert!(mine.body.contains("Connection active"));
    assert!(
        mine.body
            .contains(r#"<span class="badge ok">healthy</span>"#)
    );

    // Its page: settings, credentials (the secret only as set), health, calls.
    let page = b.get(&format!("/connections/{id}")).await;
    assert_eq!(page.status, 200);
    for wanted in [
        "Health history",
        "Recent API calls",
        "set (hidden)",
        "Rotate credentials",
        "listVehicles",
    ] {
        assert!(page.body.contains(wanted), "the page lacks {wanted}");
    }
    assert!(!page.body.contains("dms-demo-key"));

    // Test with the saved credentials.
    let tested = b
        .post(&format!("/connections/{id}/test"), &[("csrf", &csrf)])
        .await;
    assert!(tested.body.contains("Connection test succeeded."));

    // Edit settings: a bad value refused inline, a good one saved.
    let settings = |timeout: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("csrf", csrf.clone()),
            ("name", "Showroom DMS".to_owned()),
            ("base_url", sim.clone()),
            ("timeout_s", timeout.to_owned()),
            ("max_retries", "2".to_owned()),
            ("log_level", "debug".to_owned()),
            ("mode", "cloud".to_owned()),
        ]
    };
    let zero = settings("0");
    let zero: Vec<(&str, &str)> = zero.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = b.post(&format!("/connections/{id}/settings"), &zero).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains("must be a whole number of seconds"));
    let twenty = settings("20");
    let twenty: Vec<(&str, &str)> = twenty.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let saved = b
        .post(&format!("/connections/{id}/settings"), &twenty)
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let (_, c) = cp.get(format!("/connections/{id}")).await;
    assert_eq!(c["settings"]["timeout_ms"], 20_000);
    assert_eq!(c["settings"]["log_level"], "debug");

    // Rotate credentials: a missing field refused, then replaced and audited.
    let missing = b
        .post(
            &format!("/connections/{id}/credentials"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(missing.status, 422);
    assert!(missing.body.contains("is required"), "{}", missing.body);
    let rotated = b
        .post(
            &format!("/connections/{id}/credentials"),
            &[("csrf", &csrf), ("cred.api_key", "dms-demo-key")],
        )
        .await;
    assert_eq!(rotated.status, 303, "{}", rotated.body);
    let (_, audit) = cp.get("/audit?action=connection.rotate_credentials").await;
    assert_eq!(audit.as_array().map(Vec::len), Some(1), "{audit}");

    // Deactivate and reactivate.
    let off = b
        .post(&format!("/connections/{id}/deactivate"), &[("csrf", &csrf)])
        .await;
    assert_eq!(off.status, 303);
    assert_eq!(
        cp.get(format!("/connections/{id}")).await.1["status"],
        "inactive"
    );
    let off_page = b
        .get(&format!("/connections/{id}?done=connection_deactivated"))
        .await;
    assert!(off_page.body.contains("Reactivate"));
    let on = b
        .post(&format!("/connections/{id}/activate"), &[("csrf", &csrf)])
        .await;
    assert_eq!(on.status, 303);
    assert_eq!(
        cp.get(format!("/connections/{id}")).await.1["status"],
        "active"
    );

    // A viewer sees it without write controls and cannot forge them.
    let viewer_password = user(&cp, "vic@acme.example", "viewer").await;
    let mut viewer = Browser::new(&cp);
    viewer.sign_in("vic@acme.example", &viewer_password).await;
    let seen = viewer.get(&format!("/connections/{id}")).await;
    assert_eq!(seen.status, 200);
    for control in [
        "Deactivate</button>",
        "Save settings",
        "Replace credentials",
        "Delete</button>",
    ] {
        assert!(!seen.body.contains(control), "a viewer sees {control}");
    }
    let viewer_csrf = hidden(&seen.body, "csrf");
    for action in ["deactivate", "delete"] {
        let forged = viewer
            .post(
                &format!("/connections/{id}/{action}"),
                &[("csrf", &viewer_csrf)],
            )
            .await;
        assert_eq!(forged.status, 403, "a viewer may {action}");
    }
    assert_eq!(viewer.get(&connect).await.status, 403);

    // Another tenant's connection does not exist here.
    let (_, other) = cp.tenant("globex").await;
    let (_, theirs) = cp
        .post_as(
            &other,
            "/connections",
            json!({"connector_id": connector, "name": "theirs", "auth_type": "api_key",
                   "credentials": {"api_key": "k"}, "base_url": sim}),
        )
        .await;
    let theirs = theirs["id"].as_str().unwrap();
    assert_eq!(b.get(&format!("/connections/{theirs}")).await.status, 404);
    assert_eq!(
        b.post(&format!("/connections/{theirs}/delete"), &[("csrf", &csrf)])
            .await
            .status,
        404
    );

    // Delete: gone, with its credentials.
    let deleted = b
        .post(&format!("/connections/{id}/delete"), &[("csrf", &csrf)])
        .await;
    assert_eq!(deleted.status, 303);
    assert_eq!(
        deleted.location.as_deref(),
        Some("/connections?done=connection_deleted")
    );
    assert_eq!(cp.get(format!("/connections/{id}")).await.0, 404);
}

/// The text of `<pre id="shown-secret">`: a secret the page shows once.
fn shown_secret(body: &str) -> String {
    let marker = r#"<pre id="shown-secret">"#;
    let at = body
        .find(marker)
        .unwrap_or_else(|| panic!("no secret shown in {body}"))
        + marker.len();
    body[at..at + body[at..].find('<').unwrap()].to_owned()
}

#[tokio::test]
async fn admins_manage_users_and_tokens() {
    let cp = TestCp::start().await;
    let password = user(&cp, "ada@acme.example", "enterprise_admin").await;
    let mut b = Browser::new(&cp);
    b.sign_in("ada@acme.example", &password).await;
    let page = b.get("/settings/users").await;
    assert!(page.body.contains("Add a user"));
    assert!(page.body.contains("Create an API token"));
    let csrf = hidden(&page.body, "csrf");

    // A bad email is named; a user added without a password gets one, once.
    let bad = b
        .post(
            "/settings/users",
            &[
                ("csrf", &csrf),
                ("email", "not-an-email"),
                ("role", "operator"),
                ("password", ""),
            ],
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains("error-text"));
    assert!(
        bad.body.contains(r#"value="not-an-email""#),
        "what was typed is kept"
    );
    let added = b
        .post(
            "/settings/users",
            &[
                ("csrf", &csrf),
                ("email", "olli@acme.example"),
                ("role", "operator"),
                ("password", ""),
            ],
        )
        .await;
    assert_eq!(added.status, 200, "{}", added.body);
    let generated = shown_secret(&added.body);
    assert!(generated.len() >= 40);
    let mut olli = Browser::new(&cp);
    assert_eq!(
        olli.sign_in("olli@acme.example", &generated).await.status,
        303
    );
    assert_eq!(olli.get("/connections").await.status, 200);
    // The password is not on the page again.
    assert!(!b.get("/settings/users").await.body.contains(&generated));

    let (_, users) = cp.get("/users").await;
    let id = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "olli@acme.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let change = |action: &'static str, value: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("action", action.to_owned()),
            ("value", value.to_owned()),
        ]
    };
    for (action, value) in [("role", "viewer"), ("pii", "withheld")] {
        let form = change(action, value);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let done = b.post(&format!("/settings/users/{id}"), &form).await;
        assert_eq!(done.status, 303, "{action}: {}", done.body);
    }
    let (_, u) = cp.get("/users").await;
    let u = u
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (u["role"].as_str(), u["view_pii"].as_bool()),
        (Some("viewer"), Some(false))
    );
    // Disabling signs them out at once.
    let form = change("disable", "");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        b.post(&format!("/settings/users/{id}"), &form).await.status,
        303
    );
    let after = olli.get("/connections").await;
    assert_eq!(after.status, 303, "a disabled user's session still works");
    // An admin cannot lock themselves out.
    let (_, me) = cp.get("/users").await;
    let me = me
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "ada@acme.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = b.post(&format!("/settings/users/{me}"), &form).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("cannot disable yourself"));

    // A token: shown once, works, revoked, refused.
    let created = b
        .post(
            "/settings/tokens",
            &[
                ("csrf", &csrf),
                ("name", "DMS sync"),
                ("role", "viewer"),
                ("expires", "30d"),
                ("pii", "default"),
            ],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let token = shown_secret(&created.body);
    assert!(token.starts_with("dibop_"));
    assert_eq!(cp.get_as(&token, "/agents").await.0, 200);
    let (_, tokens) = cp.get("/api-tokens").await;
    let t = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "DMS sync")
        .unwrap()
        .clone();
    assert!(t["expires_at"].is_string());
    let revoked = b
        .post(
            &format!("/settings/tokens/{}/revoke", t["id"].as_str().unwrap()),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(revoked.status, 303);
    assert_eq!(cp.get_as(&token, "/agents").await.0, 401);
    let empty = b
        .post(
            "/settings/tokens",
            &[("csrf", &csrf), ("name", ""), ("role", "viewer")],
        )
        .await;
    assert_eq!(empty.status, 422);

    // The audit log has it all, filtered by resource, action, actor and time.
    let tokens = b.get("/audit?resource=api_token").await;
    assert!(tokens.body.contains("<td>api_token.create</td>"));
    assert!(tokens.body.contains("<td>api_token.revoke</td>"));
    assert!(!tokens.body.contains("<td>user.update</td>"));
    let updates = b.get("/audit?action=user.update&window=1h").await;
    assert_eq!(
        updates.body.matches("<td>user.update</td>").count(),
        3,
        "{}",
        updates.body
    );
    let nobody = b.get("/audit?actor=token%3Atok_nobody").await;
    assert!(nobody.body.contains("No entry matches these filters"));

    // A viewer can do none of it.
    let viewer_password = user(&cp, "vic@acme.example", "viewer").await;
    let mut viewer = Browser::new(&cp);
    viewer.sign_in("vic@acme.example", &viewer_password).await;
    let seen = viewer.get("/settings/users").await;
    assert!(!seen.body.contains("Add a user"));
    assert!(!seen.body.contains("Disable</button>"));
    let viewer_csrf = hidden(&seen.body, "csrf");
    let forged = viewer
        .post(
            "/settings/tokens",
            &[
                ("csrf", &viewer_csrf),
                ("name", "x"),
                ("role", "enterprise_admin"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
    let forged = viewer
        .post(
            &format!("/settings/users/{me}"),
            &[
                ("csrf", &viewer_csrf),
                ("action", "role"),
                ("value", "viewer"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
}

#[tokio::test]
async fn platform_admins_run_the_catalogue_and_connect_nothing() {
    let cp = TestCp::start().await;
    let platform = cp.platform_admin().await;
    let password = "a long enough password";
    let (status, u) = cp
        .post_as(
            &platform,
            "/users",
            json!({"email": "root@platform.example", "password": password, "role": "platform_admin"}),
        )
        .await;
    assert_eq!(status, 201, "{u}");
    let mut b = Browser::new(&cp);
    assert_eq!(
        b.sign_in("root@platform.example", password).await.status,
        303
    );
    let connector = cp.dms_sim_connector().await;
    let detail = b.get(&format!("/integrations/{connector}")).await;
    assert_eq!(detail.status, 200);
    assert!(
        !detail.body.contains("/connect\""),
        "a platform admin is offered Connect"
    );
    let form = b.get(&format!("/integrations/{connector}/connect")).await;
    assert_eq!(form.status, 403);
    assert!(form.body.contains("enterprises connect their systems"));
    let csrf = hidden(&b.get("/integrations").await.body, "csrf");
    let posted = b
        .post(
            &format!("/integrations/{connector}/connect"),
            &[("csrf", &csrf), ("name", "x"), ("intent", "activate")],
        )
        .await;
    assert_eq!(posted.status, 403);
    // The sidebar is the platform's: no tenant pages.
    let home = b.get("/integrations").await;
    assert!(home.body.contains("PLATFORM CONFIG"));
    assert!(!home.body.contains("My Connections"));
}

//! The web console over real HTTP: sign-in and sign-out, sessions in
//! cookies, CSRF, the security headers, roles, and escaping of what users
//! typed. (The flows in a real browser are the Chromium tests.)

use std::collections::HashMap;

use dibop_control_plane::testing::TestCp;
use serde_json::json;

/// A browser without script: follows nothing by itself, keeps cookies.
struct Browser {
    base: String,
    client: reqwest::Client,
    cookies: HashMap<String, String>,
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

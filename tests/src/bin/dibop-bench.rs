//! `dibop-bench`: relayed calls through the control plane and one agent
//! versus the same calls made directly to the DMS simulator, from the same
//! client on the same machine; or (`--scenario catalogue`) the connector
//! catalogue: OpenAPI imports, publishing, and catalogue search over many
//! published connectors; or (`--scenario executions`) durable executions of
//! a three-step orchestration on SQLite and PostgreSQL; or (`--scenario
//! cdm`) a 100-vehicle page mapped onto the CDM in an orchestration against
//! the same fetch without the mapping. Prints JSON.
//!
//! Run with release binaries: `scripts/bench` (builds them, then runs this).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use dibop_e2e::harness::{Agent, ControlPlane, Dms, READY, bin, eventually, rss_kib};
use serde_json::{Value, json};

/// Relay benchmark.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// `relay` (relayed vs direct calls), `catalogue` or `executions` (the orchestration
    /// engine on SQLite, and on PostgreSQL when DIBOP_TEST_POSTGRES_URL is set).
    #[arg(long, default_value = "relay")]
    scenario: String,
    /// Connections seeded before the console's pages are measured.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Executions seeded before the console's pages are measured.
    #[arg(long, default_value_t = 10_000)]
    executions: usize,
    /// Connectors published before the catalogue search is measured.
    #[arg(long, default_value_t = 300)]
    connectors: usize,
    /// Seconds of measurement per scenario (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    /// The relay scenario's tunnel: `quic` or `wss` (TLS and a WebSocket over TCP).
    #[arg(long, default_value = "quic")]
    transport: String,
}

#[derive(Debug, Clone)]
enum Target {
    Direct {
        url: String,
    },
    Relayed {
        url: String,
        token: String,
        body: Value,
    },
    Api {
        url: String,
        token: String,
    },
    /// A console page, with a session cookie.
    Page {
        url: String,
        cookie: String,
    },
}

async fn one_call(client: &reqwest::Client, target: &Target) -> anyhow::Result<()> {
    let response = match target {
        Target::Direct { url } => {
            client
                .get(url)
                .header("X-API-Key", "dms-demo-key")
                .send()
                .await?
        }
        Target::Relayed { url, token, body } => {
            client
                .post(url)
                .bearer_auth(token)
                .json(body)
                .send()
                .await?
        }
        Target::Api { url, token } => client.get(url).bearer_auth(token).send().await?,
        Target::Page { url, cookie } => client.get(url).header("cookie", cookie).send().await?,
    };
    let status = response.status();
    let bytes = response.bytes().await?;
    anyhow::ensure!(status.is_success(), "status {status}");
    if matches!(target, Target::Relayed { .. }) {
        let v: Value = serde_json::from_slice(&bytes)?;
        anyhow::ensure!(v["ok"] == true, "relayed call failed: {v}");
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

async fn measure(target: &Target, concurrency: usize, seconds: u64) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .build()?;
    let run = |duration: Duration| {
        let client = client.clone();
        let target = target.clone();
        async move {
            let deadline = Instant::now() + duration;
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, target) = (client.clone(), target.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut errors = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match one_call(&client, &target).await {
                            Ok(()) => lat.push(t.elapsed()),
                            Err(_) => errors += 1,
                        }
                    }
                    (lat, errors)
                }));
            }
            let mut all = Vec::new();
            let mut errors = 0;
            for t in tasks {
                let (l, e) = t.await.unwrap_or_default();
                all.extend(l);
                errors += e;
            }
            (all, errors)
        }
    };
    run(Duration::from_secs(1)).await;
    let started = Instant::now();
    let (mut lat, errors) = run(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    Ok(json!({
        "concurrency": concurrency,
        "calls": lat.len(),
        "errors": errors,
        "calls_per_s": (lat.len() as f64 / elapsed).round(),
        "p50_ms": (percentile(&lat, 0.50) * 1000.0).round() / 1000.0,
        "p99_ms": (percentile(&lat, 0.99) * 1000.0).round() / 1000.0,
    }))
}

/// Milliseconds at the 50th and 99th percentile of `samples`.
fn summary(mut samples: Vec<Duration>) -> Value {
    samples.sort();
    json!({
        "n": samples.len(),
        "p50_ms": (percentile(&samples, 0.50) * 100.0).round() / 100.0,
        "p99_ms": (percentile(&samples, 0.99) * 100.0).round() / 100.0,
    })
}

/// Imports, publishing and search in the connector catalogue.
async fn catalogue(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cp = ControlPlane::start(&dir.path().join("cp")).await?;
    let api = cp.tenant("bench").await?;
    let client = reqwest::Client::new();
    let examples = std::env::var("DIBOP_OAS_EXAMPLES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/test-deps/node_modules/@readme/oas-examples")
        });
    let mut imports = serde_json::Map::new();
    for (name, file) in [
        ("petstore_3_0", "3.0/json/petstore.json"),
        ("star_trek_500kb", "3.0/json/star-trek.json"),
    ] {
        let text = std::fs::read_to_string(examples.join(file)).with_context(|| {
            format!(
                "{} (run scripts/test once: it installs @readme/oas-examples)",
                examples.join(file).display()
            )
        })?;
        let mut samples = Vec::new();
        for i in 0..20 {
            let t = Instant::now();
            let resp = client
                .post(format!(
                    "{}/api/v1/connectors/import?slug={}-{i}&base_url=https://api.example.com",
                    cp.http,
                    name.replace('_', "-")
                ))
                .bearer_auth(api.token())
                .header("content-type", "application/json")
                .body(text.clone())
                .send()
                .await?;
            anyhow::ensure!(
                resp.status() == 201,
                "import failed: {}",
                resp.text().await?
            );
            resp.bytes().await?;
            samples.push(t.elapsed());
        }
        let mut s = summary(samples);
        s["document_bytes"] = json!(text.len());
        imports.insert(name.into(), s);
    }
    let definition = include_str!("../../../catalogue/dms-sim.yaml");
    let (mut creates, mut publishes) = (Vec::new(), Vec::new());
    for i in 0..args.connectors {
        let body = definition.replace("slug: dms-sim", &format!("slug: bench-dms-{i}"));
        let t = Instant::now();
        let created: Value = client
            .post(format!("{}/api/v1/connectors", cp.http))
            .bearer_auth(api.token())
            .header("content-type", "application/yaml")
            .body(body)
            .send()
            .await?
            .json()
            .await?;
        creates.push(t.elapsed());
        let id = created["id"].as_str().context("create failed")?;
        let t = Instant::now();
        let resp = client
            .post(format!("{}/api/v1/connectors/{id}/publish", cp.http))
            .bearer_auth(api.token())
            .json(&json!({"scope": "enterprise"}))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status() == 200,
            "publish failed: {}",
            resp.text().await?
        );
        publishes.push(t.elapsed());
    }
    let mut searches = Vec::new();
    for (name, query) in [
        ("text_search", "?q=vehicles&limit=50"),
        ("first_page_100", "?limit=100"),
        ("by_auth_type", "?auth_type=basic&limit=20"),
    ] {
        let target = Target::Api {
            url: format!("{}/api/v1/catalogue{query}", cp.http),
            token: api.token().to_owned(),
        };
        let mut m = measure(&target, 16, args.seconds).await?;
        m["query"] = json!(name);
        searches.push(m);
    }
    let report = json!({
        "benchmark": "connector catalogue",
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "import_openapi": imports,
        "create_draft": summary(creates),
        "publish_enterprise_1_0_0": summary(publishes),
        "published_connectors": args.connectors + 4,
        "catalogue_get_c16": searches,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

const BENCH_ORCHESTRATION: &str = r#"
format: dibop.orchestration/v1
name: bench
steps:
  - id: list
    type: call
    connection: DMS
    operation: listVehicles
    parameters: { page_size: 1 }
  - id: price
    type: transform
    expression: .steps.list.response.items[0].priceEur
  - id: route
    type: branch
    if: .steps.price > 20000
    then: [{ id: dear, type: set, values: { band: high } }]
    else: [{ id: cheap, type: set, values: { band: low } }]
"#;

/// A page of 100 DMS vehicles fetched, then (second variant) mapped onto
/// the CDM and validated: what the mapping costs per record.
const CDM_FETCH: &str = r#"
format: dibop.orchestration/v1
name: fetch
steps:
  - { id: list, type: call, connection: DMS, operation: listVehicles, parameters: { page_size: 100 } }
  - { id: n, type: transform, expression: .steps.list.response.items | length }
"#;
const CDM_MAP: &str = r#"
format: dibop.orchestration/v1
name: fetch-and-map
steps:
  - { id: list, type: call, connection: DMS, operation: listVehicles, parameters: { page_size: 100 } }
  - { id: cdm, type: map_to_cdm, connection: DMS, operation: listVehicles, from: .steps.list.response, on_invalid: fail }
  - { id: n, type: transform, expression: .steps.cdm.count }
"#;

/// Executions of a three-step orchestration (a call through an agent to the
/// DMS simulator, a transform, a branch) with durable records.
async fn executions(args: &Args) -> anyhow::Result<()> {
    let postgres = dibop_e2e::harness::fresh_postgres_database();
    let results = run_orchestrations(
        args,
        &[("3-step", BENCH_ORCHESTRATION)],
        &[("sqlite", None), ("postgres", postgres.clone())],
    )
    .await?;
    if let Some(url) = postgres {
        dibop_e2e::harness::drop_postgres_database(&url);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "benchmark": "executions of a 3-step orchestration (call via agent, transform, branch), durable records",
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "seconds": args.seconds,
            "results": results,
        }))?
    );
    Ok(())
}

/// Mapping a page of 100 vehicles onto the CDM inside an orchestration,
/// against the same fetch without the mapping.
async fn cdm(args: &Args) -> anyhow::Result<()> {
    let results = run_orchestrations(
        args,
        &[
            ("fetch 100 vehicles", CDM_FETCH),
            ("fetch + map_to_cdm 100 vehicles", CDM_MAP),
        ],
        &[("sqlite", None)],
    )
    .await?;
    let rate = |i: usize| results[i]["executions_per_s"].as_f64().unwrap_or(0.0);
    let p50 = |i: usize| results[i]["p50_ms"].as_f64().unwrap_or(0.0);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "benchmark": "map_to_cdm of a 100-vehicle DMS page (validated), in an orchestration via an agent",
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "seconds": args.seconds,
            "results": results,
            "records_mapped_per_s": (rate(1) * 100.0).round(),
            "mapping_p50_ms_per_page": ((p50(1) - p50(0)) * 100.0).round() / 100.0,
        }))?
    );
    Ok(())
}

/// Runs each orchestration at concurrency 16 on each backend.
async fn run_orchestrations(
    args: &Args,
    orchestrations: &[(&str, &str)],
    backends: &[(&str, Option<String>)],
) -> anyhow::Result<Vec<Value>> {
    let mut results = Vec::new();
    for (backend, url) in backends.iter().cloned() {
        if backend == "postgres" && url.is_none() {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;
        let extra: Vec<&str> = match &url {
            Some(u) => vec!["--database-url", u.as_str()],
            None => vec![],
        };
        let cp = ControlPlane::start_with(&dir.path().join("cp"), any, any, &extra).await?;
        let api = cp.tenant("bench").await?;
        let group = api.create_group("bench-site").await?;
        let dms = Dms::start().await?;
        let token = api.enrollment_token(&group, None).await?;
        let agent =
            Agent::enroll_and_start(dir.path(), "agent", &token, &[dms.addr.to_string()]).await?;
        api.wait_online(&agent.id).await?;
        let (_, catalogue) = api.send("GET", "/catalogue?q=dms-sim", None).await?;
        let (status, c) = api
            .send(
                "POST",
                "/connections",
                Some(json!({"connector_id": catalogue[0]["id"], "name": "DMS", "auth_type": "api_key",
                    "credentials": {"api_key": "dms-demo-key"}, "base_url": dms.url,
                    "execution_mode": "agent_group", "agent_group_id": group, "activate": true})),
            )
            .await?;
        anyhow::ensure!(status == 201, "connection: {c}");
        for (label, orchestration) in orchestrations {
            let created: Value = reqwest::Client::new()
                .post(format!("{}/api/v1/orchestrations", cp.http))
                .bearer_auth(api.token())
                .header("content-type", "application/yaml")
                .body(orchestration.to_string())
                .send()
                .await?
                .json()
                .await?;
            let id = created["id"]
                .as_str()
                .context("orchestration not created")?
                .to_owned();
            let url = format!("{}/api/v1/orchestrations/{id}/execute", cp.http);
            let token = api.token().to_owned();
            let client = reqwest::Client::new();
            let one = |client: reqwest::Client, url: String, token: String| async move {
                let v: Value = client
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"wait_ms": 60000}))
                    .send()
                    .await?
                    .json()
                    .await?;
                anyhow::ensure!(
                    v["status"] == "succeeded",
                    "execution ended {}",
                    v["status"]
                );
                anyhow::Ok(())
            };
            for _ in 0..20 {
                one(client.clone(), url.clone(), token.clone()).await?;
            }
            let deadline = Instant::now() + Duration::from_secs(args.seconds);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..16 {
                let (client, url, token) = (client.clone(), url.clone(), token.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut errors = 0u64;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match one(client.clone(), url.clone(), token.clone()).await {
                            Ok(()) => lat.push(t.elapsed()),
                            Err(_) => errors += 1,
                        }
                    }
                    (lat, errors)
                }));
            }
            let mut lat = Vec::new();
            let mut errors = 0;
            for t in tasks {
                let (l, e) = t.await?;
                lat.extend(l);
                errors += e;
            }
            let elapsed = started.elapsed().as_secs_f64();
            let n = lat.len();
            let mut s = summary(lat);
            s["backend"] = json!(backend);
            s["executions_per_s"] = json!((n as f64 / elapsed * 10.0).round() / 10.0);
            s["errors"] = json!(errors);
            s["concurrency"] = json!(16);
            s["orchestration"] = json!(label);
            results.push(s);
        }
    }
    Ok(results)
}

/// Server render time of the console's pages over a full store (by default
/// 1,000 connections and 10,000 executions), 16 signed-in clients per page.
async fn console(args: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cp = ControlPlane::start(&dir.path().join("cp")).await?;
    let api = cp.tenant("bench").await?;
    let dms = Dms::start().await?;
    let (_, catalogue) = api.send("GET", "/catalogue?q=dms-sim", None).await?;
    let connector = catalogue[0]["id"].clone();
    let t = Instant::now();
    let mut first_connection = String::new();
    for i in 0..args.connections {
        let (status, c) = api
            .send(
                "POST",
                "/connections",
                Some(
                    json!({"connector_id": connector, "name": format!("DMS {i}"),
                    "auth_type": "api_key", "credentials": {"api_key": "dms-demo-key"},
                    "base_url": dms.url}),
                ),
            )
            .await?;
        anyhow::ensure!(status == 201, "connection: {c}");
        if first_connection.is_empty() {
            first_connection = c["id"].as_str().unwrap_or_default().to_owned();
        }
    }
    let seed_connections = t.elapsed();
    let id = api
        .create_orchestration(
            "format: dibop.orchestration/v1\nname: tick\nsteps:\n  - { id: one, type: set, values: { n: 1 } }\n",
        )
        .await?;
    let t = Instant::now();
    let per_worker = args.executions.div_ceil(16);
    let mut workers = Vec::new();
    for w in 0..16 {
        let (url, token) = (
            format!("{}/api/v1/orchestrations/{id}/execute", cp.http),
            api.token().to_owned(),
        );
        let n = per_worker.min(args.executions.saturating_sub(w * per_worker));
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for _ in 0..n {
                let v: Value = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"wait_ms": 60000}))
                    .send()
                    .await?
                    .json()
                    .await?;
                anyhow::ensure!(v["status"] == "succeeded", "execution: {v}");
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    let seed_executions = t.elapsed();
    // A person signed in through the form, as a browser does.
    let password = "a long enough bench password";
    let (status, u) = api
        .send(
            "POST",
            "/users",
            Some(json!({"email": "bench@bench.example", "password": password, "role": "enterprise_admin"})),
        )
        .await?;
    anyhow::ensure!(status == 201, "user: {u}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let form = client.get(format!("{}/sign-in", cp.http)).send().await?;
    let binding_cookie = form
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("no sign-in cookie")?
        .to_owned();
    let body = form.text().await?;
    let marker = "name=\"binding\" value=\"";
    let at = body.find(marker).context("no binding")? + marker.len();
    let binding = &body[at..at + body[at..].find('"').context("no binding")?];
    let signed_in = client
        .post(format!("{}/sign-in", cp.http))
        .header("cookie", &binding_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        // Only letters, digits, `-`, `_`, `@` and `.` here: no escaping needed.
        .body(format!(
            "email=bench%40bench.example&password={}&binding={binding}",
            password.replace(' ', "+")
        ))
        .send()
        .await?;
    let cookie = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("dibop_session="))
        .and_then(|v| v.split(';').next())
        .context("no session cookie")?
        .to_owned();
    let mut pages = Vec::new();
    let connector = connector.as_str().unwrap_or_default();
    for path in [
        "/".to_owned(),
        "/integrations".to_owned(),
        format!("/integrations/{connector}/connect"),
        "/connections".to_owned(),
        format!("/connections/{first_connection}"),
        "/relays".to_owned(),
        "/settings/users".to_owned(),
        "/settings/sso".to_owned(),
        "/audit".to_owned(),
    ] {
        let target = Target::Page {
            url: format!("{}{path}", cp.http),
            cookie: cookie.clone(),
        };
        let mut m = measure(&target, 16, args.seconds).await?;
        m["page"] = json!(
            path.replace(connector, "{connector}")
                .replace(&first_connection, "{id}")
        );
        pages.push(m);
    }
    let report = json!({
        "benchmark": "console pages, server render time",
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "connections": args.connections,
        "executions": args.executions,
        "seed_connections_s": seed_connections.as_secs_f64().round(),
        "seed_executions_s": seed_executions.as_secs_f64().round(),
        "pages_c16": pages,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dibop_runtime::install_crypto_provider();
    let args = Args::parse();
    match args.scenario.as_str() {
        "relay" => {}
        "catalogue" => return catalogue(&args).await,
        "executions" => return executions(&args).await,
        "cdm" => return cdm(&args).await,
        "console" => return console(&args).await,
        other => {
            anyhow::bail!("--scenario {other}: use relay, catalogue, executions, cdm or console")
        }
    }
    let dir = tempfile::tempdir()?;
    let cp = ControlPlane::start(&dir.path().join("cp")).await?;
    let api = cp.tenant("bench").await?;
    let group = api.create_group("bench-site").await?;
    let dms = Dms::start().await?;
    let token = api.enrollment_token(&group, None).await?;
    anyhow::ensure!(
        matches!(args.transport.as_str(), "quic" | "wss"),
        "--transport {}: use quic or wss",
        args.transport
    );
    let agent_dir = dir.path().join("agent");
    let (enrolled, text) = dibop_e2e::harness::enroll(&token, &agent_dir).await?;
    anyhow::ensure!(enrolled, "enroll failed: {text}");
    let agent = Agent::start_with(
        &agent_dir,
        &[dms.addr.to_string()],
        &format!("transport = \"{}\"", args.transport),
    )
    .await?;
    api.wait_online(&agent.id).await?;

    // Idle memory: the connected agent after a quiet moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_before = agent.pid().and_then(rss_kib);

    let path = "/api/v1/vehicles?page_size=10";
    let direct = Target::Direct {
        url: format!("{}{path}", dms.url),
    };
    let relayed = Target::Relayed {
        url: format!("{}/api/v1/agent-groups/{group}/calls", cp.http),
        token: api.token().to_owned(),
        body: json!({"method": "GET", "url": format!("{}{path}", dms.url), "headers": {"X-API-Key": "dms-demo-key"}}),
    };
    // The same call as a connection's operation: rendered, authenticated
    // from the vault, recorded in the call log.
    let (_, catalogue) = api.send("GET", "/catalogue?q=dms-sim", None).await?;
    let (status, connection) = api
        .send(
            "POST",
            "/connections",
            Some(
                json!({"connector_id": catalogue[0]["id"], "name": "bench", "auth_type": "api_key",
                "credentials": {"api_key": "dms-demo-key"}, "base_url": dms.url,
                "execution_mode": "agent_group", "agent_group_id": group, "activate": true}),
            ),
        )
        .await?;
    anyhow::ensure!(
        status == 201,
        "cannot create the bench connection: {connection}"
    );
    let invoked = Target::Relayed {
        url: format!(
            "{}/api/v1/connections/{}/operations/listVehicles/invoke",
            cp.http,
            connection["id"].as_str().unwrap_or_default()
        ),
        token: api.token().to_owned(),
        body: json!({"parameters": {"page_size": 10}}),
    };
    let client = reqwest::Client::new();
    one_call(&client, &relayed).await?;
    one_call(&client, &invoked).await?;
    let response_bytes = client
        .get(format!("{}{path}", dms.url))
        .header("X-API-Key", "dms-demo-key")
        .send()
        .await?
        .bytes()
        .await?
        .len();

    let mut scenarios = Vec::new();
    let mut summary = serde_json::Map::new();
    for &c in &args.concurrency {
        let d = measure(&direct, c, args.seconds).await?;
        let r = measure(&relayed, c, args.seconds).await?;
        let i = measure(&invoked, c, args.seconds).await?;
        let ratio = r["calls_per_s"].as_f64().unwrap_or(0.0)
            / d["calls_per_s"].as_f64().unwrap_or(1.0).max(1.0);
        let added_p50 = r["p50_ms"].as_f64().unwrap_or(0.0) - d["p50_ms"].as_f64().unwrap_or(0.0);
        summary.insert(
            format!("c{c}_relayed_over_direct_throughput"),
            json!((ratio * 1000.0).round() / 1000.0),
        );
        summary.insert(
            format!("c{c}_added_p50_ms"),
            json!((added_p50 * 1000.0).round() / 1000.0),
        );
        summary.insert(
            format!("c{c}_connection_over_relayed_throughput"),
            json!(
                (i["calls_per_s"].as_f64().unwrap_or(0.0)
                    / r["calls_per_s"].as_f64().unwrap_or(1.0).max(1.0)
                    * 1000.0)
                    .round()
                    / 1000.0
            ),
        );
        scenarios.push(json!({"direct": d, "relayed": r, "connection": i}));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_after = eventually("agent rss", READY, || async {
        agent.pid().and_then(rss_kib)
    })
    .await
    .ok();
    let agent_binary = std::fs::metadata(bin("dibop-agent"))
        .map(|m| m.len())
        .unwrap_or(0);
    let report = json!({
        "benchmark": "relayed vs direct GET to dms-sim",
        "transport": args.transport,
        "path": path,
        "response_bytes": response_bytes,
        "seconds_per_scenario": args.seconds,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "scenarios": scenarios,
        "summary": summary,
        "agent": {
            "idle_rss_mib_before_load": idle_rss_before.map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0),
            "idle_rss_mib_after_load": idle_rss_after.map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0),
            "binary_bytes": agent_binary,
            "binary_mib": (agent_binary as f64 / 1048576.0 * 10.0).round() / 10.0,
            "binary": bin("dibop-agent").display().to_string(),
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

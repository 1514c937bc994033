//! A dealer management system simulator: the on-premise system that relay
//! agents call in tests, benchmarks and `dibop dev`.
//!
//! A real HTTP server with a realistic dealer API under `/api/v1`: vehicles
//! (by VIN, with valid check digits), customers, workshop jobs (repair
//! orders), parts and appointments, all paginated
//! (`?page=1&page_size=50` → `{"items","page","page_size","total","next_page"}`
//! plus a `Link` header). Every `/api` route needs one of:
//! - `X-API-Key: <api_key>`;
//! - HTTP Basic `<basic_user>:<basic_password>`;
//! - `Authorization: Bearer <token>` from `POST /oauth/token`
//!   (`grant_type=client_credentials`, `password` (the Basic user) or
//!   `refresh_token`; client id and secret in the form or in Basic auth;
//!   tokens live one hour; refresh tokens are single-use and rotate;
//!   `POST /_sim/refresh-tokens` mints one, as an authorization code flow
//!   would);
//! - `X-Session-Key: <key>` from `POST /auth/session {"username","password"}`
//!   (the Basic user and password; `{"session": {"key"}}`, 15 minutes).
//!
//! Faults on demand, per request (header or query parameter):
//! `X-Sim-Delay-Ms` / `sim_delay_ms` (slow response), `X-Sim-Fault` /
//! `sim_fault` = `500`, `503`, `429` (with `Retry-After: 2`), `drop` (the
//! connection is closed without an answer), `slow-body` (headers at once,
//! body after the delay). Or for the next N requests of any caller:
//! `POST /_sim/faults {"fault":"500","delay_ms":0,"count":3}`.
//! `GET /_sim/stats` counts requests; `GET /health` is open.
//!
//! Creating a vehicle or an appointment honours `Idempotency-Key`: a repeat
//! with the same key answers the first response again (with
//! `Idempotent-Replayed: true`) and creates nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, RwLock};

/// Credentials the simulator accepts.
#[derive(Debug, Clone)]
pub struct SimAuth {
    /// Value of `X-API-Key`.
    pub api_key: String,
    /// Basic user.
    pub basic_user: String,
    /// Basic password.
    pub basic_password: String,
    /// OAuth2 client id.
    pub client_id: String,
    /// OAuth2 client secret.
    pub client_secret: String,
}

impl Default for SimAuth {
    fn default() -> Self {
        SimAuth {
            api_key: "dms-demo-key".into(),
            basic_user: "dealer".into(),
            basic_password: "dealer-pass".into(),
            client_id: "dibop-client".into(),
            client_secret: "dibop-secret".into(),
        }
    }
}

#[derive(Debug, Default)]
struct PendingFaults {
    fault: Option<String>,
    delay_ms: u64,
    count: u64,
}

#[derive(Debug)]
struct Sim {
    auth: SimAuth,
    data: RwLock<Data>,
    tokens: Mutex<HashMap<String, Instant>>,
    refresh_tokens: Mutex<std::collections::HashSet<String>>,
    faults: Mutex<PendingFaults>,
    requests: AtomicU64,
}

#[derive(Debug)]
struct Data {
    vehicles: Vec<Value>,
    customers: Vec<Value>,
    jobs: Vec<Value>,
    parts: Vec<Value>,
    appointments: Vec<Value>,
    /// Successful creations by idempotency key: (status, body).
    idempotent: HashMap<String, (StatusCode, Value)>,
}

/// The stored answer to a creation already made with this request's key.
fn replayed(data: &Data, headers: &axum::http::HeaderMap) -> Option<Response> {
    let key = headers.get("idempotency-key")?.to_str().ok()?;
    let (status, body) = data.idempotent.get(key)?;
    let mut r = (*status, Json(body.clone())).into_response();
    r.headers_mut().insert(
        "idempotent-replayed",
        axum::http::HeaderValue::from_static("true"),
    );
    Some(r)
}

/// Remembers a successful creation under the request's key, if any.
fn remember(data: &mut Data, headers: &axum::http::HeaderMap, status: StatusCode, body: &Value) {
    if let Some(key) = headers.get("idempotency-key").and_then(|k| k.to_str().ok()) {
        data.idempotent
            .insert(key.to_owned(), (status, body.clone()));
    }
}

const VIN_CHARS: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZ0123456789";

fn vin_value(c: u8) -> u32 {
    match c {
        b'0'..=b'9' => u32::from(c - b'0'),
        b'A' | b'J' => 1,
        b'B' | b'K' | b'S' => 2,
        b'C' | b'L' | b'T' => 3,
        b'D' | b'M' | b'U' => 4,
        b'E' | b'N' | b'V' => 5,
        b'F' | b'W' => 6,
        b'G' | b'P' | b'X' => 7,
        b'H' | b'Y' => 8,
        b'R' | b'Z' => 9,
        _ => 0,
    }
}

/// The ISO 3779 / North American check digit (position 9) of a VIN.
pub fn vin_check_digit(vin: &[u8; 17]) -> u8 {
    const WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    let sum: u32 = vin
        .iter()
        .zip(WEIGHTS)
        .map(|(c, w)| vin_value(*c) * w)
        .sum();
    match sum % 11 {
        10 => b'X',
        d => b'0' + d as u8,
    }
}

fn make_vin(rng: &mut fastrand::Rng, wmi: &str) -> String {
    let mut vin = [b'0'; 17];
    vin[..3].copy_from_slice(wmi.as_bytes());
    for c in vin.iter_mut().skip(3) {
        *c = VIN_CHARS[rng.usize(..VIN_CHARS.len())];
    }
    vin[9] = b"ABCDEFGHJKLMNPRSTVWXY123456789"[rng.usize(..30)];
    vin[8] = vin_check_digit(&vin);
    String::from_utf8_lossy(&vin).into_owned()
}

fn dataset() -> Data {
    // Fixed seed: the same dataset on every run, so tests can name records.
    let mut rng = fastrand::Rng::with_seed(20261123);
    let models: [(&str, &str, &str, &str); 8] = [
        ("WVW", "Volkswagen", "Golf", "hatchback"),
        ("WBA", "BMW", "320i", "sedan"),
        ("VF1", "Renault", "Clio", "hatchback"),
        ("WDD", "Mercedes-Benz", "C 200", "sedan"),
        ("TMB", "Skoda", "Octavia", "wagon"),
        ("ZFA", "Fiat", "500", "hatchback"),
        ("YV1", "Volvo", "XC60", "suv"),
        ("SAL", "Land Rover", "Defender", "suv"),
    ];
    let fuels = ["petrol", "diesel", "hybrid", "electric"];
    let colours = ["Black", "White", "Silver", "Blue", "Red", "Grey"];
    let statuses = [
        "in_stock",
        "in_stock",
        "in_stock",
        "reserved",
        "sold",
        "in_transit",
    ];
    let vehicles: Vec<Value> = (0..240)
        .map(|i| {
            let (wmi, make, model, body) = models[i % models.len()];
            let year = 2016 + (i % 9) as i64;
            json!({
                "vin": make_vin(&mut rng, wmi),
                "stockNo": format!("STK-{:05}", 1000 + i),
                "make": make,
                "model": model,
                "modelYear": year,
                "bodyStyle": body,
                "fuel": fuels[rng.usize(..fuels.len())],
                "gearbox": if rng.bool() { "automatic" } else { "manual" },
                "colourExt": colours[rng.usize(..colours.len())],
                "odometerKm": if year >= 2024 { rng.u32(0..500) } else { rng.u32(5_000..160_000) },
                "status": statuses[rng.usize(..statuses.len())],
                "priceEur": rng.u32(9_000..95_000),
                "firstRegistered": format!("{year}-{:02}-{:02}", rng.u8(1..=12), rng.u8(1..=28)),
            })
        })
        .collect();
    let first = [
        "Anna", "Lukas", "Marie", "Jonas", "Sofia", "Noah", "Emma", "Paul", "Lea", "Ben",
    ];
    let last = [
        "Schmidt", "Müller", "Rossi", "Dubois", "Novak", "Jansen", "García", "Berg",
    ];
    let cities = [
        ("Berlin", "DE", "10115"),
        ("Lyon", "FR", "69001"),
        ("Milano", "IT", "20121"),
        ("Brno", "CZ", "60200"),
    ];
    let customers: Vec<Value> = (0..120)
        .map(|i| {
            let (f, l) = (first[i % first.len()], last[(i / 3) % last.len()]);
            let (city, country, postcode) = cities[i % cities.len()];
            json!({
                "customerNo": format!("C{:06}", 500 + i),
                "type": if i % 10 == 0 { "fleet" } else if i % 7 == 0 { "business" } else { "individual" },
                "firstName": f,
                "lastName": l,
                "email": format!("{}.{}{}@example.com", f.to_lowercase(), l.to_lowercase(), i),
                "phone": format!("+4930{:07}", 1_000_000 + i * 37),
                "street": format!("Hauptstraße {}", 1 + i % 90),
                "city": city,
                "postcode": postcode,
                "country": country,
                "createdAt": format!("2023-{:02}-{:02}T09:00:00Z", 1 + i % 12, 1 + i % 28),
            })
        })
        .collect();
    let job_states = [
        "open",
        "in_progress",
        "waiting_parts",
        "completed",
        "invoiced",
    ];
    let jobs: Vec<Value> = (0..150)
        .map(|i| {
            json!({
                "jobNo": format!("RO-{:06}", 20_000 + i),
                "vin": vehicles[i % vehicles.len()]["vin"],
                "customerNo": customers[i % customers.len()]["customerNo"],
                "status": job_states[i % job_states.len()],
                "complaint": (["Annual service", "Brake noise", "Check engine light", "Tyre change", "Air conditioning"][i % 5]),
                "labourHours": (1 + i % 6) as f64 * 0.5,
                "openedAt": format!("2026-{:02}-{:02}T08:30:00Z", 1 + i % 11, 1 + i % 28),
            })
        })
        .collect();
    let parts: Vec<Value> = (0..200)
        .map(|i| {
            json!({
                "partNo": format!("P-{:03}-{:04}", 100 + i % 50, i),
                "description": (["Oil filter", "Brake pad set", "Wiper blade", "Spark plug", "Air filter", "Battery 70Ah"][i % 6]),
                "onHand": rng.u32(0..60),
                "binLocation": format!("A{}-{:02}", 1 + i % 9, i % 40),
                "unitPriceEur": rng.u32(5..400),
            })
        })
        .collect();
    let appointments: Vec<Value> = (0..80)
        .map(|i| {
            json!({
                "appointmentId": format!("APT-{:05}", 7_000 + i),
                "customerNo": customers[i % customers.len()]["customerNo"],
                "vin": vehicles[(i * 3) % vehicles.len()]["vin"],
                "start": format!("2026-12-{:02}T{:02}:00:00+01:00", 1 + i % 28, 8 + i % 9),
                "durationMin": 30 * (1 + i % 4),
                "service": (["Inspection", "Test drive", "Tyre change", "Repair"][i % 4]),
            })
        })
        .collect();
    Data {
        vehicles,
        customers,
        jobs,
        parts,
        appointments,
        idempotent: HashMap::new(),
    }
}

/// Builds the simulator's router.
pub fn router(auth: SimAuth) -> Router {
    let sim = Arc::new(Sim {
        auth,
        data: RwLock::new(dataset()),
        tokens: Mutex::new(HashMap::new()),
        refresh_tokens: Mutex::new(Default::default()),
        faults: Mutex::new(PendingFaults::default()),
        requests: AtomicU64::new(0),
    });
    let api = Router::new()
        .route("/vehicles", get(list_vehicles).post(create_vehicle))
        .route("/vehicles/{vin}", get(get_vehicle).put(update_vehicle))
        .route("/customers", get(|s, q| list(s, q, Kind::Customers)))
        .route(
            "/customers/{id}",
            get(|s, p| get_one(s, p, Kind::Customers)),
        )
        .route("/workshop-jobs", get(|s, q| list(s, q, Kind::Jobs)))
        .route("/workshop-jobs/{id}", get(|s, p| get_one(s, p, Kind::Jobs)))
        .route("/parts", get(|s, q| list(s, q, Kind::Parts)))
        .route("/parts/{id}", get(|s, p| get_one(s, p, Kind::Parts)))
        .route(
            "/appointments",
            get(|s, q| list(s, q, Kind::Appointments)).post(create_appointment),
        )
        .route(
            "/appointments/{id}",
            get(|s, p| get_one(s, p, Kind::Appointments)),
        )
        .route_layer(middleware::from_fn_with_state(sim.clone(), require_auth));
    Router::new()
        .route(
            "/health",
            get(|| async { Json(json!({"status": "ok", "system": "dms-sim"})) }),
        )
        .route("/oauth/token", post(token))
        .route("/auth/session", post(session))
        .route("/_sim/faults", post(set_faults))
        .route("/_sim/refresh-tokens", post(new_refresh_token))
        .route("/_sim/stats", get(stats))
        .nest("/api/v1", api)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such resource") })
        .layer(middleware::from_fn_with_state(sim.clone(), faults))
        .with_state(sim)
}

/// Serves the simulator on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    auth: SimAuth,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(auth))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` and serves in a background task; returns the bound address.
pub async fn spawn(
    addr: SocketAddr,
    auth: SimAuth,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let _ = serve(listener, auth, std::future::pending()).await;
    });
    Ok((bound, handle))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

async fn faults(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    sim.requests.fetch_add(1, Ordering::Relaxed);
    let (mut fault, mut delay, is_sim) = {
        let pick = |name: &str, query: &str| -> Option<String> {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| {
                    req.uri().query().and_then(|q| {
                        q.split('&').find_map(|kv| {
                            kv.strip_prefix(query)
                                .and_then(|v| v.strip_prefix('='))
                                .map(str::to_owned)
                        })
                    })
                })
        };
        let fault = pick("x-sim-fault", "sim_fault");
        let delay: u64 = pick("x-sim-delay-ms", "sim_delay_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (fault, delay, req.uri().path().starts_with("/_sim"))
    };
    if !is_sim {
        let mut pending = sim.faults.lock().await;
        if pending.count > 0 {
            pending.count -= 1;
            fault = fault.or(pending.fault.clone());
            delay = delay.max(pending.delay_ms);
        }
    }
    let delay = Duration::from_millis(delay.min(600_000));
    match fault.as_deref() {
        Some("slow-body") => {
            let response = next.run(req).await;
            let (parts, body) = response.into_parts();
            let stream = async_body(body, delay);
            return Response::from_parts(parts, stream);
        }
        Some("drop") => {
            tokio::time::sleep(delay).await;
            // Panicking in a handler makes hyper close the connection without
            // a response, which is what a crashing on-premise server does.
            return drop_connection().await;
        }
        _ => {}
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fault.as_deref() {
        Some("500") => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "simulated failure",
        ),
        Some("503") => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "simulated outage",
        ),
        Some("429") => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            r
        }
        _ => next.run(req).await,
    }
}

fn async_body(body: axum::body::Body, delay: Duration) -> axum::body::Body {
    let stream = async_stream(body, delay);
    axum::body::Body::from_stream(stream)
}

fn async_stream(
    body: axum::body::Body,
    delay: Duration,
) -> impl futures_core_stream::Stream<Item = Result<axum::body::Bytes, axum::Error>> {
    futures_core_stream::once(async move {
        tokio::time::sleep(delay).await;
        axum::body::to_bytes(body, usize::MAX).await
    })
}

/// A tiny one-item stream, to avoid a dependency for one use.
mod futures_core_stream {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub use futures_core::Stream;

    pub struct Once<F> {
        future: Option<Pin<Box<F>>>,
    }

    pub fn once<F: Future>(future: F) -> Once<F> {
        Once {
            future: Some(Box::pin(future)),
        }
    }

    impl<F: Future> Stream for Once<F> {
        type Item = F::Output;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            let Some(f) = self.future.as_mut() else {
                return Poll::Ready(None);
            };
            match f.as_mut().poll(cx) {
                Poll::Ready(v) => {
                    self.future = None;
                    Poll::Ready(Some(v))
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }

    impl<F> Unpin for Once<F> {}
}

async fn drop_connection() -> Response {
    // An error from the body stream aborts the connection mid-response.
    let stream = futures_core_stream::once(async {
        Err::<axum::body::Bytes, axum::Error>(axum::Error::new(std::io::Error::other(
            "simulated drop",
        )))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, "100")
        .body(axum::body::Body::from_stream(stream))
        .unwrap_or_default()
}

#[derive(Debug, Deserialize)]
struct Login {
    username: String,
    password: String,
}

/// `POST /auth/session {"username","password"}` → a session key for
/// `X-Session-Key` (a "dynamic API key"), valid 15 minutes.
async fn session(State(sim): State<Arc<Sim>>, Json(login): Json<Login>) -> Response {
    if login.username != sim.auth.basic_user || login.password != sim.auth.basic_password {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_login",
            "wrong user name or password",
        );
    }
    let key = format!("sess-{:016x}", fastrand::u64(..));
    sim.tokens
        .lock()
        .await
        .insert(key.clone(), Instant::now() + Duration::from_secs(900));
    Json(json!({"session": {"key": key, "expires_in": 900}})).into_response()
}

async fn require_auth(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let api_key_ok =
        headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(sim.auth.api_key.as_str());
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let basic_ok = authz
        .strip_prefix("Basic ")
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|up| up == format!("{}:{}", sim.auth.basic_user, sim.auth.basic_password));
    let bearer_ok = match authz.strip_prefix("Bearer ") {
        Some(t) => sim
            .tokens
            .lock()
            .await
            .get(t.trim())
            .is_some_and(|exp| *exp > Instant::now()),
        None => false,
    };
    let session_ok = match headers.get("x-session-key").and_then(|v| v.to_str().ok()) {
        Some(k) => sim
            .tokens
            .lock()
            .await
            .get(k.trim())
            .is_some_and(|exp| *exp > Instant::now()),
        None => false,
    };
    if api_key_ok || basic_ok || bearer_ok || session_ok {
        next.run(req).await
    } else {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send X-API-Key, Basic, Bearer or X-Session-Key credentials",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"dms\", Bearer"),
        );
        r
    }
}

async fn token(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: String) -> Response {
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (url_decode(k), url_decode(v)))
        .collect();
    let (mut id, mut secret) = (
        form.get("client_id").cloned(),
        form.get("client_secret").cloned(),
    );
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        && let Some((u, p)) = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
    {
        id = Some(u);
        secret = Some(p);
    }
    let refuse =
        |status: StatusCode, error: &str| (status, Json(json!({"error": error}))).into_response();
    if id.as_deref() != Some(sim.auth.client_id.as_str())
        || secret.as_deref() != Some(sim.auth.client_secret.as_str())
    {
        return refuse(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    // Refresh tokens are single-use: each refresh rotates them.
    let issue_refresh = match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => false,
        Some("password") => {
            if form.get("username") != Some(&sim.auth.basic_user)
                || form.get("password") != Some(&sim.auth.basic_password)
            {
                return refuse(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            true
        }
        Some("refresh_token") => {
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            if !sim.refresh_tokens.lock().await.remove(&presented) {
                return refuse(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            true
        }
        _ => return refuse(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    let token = format!(
        "dms-at-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    );
    sim.tokens
        .lock()
        .await
        .insert(token.clone(), Instant::now() + Duration::from_secs(3600));
    let mut answer = json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600});
    if issue_refresh {
        let refresh = format!(
            "dms-rt-{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        );
        sim.refresh_tokens.lock().await.insert(refresh.clone());
        answer["refresh_token"] = json!(refresh);
    }
    Json(answer).into_response()
}

/// `POST /_sim/refresh-tokens` → a fresh refresh token, as an authorization
/// code flow would have left with the user (tests and demos).
async fn new_refresh_token(State(sim): State<Arc<Sim>>) -> Json<Value> {
    let refresh = format!(
        "dms-rt-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    );
    sim.refresh_tokens.lock().await.insert(refresh.clone());
    Json(json!({"refresh_token": refresh}))
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Deserialize)]
struct FaultRequest {
    fault: Option<String>,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default = "one")]
    count: u64,
}

fn one() -> u64 {
    1
}

async fn set_faults(State(sim): State<Arc<Sim>>, Json(req): Json<FaultRequest>) -> Json<Value> {
    let mut pending = sim.faults.lock().await;
    *pending = PendingFaults {
        fault: req.fault,
        delay_ms: req.delay_ms,
        count: req.count,
    };
    Json(json!({"armed": pending.count}))
}

async fn stats(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(json!({"requests": sim.requests.load(Ordering::Relaxed)}))
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Vehicles,
    Customers,
    Jobs,
    Parts,
    Appointments,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Vehicles => "vin",
            Kind::Customers => "customerNo",
            Kind::Jobs => "jobNo",
            Kind::Parts => "partNo",
            Kind::Appointments => "appointmentId",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Kind::Vehicles => "vehicles",
            Kind::Customers => "customers",
            Kind::Jobs => "workshop-jobs",
            Kind::Parts => "parts",
            Kind::Appointments => "appointments",
        }
    }

    fn rows(self, d: &Data) -> &Vec<Value> {
        match self {
            Kind::Vehicles => &d.vehicles,
            Kind::Customers => &d.customers,
            Kind::Jobs => &d.jobs,
            Kind::Parts => &d.parts,
            Kind::Appointments => &d.appointments,
        }
    }
}

async fn list(
    State(sim): State<Arc<Sim>>,
    Query(q): Query<HashMap<String, String>>,
    kind: Kind,
) -> Response {
    let page: usize = q
        .get("page")
        .and_then(|v| v.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let size: usize = q
        .get("page_size")
        .and_then(|v| v.parse().ok())
        .filter(|s| (1..=200).contains(s))
        .unwrap_or(50);
    let data = sim.data.read().await;
    let filtered: Vec<&Value> = kind
        .rows(&data)
        .iter()
        .filter(|row| {
            q.iter().all(|(k, v)| {
                matches!(
                    k.as_str(),
                    "page" | "page_size" | "sim_fault" | "sim_delay_ms"
                ) || row.get(k).is_some_and(|f| {
                    f.as_str()
                        .map(|s| s.eq_ignore_ascii_case(v))
                        .unwrap_or_else(|| {
                            serde_json::from_str::<Value>(v).ok().as_ref() == Some(f)
                        })
                })
            })
        })
        .collect();
    let total = filtered.len();
    let items: Vec<&Value> = filtered
        .into_iter()
        .skip((page - 1) * size)
        .take(size)
        .collect();
    let next = (page * size < total).then_some(page + 1);
    let mut response = Json(
        json!({"items": items, "page": page, "page_size": size, "total": total, "next_page": next}),
    )
    .into_response();
    if let Some(n) = next
        && let Ok(v) = HeaderValue::from_str(&format!(
            "</api/v1/{}?page={n}&page_size={size}>; rel=\"next\"",
            kind.path()
        ))
    {
        response.headers_mut().insert(header::LINK, v);
    }
    response
}

async fn get_one(State(sim): State<Arc<Sim>>, Path(id): Path<String>, kind: Kind) -> Response {
    let data = sim.data.read().await;
    match kind.rows(&data).iter().find(|r| {
        r[kind.key()]
            .as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case(&id))
    }) {
        Some(row) => Json(row.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no {} with {} {id}", kind.path(), kind.key()),
        ),
    }
}

async fn list_vehicles(s: State<Arc<Sim>>, q: Query<HashMap<String, String>>) -> Response {
    list(s, q, Kind::Vehicles).await
}

async fn get_vehicle(s: State<Arc<Sim>>, p: Path<String>) -> Response {
    get_one(s, p, Kind::Vehicles).await
}

fn valid_vin(vin: &str) -> bool {
    let Ok(bytes) = <[u8; 17]>::try_from(vin.as_bytes()) else {
        return false;
    };
    bytes.iter().all(|c| VIN_CHARS.contains(c)) && vin_check_digit(&bytes) == bytes[8]
}

async fn create_vehicle(
    State(sim): State<Arc<Sim>>,
    headers: axum::http::HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(vehicle)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "send a JSON vehicle",
        );
    };
    let Some(vin) = vehicle["vin"].as_str().map(str::to_ascii_uppercase) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "vin is required",
        );
    };
    if !valid_vin(&vin) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "vin is not a valid VIN (17 characters, check digit)",
        );
    }
    let mut data = sim.data.write().await;
    if let Some(r) = replayed(&data, &headers) {
        return r;
    }
    if data.vehicles.iter().any(|v| v["vin"] == vin.as_str()) {
        return error(
            StatusCode::CONFLICT,
            "conflict",
            "a vehicle with this VIN exists",
        );
    }
    data.vehicles.push(vehicle.clone());
    remember(&mut data, &headers, StatusCode::CREATED, &vehicle);
    (StatusCode::CREATED, Json(vehicle)).into_response()
}

async fn update_vehicle(
    State(sim): State<Arc<Sim>>,
    Path(vin): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(patch)) = body else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "send a JSON object");
    };
    let mut data = sim.data.write().await;
    let Some(existing) = data.vehicles.iter_mut().find(|v| {
        v["vin"]
            .as_str()
            .is_some_and(|x| x.eq_ignore_ascii_case(&vin))
    }) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such vehicle");
    };
    if let (Some(obj), Some(p)) = (existing.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            if k != "vin" {
                obj.insert(k.clone(), v.clone());
            }
        }
    }
    Json(existing.clone()).into_response()
}

async fn create_appointment(
    State(sim): State<Arc<Sim>>,
    headers: axum::http::HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(mut appt)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "send a JSON appointment",
        );
    };
    if appt["start"].as_str().is_none() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "start is required",
        );
    }
    let mut data = sim.data.write().await;
    if let Some(r) = replayed(&data, &headers) {
        return r;
    }
    let id = format!("APT-{:05}", 7_000 + data.appointments.len());
    appt["appointmentId"] = Value::String(id);
    data.appointments.push(appt.clone());
    remember(&mut data, &headers, StatusCode::CREATED, &appt);
    (StatusCode::CREATED, Json(appt)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_vins_have_valid_check_digits() {
        let data = dataset();
        for v in &data.vehicles {
            assert!(valid_vin(v["vin"].as_str().unwrap()), "{v}");
        }
        // A published example: 1M8GDM9AXKP042788 has check digit X.
        assert!(valid_vin("1M8GDM9AXKP042788"));
        assert!(!valid_vin("1M8GDM9A1KP042788"));
    }

    #[test]
    fn url_decoding() {
        assert_eq!(url_decode("a%20b+c"), "a b c");
        assert_eq!(url_decode("100%"), "100%");
    }
}

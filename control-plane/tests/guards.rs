//! Connectors' circuit breakers and rate limits, enforced per connection
//! against a real HTTP server that counts what reaches it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use dibop_control_plane::testing::TestCp;

/// A server answering every request with `status`; (URL, requests seen).
async fn counting_server(status: u16) -> (String, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                axum::Json(json!({"items": []})),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn connector(slug: &str, base_url: &str, resilience: Value) -> Value {
    json!({
        "format": "dibop.connector/v1", "name": format!("Guarded {slug}"), "slug": slug,
        "description": "A system behind a breaker and a rate limit.", "category": "dms",
        "base_url": base_url, "documentation_url": "https://dms.example/docs",
        "auth": {"schemes": [{"type": "none"}]},
        "health_check": "list",
        "resilience": resilience,
        "operations": [
            {"id": "list", "name": "List", "method": "GET", "path": "/items",
             "parameters": [{"name": "page", "in": "query", "type": "integer"}], "response_schema": {"type": "object"}}
        ]
    })
}

async fn connect(cp: &TestCp, connector: &str, settings: Value) -> String {
    let (status, c) = cp
        .post("/connections", json!({"connector_id": connector, "name": format!("conn {connector}"), "auth_type": "none",
                "activate": true, "settings": settings}))
        .await;
    assert_eq!(status, 201, "{c}");
    c["id"].as_str().unwrap().to_owned()
}

async fn invoke(cp: &TestCp, id: &str) -> Value {
    let (status, r) = cp
        .post(
            format!("/connections/{id}/operations/list/invoke"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    r
}

/// Ten calls against a failing system: the first three reach it and open
/// the breaker; the other seven fail at once with `circuit_open`, and the
/// connection shows the breaker open.
#[tokio::test]
async fn the_circuit_breaker_stops_calls_to_a_failing_system() {
    let (url, seen) = counting_server(503).await;
    let cp = TestCp::start().await;
    let id = cp
        .publish(connector(
            "failing-dms",
            &url,
            json!({"timeout_ms": 5000, "retries": {"max_attempts": 1},
                   "circuit_breaker": {"failure_threshold": 3, "open_for_ms": 600000}}),
        ))
        .await;
    let conn = connect(&cp, &id, json!({"retry_on_failure": false})).await;
    let mut classes = Vec::new();
    for _ in 0..10 {
        let r = invoke(&cp, &conn).await;
        classes.push(r["error"]["class"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(seen.load(Ordering::SeqCst), 3, "{classes:?}");
    assert_eq!(&classes[..3], ["upstream_error"; 3], "{classes:?}");
    assert_eq!(&classes[3..], ["circuit_open"; 7], "{classes:?}");
    let (_, view) = cp.get(format!("/connections/{conn}")).await;
    assert_eq!(view["circuit_breaker"]["state"], "open", "{view}");
    assert!(view["circuit_breaker"]["open_until"].is_string(), "{view}");
    // The refusals are in the call log with their class.
    let (_, calls) = cp.get(format!("/api-calls?connection_id={conn}")).await;
    let open = calls
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["error_class"] == "circuit_open")
        .count();
    assert_eq!(open, 7, "{calls}");
}

/// A breaker opens, its time passes, and one trial call that succeeds
/// closes it.
#[tokio::test]
async fn a_successful_trial_closes_the_breaker() {
    let (bad, _) = counting_server(500).await;
    let (good, seen) = counting_server(200).await;
    let cp = TestCp::start().await;
    let id = cp
        .publish(connector(
            "flaky-dms",
            &bad,
            json!({"timeout_ms": 5000, "retries": {"max_attempts": 1},
                   "circuit_breaker": {"failure_threshold": 2, "open_for_ms": 300}}),
        ))
        .await;
    let conn = connect(&cp, &id, json!({"retry_on_failure": false})).await;
    invoke(&cp, &conn).await;
    invoke(&cp, &conn).await;
    assert_eq!(invoke(&cp, &conn).await["error"]["class"], "circuit_open");
    // The system recovers (the connection now points at the healthy server).
    let (status, patched) = cp
        .patch(format!("/connections/{conn}"), json!({"base_url": good}))
        .await;
    assert_eq!(status, 200, "{patched}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, view) = cp.get(format!("/connections/{conn}")).await;
    assert_eq!(view["circuit_breaker"]["state"], "half_open", "{view}");
    let trial = invoke(&cp, &conn).await;
    assert_eq!(trial["ok"], true, "{trial}");
    assert_eq!(invoke(&cp, &conn).await["ok"], true);
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    let (_, view) = cp.get(format!("/connections/{conn}")).await;
    assert_eq!(view["circuit_breaker"]["state"], "closed", "{view}");
}

/// Six calls at two per second take at least two seconds (a burst of two,
/// then one every half second); a call whose wait would outlast its timeout
/// fails at once with `throttled` and never reaches the system.
#[tokio::test]
async fn the_rate_limit_paces_calls_and_refuses_what_would_time_out() {
    let (url, seen) = counting_server(200).await;
    let cp = TestCp::start().await;
    let id = cp
        .publish(connector(
            "paced-dms",
            &url,
            json!({"timeout_ms": 5000, "retries": {"max_attempts": 1}, "rate_limit": {"requests_per_second": 2}}),
        ))
        .await;
    let conn = connect(&cp, &id, json!({})).await;
    let started = Instant::now();
    for _ in 0..6 {
        assert_eq!(invoke(&cp, &conn).await["ok"], true);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "six calls at 2/s took {:?}",
        started.elapsed()
    );
    assert_eq!(seen.load(Ordering::SeqCst), 6);
    // One call a second and a 100 ms timeout: right after a call, the next
    // one would wait most of a second, so it is refused without reaching the
    // system. (Judged only for calls sent within 0.8 s of the first: a
    // machine slower than that has let the slot come round.)
    let (slow_url, slow_seen) = counting_server(200).await;
    let id = cp
        .publish(connector(
            "one-a-second",
            &slow_url,
            json!({"timeout_ms": 5000, "retries": {"max_attempts": 1}, "rate_limit": {"requests_per_second": 1}}),
        ))
        .await;
    let conn = connect(&cp, &id, json!({"timeout_ms": 100})).await;
    assert_eq!(invoke(&cp, &conn).await["ok"], true);
    let first = Instant::now();
    let mut judged = 0;
    for _ in 0..3 {
        let sent = first.elapsed();
        let r = invoke(&cp, &conn).await;
        if sent < Duration::from_millis(800) {
            judged += 1;
            assert_eq!(r["error"]["class"], "throttled", "{r}");
            let message = r["error"]["message"].as_str().unwrap();
            assert!(message.contains("1 calls per second"), "{message}");
        }
    }
    assert!(judged >= 1, "no call was sent within 0.8 s of the first");
    assert_eq!(
        slow_seen.load(Ordering::SeqCst),
        1 + 3 - judged,
        "throttled calls never reach the system"
    );
}

//! Tenant-written expressions run in worker processes of the real `dibop`
//! binary: runaway recursion, memory bombs and endless loops stop only
//! their worker, and the next evaluation gets a fresh one.

use std::time::Duration;

use dibop_control_plane::expr::Evaluator;
use serde_json::json;

fn evaluator() -> Evaluator {
    // A generous deadline: the memory limit, not the clock, must stop the bomb.
    Evaluator::in_workers(env!("CARGO_BIN_EXE_dibop").into()).with_deadline(Duration::from_secs(20))
}

#[tokio::test]
async fn expressions_run_in_workers_and_runaways_stop_only_their_worker() {
    let ev = evaluator();
    assert!(ev.sandboxed());
    let scope = json!({"params": {"n": 41}});
    assert_eq!(ev.eval(".params.n + 1", &scope).await.unwrap(), [json!(42)]);
    assert_eq!(ev.eval("$params.n", &scope).await.unwrap(), [json!(41)]);
    // Errors of the expression itself are answers, not crashes.
    let e = ev.eval(".params.n + \"x\"", &scope).await.unwrap_err();
    assert!(e.contains("cannot"), "{e}");

    // Recursion without end overflows the worker's stack: the worker dies.
    let e = ev.eval("def f: 1 + f; f", &scope).await.unwrap_err();
    assert!(e.contains("recursed too deeply"), "{e}");
    assert_eq!(ev.eval(".params.n", &scope).await.unwrap(), [json!(41)]);

    // A memory bomb hits the worker's address-space limit.
    let e = ev
        .eval("\"x\" | until(length > 10000000000; . + .)", &scope)
        .await
        .unwrap_err();
    assert!(e.contains("more than 1 GiB of memory"), "{e}");
    assert_eq!(ev.eval(".params.n", &scope).await.unwrap(), [json!(41)]);

    // A loop that never yields is killed at the deadline.
    let quick = evaluator().with_deadline(Duration::from_millis(300));
    let e = quick.eval("def f: f; f", &scope).await.unwrap_err();
    assert!(e.contains("did not finish"), "{e}");
    assert_eq!(quick.eval("1", &scope).await.unwrap(), [json!(1)]);
}

#[tokio::test]
async fn many_evaluations_share_a_few_warm_workers() {
    let ev = std::sync::Arc::new(evaluator());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let ev = ev.clone();
        tasks.spawn(async move {
            ev.eval("[.item, (.item * 2)]", &json!({"item": i}))
                .await
                .unwrap()
        });
    }
    let mut n = 0;
    while let Some(r) = tasks.join_next().await {
        let out = r.unwrap();
        assert_eq!(out[0][1], json!(out[0][0].as_i64().unwrap() * 2));
        n += 1;
    }
    assert_eq!(n, 64);
}

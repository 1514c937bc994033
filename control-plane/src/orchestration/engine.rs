//! The orchestration engine: durable executions.
//!
//! An execution runs the steps of its pinned orchestration version in
//! order. Each step's start (with its resolved input) and outcome (output or
//! error, attempts, duration) is written to `execution_steps` before the
//! engine moves on; a step that already succeeded is never run again, so an
//! execution interrupted by a restart resumes after its last completed step
//! (the step that was running is run again). Workers are bounded; queued
//! executions live in the database and are picked up again at start.
//!
//! Several control-plane nodes may share the database: a node **claims** an
//! execution (`owner`, `lease_until`) before running it and renews its
//! leases every few seconds; another node takes over an execution whose
//! lease ran out (its node stopped). A claim also checks the tenant's
//! concurrency across nodes: running executions with a live lease anywhere
//! count against the tenant's `concurrent_executions`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::Core;
use crate::domain::{ErrorClass, ExecutionStatus, StepKind};
use crate::store::{ExecutionRow, StepRow, now_unix};

/// Executions running at once on this control plane.
pub const WORKERS: usize = 16;
/// Largest step output kept for resuming (bigger ones are cut, with a marker).
pub const MAX_STORED_OUTPUT: usize = 4 * 1024 * 1024;
/// Most nested orchestration calls.
const MAX_DEPTH: u32 = 5;
/// How long a claim on an execution lasts without renewal (seconds).
pub const LEASE_SECS: i64 = 15;
/// How often leases are renewed and orphaned executions looked for.
const LEASE_TICK: Duration = Duration::from_secs(5);

/// Why a step (or a run) failed.
#[derive(Debug, Clone, Serialize)]
pub struct StepError {
    /// Why (`timeout`, `auth_failure`, `expression_error`, `failed`, `cancelled`, …).
    pub class: ErrorClass,
    /// What happened.
    pub message: String,
    /// The step's id.
    pub step: String,
}

impl StepError {
    fn new(class: impl Into<ErrorClass>, message: impl Into<String>, step: &str) -> StepError {
        StepError {
            class: class.into(),
            message: message.into(),
            step: step.into(),
        }
    }
}

/// The engine's queue and its finish notices.
#[derive(Debug)]
pub struct Engine {
    cancelled: Mutex<std::collections::HashSet<String>>,
    /// Executions this node is handling (queued here or running).
    inflight: Mutex<std::collections::HashSet<String>>,
    /// Per tenant: (its limit, its slots).
    tenants: Mutex<HashMap<String, (i64, Arc<tokio::sync::Semaphore>)>>,
    tx: mpsc::UnboundedSender<String>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    finished: broadcast::Sender<String>,
    /// Worker slots; an execution waiting for an agent lends its slot.
    workers: Arc<tokio::sync::Semaphore>,
}

impl Default for Engine {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Engine {
            cancelled: Mutex::default(),
            inflight: Mutex::default(),
            tenants: Mutex::default(),
            tx,
            rx: Mutex::new(Some(rx)),
            finished: broadcast::channel(4096).0,
            workers: Arc::new(tokio::sync::Semaphore::new(WORKERS)),
        }
    }
}

impl Engine {
    /// Queues an execution (already stored as `queued`).
    pub fn submit(&self, id: &str) {
        let _ = self.tx.send(id.to_owned());
    }

    /// The slots of a tenant allowing `limit` executions at once.
    fn tenant_slots(&self, tenant_id: &str, limit: i64) -> Arc<tokio::sync::Semaphore> {
        let mut map = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(tenant_id) {
            Some((l, s)) if *l == limit => s.clone(),
            _ => {
                // A changed limit starts a new pool; runs holding the old one finish.
                let s = Arc::new(tokio::sync::Semaphore::new(limit.clamp(1, 10_000) as usize));
                map.insert(tenant_id.to_owned(), (limit, s.clone()));
                s
            }
        }
    }

    /// Marks an execution cancelled for the runs on this node.
    pub fn cancel(&self, id: &str) {
        self.cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned());
    }

    fn is_cancelled(&self, id: &str) -> bool {
        self.cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    fn forget(&self, id: &str) {
        self.cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Notices of executions that ended on this node.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.finished.subscribe()
    }
}

/// Runs queued executions until shutdown; first picks up unfinished ones.
pub async fn run(core: Arc<Core>, shutdown: tokio_util::sync::CancellationToken) {
    let Some(mut rx) = core
        .engine
        .rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return;
    };
    // Leases: renewed, and executions no live node holds taken over (at
    // start, those this node left unfinished).
    tokio::spawn(keep_leases(core.clone(), shutdown.clone()));
    let workers = core.engine.workers.clone();
    loop {
        let id = tokio::select! {
            _ = shutdown.cancelled() => return,
            id = rx.recv() => match id { Some(id) => id, None => return },
        };
        if !core
            .engine
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone())
        {
            continue;
        }
        let (core, workers) = (core.clone(), workers.clone());
        tokio::spawn(async move {
            run_one(&core, &workers, &id).await;
            core.engine
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            core.engine.forget(&id);
            let _ = core.engine.finished.send(id);
        });
    }
}

/// Takes the tenant's slot and a worker, claims the execution, runs it.
async fn run_one(core: &Arc<Core>, workers: &Arc<tokio::sync::Semaphore>, id: &str) {
    let Some((tenant, limit)) = tenant_limit(core, id).await else {
        return;
    };
    let node = core.quotas.node().to_owned();
    loop {
        // The tenant's slot first, then a worker: a tenant at its limit
        // waits without holding a worker another tenant could use.
        let Ok(_tenant_permit) = core
            .engine
            .tenant_slots(&tenant, limit)
            .acquire_owned()
            .await
        else {
            return;
        };
        let Ok(_permit) = workers.clone().acquire_owned().await else {
            return;
        };
        let now = now_unix();
        match core
            .store
            .claim_execution(id, &tenant, &node, now, now + LEASE_SECS, limit)
            .await
        {
            Ok(true) => {
                execute(core, id, 0).await;
                return;
            }
            Ok(false) => {
                // Another live node has it, it ended, or the tenant is at its
                // limit on other nodes: wait and look again in the last case.
                match core.store.execution_lease(id).await {
                    Ok(Some((Some(owner), Some(until)))) if owner != node && until >= now => {
                        return;
                    }
                    Ok(None) => return,
                    _ => {}
                }
                if !matches!(
                    core.store.execution_any(id).await,
                    Ok(Some(ref e)) if !e.status.is_finished()
                ) {
                    return;
                }
            }
            Err(e) => tracing::warn!(execution = id, "cannot claim: {e}"),
        }
        drop(_permit);
        drop(_tenant_permit);
        tokio::time::sleep(Duration::from_millis(200 + fastrand::u64(..300))).await;
    }
}

/// Renews this node's leases and submits executions no live node holds.
async fn keep_leases(core: Arc<Core>, shutdown: tokio_util::sync::CancellationToken) {
    let node = core.quotas.node().to_owned();
    let mut first = true;
    let mut tick = tokio::time::interval(LEASE_TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = now_unix();
        if let Err(e) = core.store.renew_leases(&node, now + LEASE_SECS).await {
            tracing::warn!("cannot renew execution leases: {e}");
        }
        match core.store.orphaned_executions(&node, now).await {
            Ok(ids) => {
                let new: Vec<String> = {
                    let inflight = core
                        .engine
                        .inflight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    ids.into_iter()
                        .filter(|id| !inflight.contains(id))
                        .collect()
                };
                if !new.is_empty() {
                    tracing::info!(
                        count = new.len(),
                        "{} unfinished executions",
                        if first { "resuming" } else { "taking over" }
                    );
                }
                for id in new {
                    core.engine.submit(&id);
                }
            }
            Err(e) => tracing::error!("cannot list unfinished executions: {e}"),
        }
        first = false;
    }
}

impl Run {
    /// Whether the execution was cancelled: at once when on this node, and
    /// from the database (another node's cancel) at most every second.
    async fn cancelled(&self) -> bool {
        if self.core.engine.is_cancelled(&self.exe.id) {
            return true;
        }
        let due = {
            let mut last = self.checked.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= Duration::from_secs(1) {
                *last = Instant::now();
                true
            } else {
                false
            }
        };
        due && self
            .core
            .store
            .execution_any(&self.exe.id)
            .await
            .ok()
            .flatten()
            .is_some_and(|e| e.status == ExecutionStatus::Cancelled)
    }
}

/// (tenant, its concurrent-execution limit) of an execution.
async fn tenant_limit(core: &Core, id: &str) -> Option<(String, i64)> {
    let e = core.store.execution_any(id).await.ok().flatten()?;
    let t = core
        .quotas
        .tenant(&core.store, &e.tenant_id)
        .await
        .ok()
        .flatten()?;
    Some((
        e.tenant_id,
        crate::quotas::plans::limits_of(&t).concurrent_executions,
    ))
}

struct Run {
    checked: Mutex<Instant>,
    core: Arc<Core>,
    exe: ExecutionRow,
    records: Mutex<HashMap<String, StepRow>>,
    seq: AtomicI64,
    partial: AtomicBool,
    connections: Mutex<HashMap<String, String>>,
    depth: u32,
}

fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
}

/// How much of each step's input and output a finished execution keeps in
/// its trace, unless its orchestration says otherwise (`trace.payload_bytes`).
pub const DEFAULT_TRACE_PAYLOAD: usize = 256 * 1024;

/// `text` cut to `limit` bytes with a marker saying so, or as it is.
pub fn clipped(text: &str, limit: usize) -> Option<String> {
    if text.len() <= limit {
        return None;
    }
    let mut end = limit.saturating_sub(256).max(64).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(
        json!({"truncated": true, "bytes": text.len(), "kept_bytes": end, "preview": &text[..end]})
            .to_string(),
    )
}

fn stored(v: &Value) -> String {
    let text = v.to_string();
    if text.len() <= MAX_STORED_OUTPUT {
        text
    } else {
        json!({"truncated": true, "bytes": text.len(),
               "preview": text.chars().take(1024).collect::<String>()})
        .to_string()
    }
}

/// Runs (or resumes) one execution to its end.
pub async fn execute(core: &Arc<Core>, id: &str, depth: u32) -> Option<ExecutionRow> {
    let exe = match core.store.execution_any(id).await {
        Ok(Some(e)) => e,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(execution = id, "cannot load: {e}");
            return None;
        }
    };
    if exe.status.is_finished() {
        return Some(exe);
    }
    let now = now_unix();
    core.metrics.execution_started(&exe.trigger_type);
    if exe.status != ExecutionStatus::Running {
        // (A claimed execution is `running` already: no second write.)
        let _ = core
            .store
            .update_execution(id, ExecutionStatus::Running, None, None, now)
            .await;
    }
    let definition: Value = match core
        .store
        .orchestration_version(&exe.orchestration_id, exe.version)
        .await
    {
        Ok(Some(v)) => serde_json::from_str(&v.definition).unwrap_or(Value::Null),
        _ => {
            let err = json!({"class": ErrorClass::Internal, "message": "the orchestration version is gone"});
            let _ = core
                .store
                .update_execution(
                    id,
                    ExecutionStatus::Failed,
                    None,
                    Some(&err.to_string()),
                    now_unix(),
                )
                .await;
            return core.store.execution_any(id).await.ok().flatten();
        }
    };
    let records: HashMap<String, StepRow> = core
        .store
        .step_records(id)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.path.clone(), r))
        .collect();
    let seq = records.values().map(|r| r.seq).max().unwrap_or(0);
    let run = Arc::new(Run {
        checked: Mutex::new(Instant::now()),
        core: core.clone(),
        records: Mutex::new(records),
        seq: AtomicI64::new(seq),
        partial: AtomicBool::new(false),
        connections: Mutex::new(HashMap::new()),
        depth,
        exe: exe.clone(),
    });
    let mut scope = json!({
        "params": serde_json::from_str::<Value>(&exe.parameters).unwrap_or(Value::Null),
        "steps": {},
        "ctx": {"execution_id": exe.id, "orchestration_id": exe.orchestration_id, "tenant_id": exe.tenant_id,
                "version": exe.version, "started_at": dibop_runtime::support::rfc3339(exe.started_at.unwrap_or(now))},
    });
    let steps = definition["steps"].as_array().cloned().unwrap_or_default();
    let mut outcome = steps_in(&run, steps, "steps".into(), String::new(), &mut scope).await;
    if let Err(e) = &outcome
        && e.class != ErrorClass::Cancelled
    {
        match &definition["on_error"] {
            Value::String(s) if s == "continue" => {
                run.partial.store(true, Ordering::SeqCst);
                outcome = Ok(json!({"error": e}));
            }
            Value::Object(h) => {
                scope["error"] = json!(e);
                let handler = h
                    .get("steps")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let first = e.clone();
                match steps_in(
                    &run,
                    handler,
                    "on_error.steps".into(),
                    String::new(),
                    &mut scope,
                )
                .await
                {
                    Ok(v) => {
                        run.partial.store(true, Ordering::SeqCst);
                        outcome = Ok(json!({"error": first, "handled": v}));
                    }
                    Err(e2) => outcome = Err(e2),
                }
            }
            _ => {}
        }
    }
    let (status, output, error) = match &outcome {
        Ok(v) if run.partial.load(Ordering::SeqCst) => {
            (ExecutionStatus::PartiallySucceeded, Some(stored(v)), None)
        }
        Ok(v) => (ExecutionStatus::Succeeded, Some(stored(v)), None),
        Err(e) if e.class == ErrorClass::Cancelled => {
            (ExecutionStatus::Cancelled, None, Some(json!(e).to_string()))
        }
        Err(e) => (ExecutionStatus::Failed, None, Some(json!(e).to_string())),
    };
    let _ = core
        .store
        .update_execution(id, status, output.as_deref(), error.as_deref(), now_unix())
        .await;
    core.metrics.execution_finished(
        status.as_str(),
        (now_unix() - exe.started_at.unwrap_or(now)).max(0) as f64,
    );
    // A re-run that succeeded settles the failed execution it re-ran.
    if status.succeeded()
        && let Some(original) = &exe.rerun_of
        && let Err(e) = core
            .store
            .close_dead_letter(&exe.tenant_id, original, "resolved")
            .await
    {
        tracing::warn!(
            execution = id,
            "cannot close the dead letter of {original}: {e}"
        );
    }
    // Traces of ended executions keep at most the payload limit per step.
    // Failed ones keep everything until replayed or discarded: a re-run from
    // the failed step reads the earlier steps' full outputs.
    if matches!(
        status,
        ExecutionStatus::Succeeded | ExecutionStatus::Cancelled
    ) {
        let limit = definition["trace"]["payload_bytes"]
            .as_u64()
            .map_or(DEFAULT_TRACE_PAYLOAD, |n| n as usize);
        if let Err(e) = core.store.clip_step_payloads(id, limit, clipped).await {
            tracing::warn!(execution = id, "cannot apply the trace payload limit: {e}");
        }
    }
    core.store.execution_any(id).await.ok().flatten()
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs a list of steps on a copy of the scope; (last output, scope after).
fn run_steps(
    run: Arc<Run>,
    steps: Vec<Value>,
    base: String,
    suffix: String,
    mut local: Value,
) -> BoxFuture<Result<(Value, Value), StepError>> {
    Box::pin(async move {
        let mut last = Value::Null;
        for (i, step) in steps.iter().enumerate() {
            let path = format!("{base}[{i}]{suffix}");
            match run_step(&run, step, &path, &mut local).await {
                Ok(out) => last = out,
                Err(e) => {
                    // A cancelled execution's trace ends where it was cancelled.
                    if e.class != ErrorClass::Cancelled {
                        let reason = format!("not run: step `{}` failed before it", e.step);
                        skip(&run, &steps, i + 1, &base, &suffix, &reason).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok((last, local))
    })
}

/// Records `steps[from..]` (at `{base}[i]{suffix}`) as skipped, with why.
async fn skip(
    run: &Arc<Run>,
    steps: &[Value],
    from: usize,
    base: &str,
    suffix: &str,
    reason: &str,
) {
    let now = now_unix();
    let rows: Vec<StepRow> = steps
        .iter()
        .enumerate()
        .skip(from)
        .map(|(i, step)| {
            let id = step["id"].as_str().unwrap_or_default();
            StepRow {
                execution_id: run.exe.id.clone(),
                path: format!("{base}[{i}]{suffix}"),
                seq: run.seq.fetch_add(1, Ordering::SeqCst) + 1,
                step_id: id.to_owned(),
                step_type: step["type"].as_str().unwrap_or_default().to_owned(),
                status: "skipped".into(),
                input: None,
                output: None,
                error: Some(
                    json!({"class": ErrorClass::Skipped, "message": reason, "step": id})
                        .to_string(),
                ),
                attempts: 0,
                started_at: now,
                finished_at: Some(now),
                duration_ms: Some(0),
            }
        })
        .collect();
    if let Err(e) = run.core.store.skip_steps(&rows).await {
        tracing::warn!(execution = %run.exe.id, "cannot record skipped steps: {e}");
    }
}

/// Runs steps and writes the resulting scope back; the last output.
async fn steps_in(
    run: &Arc<Run>,
    steps: Vec<Value>,
    base: String,
    suffix: String,
    scope: &mut Value,
) -> Result<Value, StepError> {
    let (last, after) = run_steps(run.clone(), steps, base, suffix, scope.clone()).await?;
    *scope = after;
    Ok(last)
}

fn retry_policy(step: &Value) -> (u32, Duration, f64, Duration, Vec<ErrorClass>) {
    let r = &step["retry"];
    (
        r["max_attempts"].as_u64().unwrap_or(1).clamp(1, 20) as u32,
        Duration::from_millis(r["initial_interval_ms"].as_u64().unwrap_or(200)),
        r["backoff_coefficient"]
            .as_f64()
            .unwrap_or(2.0)
            .clamp(1.0, 10.0),
        Duration::from_millis(r["max_interval_ms"].as_u64().unwrap_or(30_000)),
        r["non_retryable"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str()?.parse().ok())
            .collect(),
    )
}

async fn run_step(
    run: &Arc<Run>,
    step: &Value,
    path: &str,
    scope: &mut Value,
) -> Result<Value, StepError> {
    let id = step["id"].as_str().unwrap_or_default().to_owned();
    // Definitions are validated before they are stored: an unknown kind here
    // is a definition stored by a newer release.
    let kind: StepKind = match step["type"].as_str().unwrap_or_default().parse() {
        Ok(kind) => kind,
        Err(unknown) => {
            return Err(StepError::new(
                ErrorClass::Internal,
                unknown.to_string(),
                &id,
            ));
        }
    };
    let done = run
        .records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(path)
        .filter(|r| r.status == "succeeded")
        .and_then(|r| r.output.clone());
    if let Some(output) = done {
        let v: Value = serde_json::from_str(&output).unwrap_or(Value::Null);
        if kind.maps() && v["dead_letters"].as_array().is_some_and(|d| !d.is_empty()) {
            run.partial.store(true, Ordering::SeqCst);
        }
        scope["steps"][&id] = v.clone();
        return Ok(v);
    }
    if run.cancelled().await {
        return Err(StepError::new(
            ErrorClass::Cancelled,
            "the execution was cancelled",
            &id,
        ));
    }
    let (max, initial, coefficient, cap, never) = retry_policy(step);
    let seq = run.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let mut attempt = 0u32;
    let result = loop {
        attempt += 1;
        let started = Instant::now();
        // A delay's end is durable: resumed after a restart, it waits only
        // what is left.
        let input = (kind == StepKind::Delay).then(|| {
            let ms = step["ms"].as_u64().unwrap_or(0) as i64;
            let until =
                delay_end(run, path).unwrap_or_else(|| crate::support::clock::now_ms() + ms);
            json!({"ms": ms, "until_ms": until}).to_string()
        });
        let record = StepRow {
            execution_id: run.exe.id.clone(),
            path: path.to_owned(),
            seq,
            step_id: id.clone(),
            step_type: kind.as_str().to_owned(),
            status: "running".into(),
            input: input.clone(),
            output: None,
            error: None,
            attempts: i64::from(attempt),
            started_at: now_unix(),
            finished_at: None,
            duration_ms: None,
        };
        if let Err(e) = run.core.store.start_step(&record).await {
            break Err(StepError::new(
                ErrorClass::Internal,
                format!("cannot record the step: {e}"),
                &id,
            ));
        }
        if input.is_some() {
            run.records
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(path.to_owned(), record.clone());
        }
        let (input, outcome) = exec_step(run, step, kind, &id, path, scope).await;
        let ms = started.elapsed().as_millis() as i64;
        run.core
            .metrics
            .step_finished(kind, outcome.is_ok(), started.elapsed().as_secs_f64());
        let input_text = input.as_ref().map(stored);
        match outcome {
            Ok(out) => {
                let text = stored(&out);
                let _ = run
                    .core
                    .store
                    .finish_step(
                        &run.exe.id,
                        path,
                        "succeeded",
                        input_text.as_deref(),
                        Some(&text),
                        None,
                        i64::from(attempt),
                        now_unix(),
                        ms,
                    )
                    .await;
                break Ok(out);
            }
            Err(e) => {
                let retryable = attempt < max && !never.contains(&e.class) && e.class.may_retry();
                // With `on_error: continue` the step's output is its error.
                let continued = (!retryable && step["on_error"] == "continue")
                    .then(|| stored(&json!({"error": e})));
                let _ = run
                    .core
                    .store
                    .finish_step(
                        &run.exe.id,
                        path,
                        "failed",
                        input_text.as_deref(),
                        continued.as_deref(),
                        Some(&json!(e).to_string()),
                        i64::from(attempt),
                        now_unix(),
                        ms,
                    )
                    .await;
                if !retryable {
                    break Err(e);
                }
                let pause = initial
                    .mul_f64(coefficient.powi(attempt as i32 - 1))
                    .min(cap);
                tokio::time::sleep(pause).await;
            }
        }
    };
    match result {
        Ok(out) => {
            scope["steps"][&id] = out.clone();
            Ok(out)
        }
        Err(e) => match &step["on_error"] {
            Value::String(s) if s == "continue" => {
                run.partial.store(true, Ordering::SeqCst);
                let out = json!({"error": e});
                scope["steps"][&id] = out.clone();
                Ok(out)
            }
            Value::Object(h) if e.class != ErrorClass::Cancelled => {
                scope["error"] = json!(e);
                let handler = h
                    .get("steps")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let out = steps_in(
                    run,
                    handler,
                    format!("{path}.on_error.steps"),
                    String::new(),
                    scope,
                )
                .await?;
                run.partial.store(true, Ordering::SeqCst);
                scope["steps"][&id] = out.clone();
                Ok(out)
            }
            _ => Err(e),
        },
    }
}

/// When the delay step at `path` ends, as recorded when it started (Unix ms).
fn delay_end(run: &Run, path: &str) -> Option<i64> {
    run.records
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(path)
        .and_then(|r| r.input.as_deref())
        .and_then(|i| serde_json::from_str::<Value>(i).ok())
        .and_then(|v| v["until_ms"].as_i64())
}

/// Renders step values: strings are templates, `{"expr": …}` expressions.
async fn render(run: &Arc<Run>, v: &Value, scope: &Value) -> Result<Value, String> {
    match v {
        Value::String(s) => {
            // A template that is exactly one expression keeps the value's type.
            let trimmed = s.trim();
            if trimmed.starts_with("{{")
                && trimmed.ends_with("}}")
                && trimmed.matches("{{").count() == 1
            {
                let code = &trimmed[2..trimmed.len() - 2];
                return run.core.expressions.eval_one(code.trim(), scope).await;
            }
            crate::expr::render(&run.core.expressions, s, scope)
                .await
                .map(Value::String)
        }
        Value::Object(o) if o.len() == 1 && o.contains_key("expr") => {
            run.core
                .expressions
                .eval_one(o["expr"].as_str().unwrap_or("null"), scope)
                .await
        }
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                out.insert(k.clone(), Box::pin(render(run, v, scope)).await?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(a) => {
            let mut out = Vec::new();
            for v in a {
                out.push(Box::pin(render(run, v, scope)).await?);
            }
            Ok(Value::Array(out))
        }
        other => Ok(other.clone()),
    }
}

async fn exec_step(
    run: &Arc<Run>,
    step: &Value,
    kind: StepKind,
    id: &str,
    path: &str,
    scope: &mut Value,
) -> (Option<Value>, Result<Value, StepError>) {
    let expr_err = |e: String| StepError::new(ErrorClass::ExpressionError, e, id);
    match kind {
        StepKind::Transform => {
            let code = step["expression"].as_str().unwrap_or(".");
            (
                Some(json!(code)),
                run.core
                    .expressions
                    .eval_one(code, scope)
                    .await
                    .map_err(expr_err),
            )
        }
        StepKind::Set => match render(run, &step["values"], scope).await {
            Ok(v) => (Some(v.clone()), Ok(v)),
            Err(e) => (None, Err(expr_err(e))),
        },
        StepKind::Fail => {
            let message = crate::expr::render(
                &run.core.expressions,
                step["message"].as_str().unwrap_or("failed"),
                scope,
            )
            .await
            .unwrap_or_else(|e| e);
            (
                Some(json!(message)),
                Err(StepError::new(ErrorClass::Failed, message, id)),
            )
        }
        StepKind::Delay => {
            let ms = step["ms"].as_u64().unwrap_or(0);
            let until =
                delay_end(run, path).unwrap_or_else(|| crate::support::clock::now_ms() + ms as i64);
            let left = (until - crate::support::clock::now_ms()).max(0) as u64;
            tokio::time::sleep(Duration::from_millis(left)).await;
            let input = json!({"ms": ms, "until_ms": until});
            (Some(input), Ok(json!({"ms": ms})))
        }
        StepKind::Branch => {
            let (chosen, label) = if let Some(cond) = step["if"].as_str() {
                match run.core.expressions.eval_one(cond, scope).await {
                    Ok(v) if truthy(&v) => (step["then"].clone(), "then".to_owned()),
                    Ok(_) => (
                        step.get("else").cloned().unwrap_or(json!([])),
                        "else".to_owned(),
                    ),
                    Err(e) => return (Some(json!(cond)), Err(expr_err(e))),
                }
            } else {
                let on = step["switch"].as_str().unwrap_or("null");
                match run.core.expressions.eval_one(on, scope).await {
                    Ok(v) => {
                        let key = v
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string());
                        match step["cases"].get(&key) {
                            Some(steps) => (steps.clone(), format!("cases.{key}")),
                            None => (
                                step.get("default").cloned().unwrap_or(json!([])),
                                "default".to_owned(),
                            ),
                        }
                    }
                    Err(e) => return (Some(json!(on)), Err(expr_err(e))),
                }
            };
            // The branches not taken are in the trace too, as skipped.
            let mut others: Vec<(String, &Value)> = Vec::new();
            if step.get("if").is_some() {
                others.push(("then".into(), &step["then"]));
                others.push(("else".into(), &step["else"]));
            } else {
                if let Some(cases) = step["cases"].as_object() {
                    others.extend(cases.iter().map(|(k, v)| (format!("cases.{k}"), v)));
                }
                others.push(("default".into(), &step["default"]));
            }
            for (other, steps) in others {
                if other != label
                    && let Some(steps) = steps.as_array()
                {
                    let reason = format!("not run: the branch took `{label}`");
                    skip(run, steps, 0, &format!("{path}.{other}"), "", &reason).await;
                }
            }
            let steps = chosen.as_array().cloned().unwrap_or_default();
            let out = steps_in(run, steps, format!("{path}.{label}"), String::new(), scope).await;
            (
                Some(json!({"branch": label})),
                out.map(|o| json!({"branch": label, "output": o})),
            )
        }
        StepKind::Foreach => {
            let code = step["items"].as_str().unwrap_or("[]");
            let items = match run.core.expressions.eval_one(code, scope).await {
                Ok(Value::Array(a)) => a,
                Ok(other) => {
                    return (
                        Some(json!(code)),
                        Err(expr_err(format!("`{code}` gave {other}, not a list"))),
                    );
                }
                Err(e) => return (Some(json!(code)), Err(expr_err(e))),
            };
            let max = step["max_items"].as_u64().unwrap_or(1000) as usize;
            if items.len() > max {
                return (
                    Some(json!({"items": items.len()})),
                    Err(StepError::new(
                        ErrorClass::InvalidRequest,
                        format!("{} items exceed max_items {max}", items.len()),
                        id,
                    )),
                );
            }
            let children = step["steps"].as_array().cloned().unwrap_or_default();
            let parallel = step["mode"] == "parallel";
            let concurrency = step["concurrency"].as_u64().unwrap_or(4).clamp(1, 64) as usize;
            let mut outputs = Vec::with_capacity(items.len());
            if parallel {
                let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
                let mut tasks = tokio::task::JoinSet::new();
                for (k, item) in items.iter().enumerate() {
                    let (run, children, limit) = (run.clone(), children.clone(), limit.clone());
                    let mut local = scope.clone();
                    local["item"] = item.clone();
                    let base = format!("{path}.steps");
                    tasks.spawn(async move {
                        let _permit = limit.acquire().await;
                        (
                            k,
                            steps_in(&run, children, base, format!("#{k}"), &mut local).await,
                        )
                    });
                }
                let mut results: Vec<(usize, Result<Value, StepError>)> = Vec::new();
                while let Some(r) = tasks.join_next().await {
                    if let Ok(r) = r {
                        results.push(r);
                    }
                }
                results.sort_by_key(|(k, _)| *k);
                for (_, r) in results {
                    match r {
                        Ok(v) => outputs.push(v),
                        Err(e) => return (Some(json!({"items": items.len()})), Err(e)),
                    }
                }
            } else {
                for (k, item) in items.iter().enumerate() {
                    scope["item"] = item.clone();
                    match steps_in(
                        run,
                        children.clone(),
                        format!("{path}.steps"),
                        format!("#{k}"),
                        scope,
                    )
                    .await
                    {
                        Ok(v) => outputs.push(v),
                        Err(e) => return (Some(json!({"items": items.len()})), Err(e)),
                    }
                }
                if let Some(o) = scope.as_object_mut() {
                    o.remove("item");
                }
            }
            (
                Some(json!({"items": items.len()})),
                Ok(Value::Array(outputs)),
            )
        }
        StepKind::Parallel => {
            let branches = step["branches"].as_array().cloned().unwrap_or_default();
            let mut tasks = tokio::task::JoinSet::new();
            for (b, branch) in branches.into_iter().enumerate() {
                let run = run.clone();
                let mut local = scope.clone();
                let base = format!("{path}.branches[{b}]");
                tasks.spawn(async move {
                    let steps = branch.as_array().cloned().unwrap_or_default();
                    let out = steps_in(&run, steps, base, String::new(), &mut local).await;
                    (b, out, local)
                });
            }
            let mut results = Vec::new();
            while let Some(r) = tasks.join_next().await {
                if let Ok(r) = r {
                    results.push(r);
                }
            }
            results.sort_by_key(|(b, _, _)| *b);
            let mut outputs = Vec::new();
            for (_, r, local) in results {
                match r {
                    Ok(v) => {
                        // Later steps see every branch's step outputs.
                        if let (Some(dst), Some(src)) =
                            (scope["steps"].as_object_mut(), local["steps"].as_object())
                        {
                            for (k, v) in src {
                                dst.insert(k.clone(), v.clone());
                            }
                        }
                        outputs.push(v);
                    }
                    Err(e) => return (None, Err(e)),
                }
            }
            (None, Ok(Value::Array(outputs)))
        }
        StepKind::Call => call_step(run, step, id, path, scope).await,
        StepKind::MapToCdm | StepKind::MapFromCdm => {
            map_step(run, step, kind, id, path, scope).await
        }
        StepKind::CallOrchestration => sub_orchestration(run, step, id, scope).await,
    }
}

/// The active connection a step names (by name or id), opened.
async fn step_connection(
    run: &Arc<Run>,
    name: &str,
    id: &str,
) -> Result<Arc<crate::connections::execute::Resolved>, StepError> {
    let cached = run
        .connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned();
    let connection_id = match cached {
        Some(c) => c,
        None => {
            let found = run
                .core
                .store
                .list_connections(&run.exe.tenant_id, None, 10_000)
                .await
                .ok()
                .and_then(|list| list.into_iter().find(|c| c.name == name || c.id == name));
            match found {
                Some(c) => {
                    run.connections
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.to_owned(), c.id.clone());
                    c.id
                }
                None => {
                    return Err(StepError::new(
                        ErrorClass::InvalidRequest,
                        format!("no connection named `{name}`"),
                        id,
                    ));
                }
            }
        }
    };
    let resolved =
        crate::connections::execute::resolve_cached(&run.core, &run.exe.tenant_id, &connection_id)
            .await
            .map_err(|_| {
                StepError::new(
                    ErrorClass::InvalidRequest,
                    format!("connection `{name}` is gone"),
                    id,
                )
            })?;
    if resolved.row.status != "active" {
        return Err(StepError::new(
            ErrorClass::InvalidRequest,
            format!("connection `{name}` is inactive"),
            id,
        ));
    }
    Ok(resolved)
}

/// `map_to_cdm` / `map_from_cdm`: a connection's mapping of an operation
/// applied to the value of `from`; records that break the domain's schema
/// go to the dead-letter queue (default), fail the step, or are skipped.
async fn map_step(
    run: &Arc<Run>,
    step: &Value,
    kind: StepKind,
    id: &str,
    path: &str,
    scope: &Value,
) -> (Option<Value>, Result<Value, StepError>) {
    let name = step["connection"].as_str().unwrap_or_default();
    let operation = step["operation"].as_str().unwrap_or_default();
    let from = step["from"].as_str().unwrap_or(".");
    let inbound = kind == StepKind::MapToCdm;
    let input = json!({"connection": name, "operation": operation, "from": from,
                       "direction": if inbound { "inbound" } else { "outbound" }});
    let resolved = match step_connection(run, name, id).await {
        Ok(r) => r,
        Err(e) => return (Some(input), Err(e)),
    };
    let mapping = resolved
        .definition
        .mappings
        .get(operation)
        .cloned()
        .unwrap_or(Value::Null);
    let mapping = &mapping;
    if !mapping.is_object() {
        return (
            Some(input),
            Err(StepError::new(
                ErrorClass::InvalidRequest,
                format!("the connector of `{name}` maps no operation `{operation}` to the CDM"),
                id,
            )),
        );
    }
    let value = match run.core.expressions.eval_one(from, scope).await {
        Ok(v) => v,
        Err(e) => {
            return (
                Some(input),
                Err(StepError::new(ErrorClass::ExpressionError, e, id)),
            );
        }
    };
    let ev = &run.core.expressions;
    let mapped = if inbound {
        crate::cdm::mapping::to_cdm(ev, mapping, &value).await
    } else {
        crate::cdm::mapping::from_cdm(ev, mapping, &value).await
    };
    let mapped = match mapped {
        Ok(m) => m,
        Err(e) => {
            return (
                Some(input),
                Err(StepError::new(ErrorClass::ExpressionError, e, id)),
            );
        }
    };
    let domain = mapped.domain.name.as_str();
    let mut dead_letters = Vec::new();
    if !mapped.invalid.is_empty() {
        match step["on_invalid"].as_str().unwrap_or("dead_letter") {
            "fail" => {
                let first = &mapped.invalid[0];
                return (
                    Some(input),
                    Err(StepError::new(
                        ErrorClass::ValidationError,
                        format!(
                            "{} record(s) are not valid {domain} records; record {}: {}",
                            mapped.invalid.len(),
                            first.index,
                            crate::cdm::mapping::describe(&first.problems)
                        ),
                        id,
                    )),
                );
            }
            "skip" => {}
            _ => {
                for bad in &mapped.invalid {
                    let digest = aws_lc_rs::digest::digest(
                        &aws_lc_rs::digest::SHA256,
                        format!("{}\n{path}\n{}", run.exe.id, bad.index).as_bytes(),
                    );
                    let item = crate::store::DeadLetterItem {
                        id: format!("dli_{}", &hex::encode(digest.as_ref())[..24]),
                        tenant_id: run.exe.tenant_id.clone(),
                        execution_id: run.exe.id.clone(),
                        orchestration_id: run.exe.orchestration_id.clone(),
                        step_path: path.to_owned(),
                        domain: domain.to_owned(),
                        direction: if inbound { "inbound" } else { "outbound" }.into(),
                        record: bad.record.to_string(),
                        problems: json!(bad.problems).to_string(),
                        status: "open".into(),
                        created_at: now_unix(),
                        replay_execution_id: None,
                    };
                    if let Err(e) = run.core.store.add_dead_letter_item(&item).await {
                        return (
                            Some(input),
                            Err(StepError::new(
                                ErrorClass::Internal,
                                format!("cannot store an invalid record: {e}"),
                                id,
                            )),
                        );
                    }
                    dead_letters.push(item.id);
                }
            }
        }
    }
    if !dead_letters.is_empty() {
        // Records set aside: the execution is a partial success at best.
        run.partial.store(true, Ordering::SeqCst);
    }
    let mut output = json!({
        "domain": domain,
        "count": mapped.records.len(),
        "invalid": mapped.invalid.len(),
        "dead_letters": dead_letters,
    });
    if !inbound && value.is_object() {
        output["record"] = mapped.records.first().cloned().unwrap_or(Value::Null);
    }
    output["records"] = Value::Array(mapped.records);
    (Some(input), Ok(output))
}

/// The idempotency key of a call step in an execution: the same for every
/// attempt and after a restart, different for each foreach item and re-run.
pub fn idempotency_key(execution_id: &str, path: &str) -> String {
    format!("{execution_id}.{path}")
}

async fn call_step(
    run: &Arc<Run>,
    step: &Value,
    id: &str,
    path: &str,
    scope: &Value,
) -> (Option<Value>, Result<Value, StepError>) {
    let name = step["connection"].as_str().unwrap_or_default();
    let operation = step["operation"].as_str().unwrap_or_default();
    let params = match render(run, step.get("parameters").unwrap_or(&json!({})), scope).await {
        Ok(p) => p,
        Err(e) => {
            return (
                None,
                Err(StepError::new(ErrorClass::ExpressionError, e, id)),
            );
        }
    };
    let input = json!({"connection": name, "operation": operation, "parameters": params});
    let resolved = match step_connection(run, name, id).await {
        Ok(r) => r,
        Err(e) => return (Some(input), Err(e)),
    };
    let Some(op) = resolved.operation(operation).cloned() else {
        return (
            Some(input),
            Err(StepError::new(
                ErrorClass::InvalidRequest,
                format!("connection `{name}` has no operation `{operation}`"),
                id,
            )),
        );
    };
    let params_map = params.as_object().cloned().unwrap_or_default();
    let mut request =
        match crate::connections::execute::prepare(&run.core, &resolved, &op, &params_map).await {
            Ok(r) => r,
            Err(why) => {
                return (
                    Some(input),
                    Err(StepError::new(why.class(), why.describe(), id)),
                );
            }
        };
    if let Some(t) = step["timeout_ms"].as_u64() {
        request.call.timeout_ms = t.min(u64::from(u32::MAX)) as u32;
    }
    let mut input = input;
    if let Some(header) = resolved.idempotency_header()
        && let Some(slot) = request
            .call
            .headers
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(header))
    {
        let key = idempotency_key(&run.exe.id, path);
        slot.1 = key.clone();
        input["idempotency_key"] = Value::String(key);
    }
    // The engine retries by its own policy: one try per attempt here.
    request.retry.max_attempts = 1;
    // Calls of orchestrations count against the tenant's monthly quota too.
    if let Ok(Some(tenant)) = run
        .core
        .quotas
        .tenant(&run.core.store, &run.exe.tenant_id)
        .await
        && let Err(e) = run.core.quotas.take_call(&run.core.store, &tenant).await
    {
        return (
            Some(input),
            Err(StepError::new(ErrorClass::RateLimited, e.to_string(), id)),
        );
    }
    let actor = format!("execution:{}", run.exe.id);
    // A call for a relay group with no agent online waits for one (after a
    // restart, agents take a few seconds to reconnect), up to `agent_wait`.
    let group = match (
        resolved.row.execution_mode.as_str(),
        &resolved.row.agent_group_id,
    ) {
        ("agent_group", Some(g)) => Some(g.clone()),
        _ => None,
    };
    let until = Instant::now() + run.core.settings.agent_wait;
    let (out, ran_on, elapsed) = loop {
        if let Some(group) = &group
            && run.core.registry.online_in_group(group) == 0
            && let Err(e) = wait_for_agent(run, group, path, id, until).await
        {
            return (Some(input), Err(e));
        }
        let (out, ran_on, elapsed) = crate::connections::execute::run(
            &run.core,
            &resolved,
            operation,
            request.clone(),
            &actor,
            true,
        )
        .await;
        // Not delivered to any agent (attempts 0): safe to wait and send again.
        let undelivered = out.result.attempts == 0
            && out
                .result
                .error
                .as_ref()
                .is_some_and(|e| e.class == dibop_protocol::ErrorClass::AgentUnavailable);
        if let Some(group) = &group
            && undelivered
            && Instant::now() < until
        {
            // Agents online that could not take it (too old a release, or
            // all lost at once): look again shortly, not in a tight loop.
            if run.core.registry.online_in_group(group) > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            continue;
        }
        break (out, ran_on, elapsed);
    };
    let r = &out.result;
    let response = match &r.body {
        dibop_protocol::ResponseBody::Json(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        dibop_protocol::ResponseBody::Text(t) => Value::String(t.clone()),
        _ => Value::Null,
    };
    let headers: Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let output = json!({"status_code": r.status, "headers": headers, "response": response,
                        "duration_ms": elapsed.as_millis() as u64, "ok": r.ok, "ran_on": ran_on});
    match &r.error {
        None if r.ok => (Some(input), Ok(output)),
        Some(e) => (
            Some(input),
            Err(StepError::new(e.class, e.message.clone(), id)),
        ),
        None => (
            Some(input),
            Err(StepError::new(
                ErrorClass::UpstreamError,
                "the call failed",
                id,
            )),
        ),
    }
}

/// Waits for an agent of `group` to come online, the step marked `waiting`
/// meanwhile and its worker slot lent to other executions; fails
/// `agent_unavailable` at `until`, `cancelled` when the execution is.
async fn wait_for_agent(
    run: &Arc<Run>,
    group: &str,
    path: &str,
    id: &str,
    until: Instant,
) -> Result<(), StepError> {
    let store = &run.core.store;
    let wait_secs = run.core.settings.agent_wait.as_secs();
    let why = json!({"class": ErrorClass::AgentUnavailable, "step": id, "message": format!(
        "waiting for an agent of relay group {group} to come online (at most {wait_secs} s from the step's start)"
    )});
    let _ = store
        .set_step_waiting(&run.exe.id, path, Some(&why.to_string()))
        .await;
    let workers = run.core.engine.workers.clone();
    workers.add_permits(1);
    let outcome = loop {
        let tick = (Instant::now() + Duration::from_secs(1)).min(until);
        if run.core.registry.wait_for_group(group, tick).await {
            break Ok(());
        }
        if run.cancelled().await {
            break Err(StepError::new(
                ErrorClass::Cancelled,
                "the execution was cancelled",
                id,
            ));
        }
        if Instant::now() >= until {
            break Err(StepError::new(
                ErrorClass::AgentUnavailable,
                format!(
                    "no agent of relay group {group} came online within {wait_secs} s: check that \
                     dibop-agent runs at the site and can reach the control plane"
                ),
                id,
            ));
        }
    };
    // Take a worker slot back before running on.
    if let Ok(permit) = workers.acquire().await {
        permit.forget();
    }
    let _ = store.set_step_waiting(&run.exe.id, path, None).await;
    outcome
}

async fn sub_orchestration(
    run: &Arc<Run>,
    step: &Value,
    id: &str,
    scope: &Value,
) -> (Option<Value>, Result<Value, StepError>) {
    if run.depth >= MAX_DEPTH {
        return (
            None,
            Err(StepError::new(
                ErrorClass::InvalidRequest,
                format!("orchestrations nest deeper than {MAX_DEPTH}"),
                id,
            )),
        );
    }
    let target = step["orchestration"].as_str().unwrap_or_default();
    let params = match render(run, step.get("parameters").unwrap_or(&json!({})), scope).await {
        Ok(p) => p,
        Err(e) => {
            return (
                None,
                Err(StepError::new(ErrorClass::ExpressionError, e, id)),
            );
        }
    };
    let found = match run
        .core
        .store
        .list_orchestrations(&run.exe.tenant_id, None, 10_000)
        .await
    {
        Ok(list) => list
            .into_iter()
            .find(|o| o.id == target || o.name == target),
        Err(e) => {
            return (
                None,
                Err(StepError::new(ErrorClass::Internal, e.to_string(), id)),
            );
        }
    };
    let Some(o) = found else {
        return (
            Some(params),
            Err(StepError::new(
                ErrorClass::InvalidRequest,
                format!("no orchestration `{target}`"),
                id,
            )),
        );
    };
    let child = ExecutionRow {
        id: format!("{}_{}", run.exe.id, id),
        ..ExecutionRow::queued(
            &o,
            params.to_string(),
            "orchestration",
            format!("execution:{}", run.exe.id),
        )
    };
    // Resuming: the child may exist already.
    if run
        .core
        .store
        .execution_any(&child.id)
        .await
        .ok()
        .flatten()
        .is_none()
        && let Err(e) = run.core.store.create_execution(&child).await
    {
        return (
            Some(params),
            Err(StepError::new(ErrorClass::Internal, e.to_string(), id)),
        );
    }
    let ended = Box::pin(execute(&run.core, &child.id, run.depth + 1)).await;
    let input = json!({"orchestration": o.id, "execution_id": child.id, "parameters": params});
    match ended {
        Some(e) if e.status.succeeded() => (
            Some(input),
            Ok(json!({"execution_id": e.id, "status": e.status,
                      "output": e.output.and_then(|o| serde_json::from_str::<Value>(&o).ok())})),
        ),
        Some(e) => (
            Some(input),
            Err(StepError::new(
                ErrorClass::Failed,
                format!("sub-orchestration {} ended {}", o.name, e.status),
                id,
            )),
        ),
        None => (
            Some(input),
            Err(StepError::new(
                ErrorClass::Internal,
                "the sub-execution is gone",
                id,
            )),
        ),
    }
}

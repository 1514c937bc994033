//! Schedule triggers: active orchestrations whose trigger is a crontab
//! schedule start an execution at each firing time, in their time zone.
//!
//! Every second the scheduler looks at the active scheduled orchestrations.
//! A firing is claimed by moving the schedule's `next_fire_at` forward with a
//! conditional update, so with several control planes each firing starts
//! one execution. Overlap policy: `skip` (default) starts nothing while an
//! execution of the orchestration is queued or running; `queue` allows one
//! waiting execution.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::Core;
use crate::store::{ExecutionRow, now_unix};

/// Checks schedules every second until shutdown.
pub async fn run(core: Arc<Core>, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = fire_due(&core, now_unix()).await {
                    tracing::warn!("scheduler: {e}");
                }
            }
        }
    }
}

/// Fires every schedule due at `now`; returns the executions started.
pub async fn fire_due(core: &Arc<Core>, now: i64) -> anyhow::Result<Vec<String>> {
    let mut started = Vec::new();
    for o in core.store.active_orchestrations().await? {
        let Some(v) = core
            .store
            .orchestration_version(&o.id, o.latest_version)
            .await?
        else {
            continue;
        };
        let definition: Value = serde_json::from_str(&v.definition).unwrap_or(Value::Null);
        let trigger = &definition["trigger"];
        if trigger["type"] != "schedule" {
            continue;
        }
        let cron = trigger["cron"].as_str().unwrap_or_default();
        let Ok(schedule) = crate::orchestration::cron::Schedule::parse(cron) else {
            continue;
        };
        let tz = trigger["timezone"]
            .as_str()
            .and_then(crate::orchestration::cron::zone)
            .unwrap_or(jiff::tz::TimeZone::UTC);
        let next_after = |t: i64| {
            jiff::Timestamp::from_second(t)
                .ok()
                .and_then(|ts| schedule.next_after(ts, &tz))
                .map(|n| n.as_second())
        };
        let state = core.store.schedule(&o.id).await?;
        let due = match state {
            // New or changed schedule: plan the first firing after now.
            Some((c, next)) if c == cron => next,
            _ => {
                if let Some(next) = next_after(now) {
                    core.store
                        .plan_schedule(&o.id, &o.tenant_id, cron, next)
                        .await?;
                }
                continue;
            }
        };
        if due > now {
            continue;
        }
        // Claim this firing (once across nodes), planning the next one.
        let Some(next) = next_after(now) else {
            continue;
        };
        if !core.store.claim_schedule(&o.id, due, next).await? {
            continue;
        }
        let overlap = trigger["overlap"].as_str().unwrap_or("skip");
        let busy = core.store.unfinished_of(&o.id).await?;
        let skip = match overlap {
            "queue" => busy.iter().any(|s| s == "queued"),
            _ => !busy.is_empty(),
        };
        if skip {
            tracing::info!(orchestration = %o.id, "schedule fired while an execution is still going: skipped ({overlap})");
            continue;
        }
        if let Err(e) = core.quotas.ensure_storage(&core.store, &o.tenant_id).await {
            tracing::warn!(orchestration = %o.id, "schedule fired but the execution was not started: {}", e);
            continue;
        }
        let params: serde_json::Map<String, Value> = definition["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p.get("default")?.clone())))
            .collect();
        let mut row = ExecutionRow::queued(
            &o,
            Value::Object(params).to_string(),
            "schedule",
            "system:scheduler".into(),
        );
        row.created_at = now;
        core.store.create_execution(&row).await?;
        core.engine.submit(&row.id);
        started.push(row.id);
    }
    Ok(started)
}

//! Tenant limits enforced at run time, shared by every control-plane replica.
//!
//! - **Request rate** (API requests per minute): a sliding window over
//!   one-minute windows. Each node counts its own requests in memory (the
//!   check never waits on the database) and, every second, adds them to the
//!   shared `rate_windows` table and reads what the other nodes counted. A
//!   tenant's budget is therefore one budget across replicas, seen by each
//!   node with at most about a second's delay.
//! - **Monthly calls**: counted in memory, added to `usage_counters` every two
//!   seconds, and every node re-reads the shared total at the same time, so
//!   calls made through other replicas count against the same quota.
//! - **Storage**: each tenant's stored bytes (executions and their step
//!   traces, call records, orchestration and connector definitions) are
//!   measured every `storage_interval` by whichever node finds the last
//!   measurement stale; at or above the limit, work that would store more
//!   (executions, connection calls, new definitions) is refused.
//! - **Retention**: hourly, finished executions and call records older than
//!   the tenant's retention are deleted (open dead letters are kept).
//!
//! Every refusal is a 429 with `Retry-After` and a message naming the limit.

pub mod plans;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dibop_runtime::support::rfc3339;
use tokio_util::sync::CancellationToken;

use crate::Core;
use crate::store::{Store, StoreError, Tenant};
use crate::support::clock::now_ms;
use plans::limits_of;

/// How long a tenant's plan is cached.
const TENANT_CACHE_TTL: Duration = Duration::from_secs(10);
/// How often request counts are exchanged with the other replicas.
const RATE_SYNC: Duration = Duration::from_secs(1);
/// How often monthly call counts are written and re-read.
const USAGE_SYNC: Duration = Duration::from_secs(2);
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// The current quota period (`YYYY-MM`, UTC) and the seconds until the next.
pub fn period_now() -> (String, i64) {
    let now = time::OffsetDateTime::now_utc();
    let period = format!("{:04}-{:02}", now.year(), u8::from(now.month()));
    let (y, m) = if now.month() == time::Month::December {
        (now.year() + 1, time::Month::January)
    } else {
        (now.year(), now.month().next())
    };
    let next = time::Date::from_calendar_date(y, m, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(0);
    (period, (next - now.unix_timestamp()).max(1))
}

/// One tenant's request counts on this node, per one-minute window.
#[derive(Debug, Default)]
struct Rate {
    /// The current window (Unix minutes).
    window: i64,
    local_cur: i64,
    local_prev: i64,
    /// What the other nodes counted, as of the last exchange.
    others_cur: i64,
    others_prev: i64,
    /// Counted here and not yet shared: `(window, requests)`.
    unshared: Vec<(i64, i64)>,
}

impl Rate {
    /// Moves to `window`, shifting the current counts to "previous".
    fn roll(&mut self, window: i64) {
        if window == self.window {
            return;
        }
        if window == self.window + 1 {
            self.local_prev = self.local_cur;
            self.others_prev = self.others_cur;
        } else {
            self.local_prev = 0;
            self.others_prev = 0;
        }
        self.local_cur = 0;
        self.others_cur = 0;
        self.window = window;
    }

    /// Takes one request at `now_ms` under `rpm`, or says how many seconds
    /// until one fits.
    fn take(&mut self, now_ms: i64, rpm: i64) -> Result<(), u64> {
        let window = now_ms.div_euclid(60_000);
        self.roll(window);
        let into = now_ms.rem_euclid(60_000) as f64 / 60_000.0;
        let prev = (self.local_prev + self.others_prev) as f64;
        let cur = (self.local_cur + self.others_cur) as f64;
        let rpm_f = rpm as f64;
        if prev * (1.0 - into) + cur + 1.0 <= rpm_f {
            self.local_cur += 1;
            match self.unshared.last_mut() {
                Some((w, n)) if *w == window => *n += 1,
                _ => self.unshared.push((window, 1)),
            }
            return Ok(());
        }
        // When does `prev' * (1 - f) + cur' + 1 <= rpm` hold again?
        let wait_fraction = if cur + 1.0 > rpm_f {
            // Not in this window: in the next, `cur` becomes the previous one.
            let f = if cur > 0.0 {
                (1.0 - (rpm_f - 1.0) / cur).max(0.0)
            } else {
                0.0
            };
            (1.0 - into) + f
        } else {
            let f = 1.0 - (rpm_f - 1.0 - cur) / prev;
            (f - into).max(0.0)
        };
        Err((wait_fraction * 60.0).ceil().max(1.0) as u64)
    }
}

#[derive(Debug, Default)]
struct Usage {
    period: String,
    /// The shared total as of the last exchange (this node's writes included).
    stored: i64,
    /// Counted here and not yet written.
    pending: i64,
}

/// Tenant plans and the state of their limits on this node.
#[derive(Debug)]
pub struct Quotas {
    /// This node's id in the shared rate windows.
    node: String,
    tenants: crate::support::cache::TtlCache<Tenant>,
    rates: Mutex<HashMap<String, Rate>>,
    usage: tokio::sync::Mutex<HashMap<String, Usage>>,
    /// Measured stored bytes per tenant.
    storage: Mutex<HashMap<String, (i64, i64)>>,
    storage_interval: Mutex<Duration>,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas::for_node(crate::support::ids::new_id("node"))
    }
}

impl Quotas {
    /// The limits of node `node` (its id in shared tables).
    pub fn for_node(node: String) -> Quotas {
        Quotas {
            node,
            tenants: crate::support::cache::TtlCache::new(TENANT_CACHE_TTL, 100_000),
            rates: Mutex::default(),
            usage: tokio::sync::Mutex::default(),
            storage: Mutex::default(),
            storage_interval: Mutex::new(Duration::from_secs(60)),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }
}

/// A limit the tenant reached, or a store failure while checking one.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// Over a limit: `code` is `rate_limited` or `storage_limit`; the
    /// caller may retry after `retry_after` seconds.
    #[error("{message}")]
    Exceeded {
        /// Which limit.
        code: &'static str,
        /// Which tenant, which limit, when it resets.
        message: String,
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn too_many(code: &'static str, message: String, retry_after: u64) -> QuotaError {
    QuotaError::Exceeded {
        code,
        message,
        retry_after,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `1.5 GiB`, `20 MiB`, `512 B`.
pub fn human_bytes(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n.max(0) as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() < 0.05 {
        format!("{v:.0} {}", units[unit])
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

impl Quotas {
    /// The tenant's current row (cached briefly).
    pub async fn tenant(&self, store: &Store, id: &str) -> Result<Option<Tenant>, StoreError> {
        if let Some(t) = self.tenants.get(id) {
            return Ok(Some(t));
        }
        let t = store.tenant(id).await?;
        if let Some(t) = &t {
            self.tenants.insert(id.to_owned(), t.clone());
        }
        Ok(t)
    }

    /// Forgets a cached tenant (after a plan change on this node).
    pub fn forget(&self, id: &str) {
        self.tenants.remove_where(|t| t.id == id);
    }

    /// Takes one request from the tenant's per-minute budget.
    pub fn check_rate(&self, t: &Tenant) -> Result<(), QuotaError> {
        self.check_rate_at(t, now_ms())
    }

    fn check_rate_at(&self, t: &Tenant, now_ms: i64) -> Result<(), QuotaError> {
        let rpm = limits_of(t).requests_per_minute.max(1);
        let mut rates = lock(&self.rates);
        let rate = rates.entry(t.id.clone()).or_default();
        rate.take(now_ms, rpm).map_err(|wait| {
            too_many(
                "rate_limited",
                format!(
                    "tenant `{}` exceeded its limit of {rpm} API requests per minute ({} tier); retry in {wait} s",
                    t.name, t.tier
                ),
                wait,
            )
        })
    }

    /// The tenant's API requests in the last minute across every replica,
    /// as this node knows them (the other nodes' up to a second late).
    pub fn requests_last_minute(&self, tenant_id: &str) -> i64 {
        let now = now_ms();
        let mut rates = lock(&self.rates);
        let Some(r) = rates.get_mut(tenant_id) else {
            return 0;
        };
        r.roll(now.div_euclid(60_000));
        let into = now.rem_euclid(60_000) as f64 / 60_000.0;
        ((r.local_prev + r.others_prev) as f64 * (1.0 - into)).round() as i64
            + r.local_cur
            + r.others_cur
    }

    /// Shares this node's request counts and reads the other nodes'.
    pub async fn exchange_rates(&self, store: &Store) -> Result<(), StoreError> {
        let window = now_ms().div_euclid(60_000);
        let unshared: Vec<(String, i64, i64)> = {
            let mut rates = lock(&self.rates);
            rates.retain(|_, r| r.window >= window - 2 || !r.unshared.is_empty());
            rates
                .iter_mut()
                .flat_map(|(tenant, r)| {
                    std::mem::take(&mut r.unshared)
                        .into_iter()
                        .map(|(w, n)| (tenant.clone(), w, n))
                })
                .collect()
        };
        if let Err(e) = store.add_rate_requests(&self.node, &unshared).await {
            // Put them back: the next exchange tries again.
            let mut rates = lock(&self.rates);
            for (tenant, w, n) in unshared {
                rates.entry(tenant).or_default().unshared.push((w, n));
            }
            return Err(e);
        }
        let others = store.rate_of_others(&self.node, window - 1).await?;
        let mut rates = lock(&self.rates);
        for r in rates.values_mut() {
            r.roll(window);
            r.others_cur = 0;
            r.others_prev = 0;
        }
        for (tenant, w, n) in others {
            let r = rates.entry(tenant).or_insert_with(|| Rate {
                window,
                ..Rate::default()
            });
            if w == r.window {
                r.others_cur = n;
            } else if w == r.window - 1 {
                r.others_prev = n;
            }
        }
        Ok(())
    }

    /// Counts one relayed call against the tenant's monthly quota.
    pub async fn take_call(&self, store: &Store, t: &Tenant) -> Result<(), QuotaError> {
        let limit = limits_of(t).calls_per_month;
        let (period, reset_in) = period_now();
        let mut usage = self.usage.lock().await;
        let entry = usage.entry(t.id.clone()).or_default();
        if entry.period != period {
            // New month (or first use here): start from the shared total.
            *entry = Usage {
                stored: store.usage(&t.id, &period).await?,
                period: period.clone(),
                pending: 0,
            };
        }
        if entry.stored + entry.pending >= limit {
            return Err(too_many(
                "rate_limited",
                format!(
                    "tenant `{}` used its monthly quota of {limit} calls ({} tier); it resets at {}",
                    t.name,
                    t.tier,
                    rfc3339(crate::store::now_unix() + reset_in)
                ),
                reset_in as u64,
            ));
        }
        entry.pending += 1;
        Ok(())
    }

    /// Writes pending call counts and re-reads the shared totals.
    pub async fn flush(&self, store: &Store) {
        let entries: Vec<(String, String, i64)> = {
            let mut usage = self.usage.lock().await;
            usage
                .iter_mut()
                .map(|(id, u)| (id.clone(), u.period.clone(), std::mem::take(&mut u.pending)))
                .collect()
        };
        for (tenant, period, n) in entries {
            if n > 0
                && let Err(e) = store.add_usage(&tenant, &period, n).await
            {
                tracing::error!(%tenant, "cannot record {n} calls of usage: {e}");
                if let Some(u) = self.usage.lock().await.get_mut(&tenant) {
                    u.pending += n;
                }
                continue;
            }
            match store.usage(&tenant, &period).await {
                Ok(total) => {
                    if let Some(u) = self.usage.lock().await.get_mut(&tenant)
                        && u.period == period
                    {
                        u.stored = total;
                    }
                }
                Err(e) => tracing::warn!(%tenant, "cannot read the shared call count: {e}"),
            }
        }
    }

    /// Refuses work that would store more data once the tenant's measured
    /// storage reached its limit.
    pub fn check_storage(&self, t: &Tenant) -> Result<(), QuotaError> {
        let Some((bytes, measured_at)) = lock(&self.storage).get(&t.id).copied() else {
            return Ok(());
        };
        let limit = limits_of(t).storage_bytes;
        if bytes < limit {
            return Ok(());
        }
        let every = lock(&self.storage_interval).as_secs().max(1);
        Err(too_many(
            "storage_limit",
            format!(
                "tenant `{}` stores {} and its storage limit is {} ({} tier, measured at {}): \
                 delete orchestrations or connector drafts, or wait for retention ({} days) to remove \
                 old executions and call records; storage is measured again every {every} s",
                t.name,
                human_bytes(bytes),
                human_bytes(limit),
                t.tier,
                rfc3339(measured_at),
                limits_of(t).retention_days,
            ),
            every,
        ))
    }

    /// [`Quotas::check_storage`] for a tenant id.
    pub async fn ensure_storage(&self, store: &Store, tenant_id: &str) -> Result<(), QuotaError> {
        if !lock(&self.storage).contains_key(tenant_id) {
            return Ok(());
        }
        match self.tenant(store, tenant_id).await? {
            Some(t) => self.check_storage(&t),
            None => Ok(()),
        }
    }

    /// The tenant's last measured storage: `(bytes, measured_at)`.
    pub fn storage_of(&self, tenant_id: &str) -> Option<(i64, i64)> {
        lock(&self.storage).get(tenant_id).copied()
    }

    /// Measures storage if no node did within the interval, then loads every
    /// tenant's measurement.
    pub async fn refresh_storage(&self, store: &Store, every: Duration) -> Result<(), StoreError> {
        *lock(&self.storage_interval) = every;
        let now = crate::store::now_unix();
        let rows = store.storage_usage().await?;
        let newest = rows.iter().map(|r| r.measured_at).max().unwrap_or(0);
        let rows = if now - newest >= every.as_secs() as i64 {
            let started = std::time::Instant::now();
            let rows = store.measure_storage(now).await?;
            tracing::info!(
                tenants = rows.len(),
                "measured tenants' storage in {} ms",
                started.elapsed().as_millis()
            );
            rows
        } else {
            rows
        };
        let mut storage = lock(&self.storage);
        storage.clear();
        storage.extend(
            rows.into_iter()
                .map(|r| (r.tenant_id, (r.bytes, r.measured_at))),
        );
        Ok(())
    }
}

/// Exchanges request counts every second and monthly call counts every two
/// seconds until `shutdown`, then writes what is pending once more.
pub async fn run_sharing(core: Arc<Core>, shutdown: CancellationToken) {
    let mut rates = tokio::time::interval(RATE_SYNC);
    rates.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut usage = tokio::time::interval(USAGE_SYNC);
    usage.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = rates.tick() => {
                if let Err(e) = core.quotas.exchange_rates(&core.store).await {
                    tracing::warn!("cannot share request counts with other replicas: {e}");
                }
            }
            _ = usage.tick() => core.quotas.flush(&core.store).await,
            _ = prune.tick() => {
                let before = now_ms().div_euclid(60_000) - 2;
                if let Err(e) = core.store.prune_rate_windows(before).await {
                    tracing::warn!("cannot prune old request windows: {e}");
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    core.quotas.flush(&core.store).await;
    let _ = core.quotas.exchange_rates(&core.store).await;
}

/// Measures storage every `storage_interval` and applies retention hourly.
pub async fn run_storage(core: Arc<Core>, shutdown: CancellationToken) {
    let every = core.settings.storage_interval;
    let mut measure = tokio::time::interval(every);
    measure.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = measure.tick() => {
                if let Err(e) = core.quotas.refresh_storage(&core.store, every).await {
                    tracing::warn!("cannot measure tenants' storage: {e}");
                }
            }
            _ = retention.tick() => apply_retention(&core).await,
            _ = shutdown.cancelled() => break,
        }
    }
}

/// Days call payloads (request and response bodies) are kept: a shorter
/// time than the call records, at most a week.
pub fn payload_retention_days(retention_days: i64) -> i64 {
    retention_days.clamp(1, 7)
}

/// Deletes every tenant's finished executions and call records older than
/// its retention, and call payloads older than [`payload_retention_days`].
pub async fn apply_retention(core: &Core) {
    let mut after: Option<String> = None;
    loop {
        let page = match core.store.list_tenants(after.as_deref(), 500).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("retention: cannot list tenants: {e}");
                return;
            }
        };
        for t in &page {
            let days = limits_of(t).retention_days;
            let cutoff = crate::store::now_unix() - days * 86_400;
            let payload_cutoff = crate::store::now_unix() - payload_retention_days(days) * 86_400;
            if let Err(e) = core.store.prune_call_payloads(&t.id, payload_cutoff).await {
                tracing::warn!(tenant = %t.id, "payload retention failed: {e}");
            }
            match core.store.prune_tenant_history(&t.id, cutoff).await {
                Ok((0, 0)) => {}
                Ok((calls, executions)) => tracing::info!(
                    tenant = %t.id,
                    "retention ({days} days) removed {executions} executions and {calls} call records"
                ),
                Err(e) => tracing::warn!(tenant = %t.id, "retention failed: {e}"),
            }
        }
        match page.last() {
            Some(t) if page.len() == 500 => after = Some(t.id.clone()),
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_window_allows_the_full_rate_then_says_when() {
        let mut r = Rate::default();
        let t0 = 1_000 * 60_000; // the start of a minute
        for _ in 0..10 {
            r.take(t0, 10).unwrap();
        }
        // All ten used in this window: the next fits once the window has
        // moved on far enough for the previous ten to weigh less than nine.
        let wait = r.take(t0, 10).unwrap_err();
        assert_eq!(wait, 60 + 6);
        // In the next window, 10 × (1 − f) + 1 ≤ 10 holds from f = 0.1.
        assert!(r.take(t0 + 60_000 + 5_000, 10).is_err());
        r.take(t0 + 60_000 + 6_500, 10).unwrap();
    }

    #[test]
    fn other_nodes_counts_share_the_budget() {
        let mut r = Rate::default();
        let t0 = 2_000 * 60_000;
        r.roll(t0 / 60_000);
        r.others_cur = 8;
        r.take(t0, 10).unwrap();
        r.take(t0, 10).unwrap();
        assert!(r.take(t0, 10).is_err());
        assert_eq!(r.unshared, vec![(t0 / 60_000, 2)]);
    }

    fn tenant(tier: &str) -> Tenant {
        plans::test_tenant(tier)
    }

    #[test]
    fn request_rate_is_a_bucket_per_tenant() {
        let quotas = Quotas::default();
        let t = tenant("free");
        for _ in 0..10 {
            quotas.check_rate(&t).unwrap();
        }
        let err = quotas.check_rate(&t).unwrap_err();
        assert!(
            format!("{err:?}").contains("10 API requests per minute"),
            "{err:?}"
        );
        let mut other = tenant("free");
        other.id = "ten_2".into();
        quotas.check_rate(&other).unwrap();
    }

    #[test]
    fn periods_are_calendar_months() {
        let (period, reset_in) = period_now();
        assert_eq!(period.len(), 7);
        assert!(reset_in > 0 && reset_in <= 31 * 24 * 3600);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(100 * 1024 * 1024), "100 MiB");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
    }
}

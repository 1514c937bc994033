//! What protects the systems behind connections: each connector's circuit
//! breaker and rate limit (`resilience.circuit_breaker`,
//! `resilience.rate_limit`), enforced per connection on the one call path
//! (API invokes, Test Connection, health checks, orchestration steps).
//!
//! - **Circuit breaker**: `failure_threshold` failures in a row (timeouts,
//!   network and TLS failures, 5xx and 429 answers) open the breaker for
//!   `open_for_ms`; meanwhile calls fail at once with `circuit_open` and
//!   never reach the system. Then one trial call goes through (half-open):
//!   its success closes the breaker, its failure opens it again. Opening
//!   and closing are written to the database, and every replica reads the
//!   changes every second, so a breaker opened by one replica is open on
//!   all of them (each counts its own failures in a row).
//! - **Rate limit**: `requests_per_second` paces calls (a generic cell rate
//!   algorithm with a burst of one second's calls): a call waits for its
//!   slot, and one whose wait would outlast its own timeout fails at once
//!   with `throttled`. With PostgreSQL the slots are reserved atomically in
//!   the database, so the rate is one rate across replicas; on SQLite (one
//!   node) they are kept in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dibop_protocol::{CallResult, ErrorClass};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::store::{Backend, Store};
use crate::support::clock::{now_ms, now_us};

/// How often breaker changes are exchanged between replicas.
const SHARE_EVERY: Duration = Duration::from_secs(1);

/// A connector's circuit breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Failures in a row that open it.
    pub threshold: u32,
    /// How long it stays open.
    pub open_for_ms: i64,
}

/// A connector's rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePolicy {
    /// Calls per second.
    pub per_second: f64,
}

impl RatePolicy {
    /// Time between calls, in microseconds.
    fn interval_us(self) -> i64 {
        ((1_000_000.0 / self.per_second).round() as i64).max(1)
    }

    /// How far ahead of its slot a call may go (microseconds): a burst of
    /// one second's calls.
    fn tolerance_us(self) -> i64 {
        (self.per_second.floor() as i64 - 1).max(0) * self.interval_us()
    }
}

/// The breaker and rate limit a connector definition declares.
pub fn policies(
    definition: &crate::catalogue::definition::Definition,
) -> (Option<BreakerPolicy>, Option<RatePolicy>) {
    let r = &definition.resilience;
    let breaker = r
        .circuit_breaker
        .filter(|b| b.failure_threshold > 0)
        .map(|b| BreakerPolicy {
            threshold: b.failure_threshold,
            open_for_ms: i64::try_from(b.open_for_ms).unwrap_or(i64::MAX).max(1),
        });
    let rate = r
        .rate_limit
        .filter(|l| l.requests_per_second > 0)
        .map(|l| RatePolicy {
            per_second: f64::from(l.requests_per_second),
        });
    (breaker, rate)
}

/// Whether a call's outcome says the system is failing (what opens a breaker).
pub fn is_system_failure(result: &CallResult) -> bool {
    match result.error.as_ref().map(|e| e.class) {
        None => false,
        Some(ErrorClass::Timeout | ErrorClass::NetworkError | ErrorClass::TlsError) => true,
        Some(ErrorClass::RateLimited) => true,
        Some(ErrorClass::UpstreamError) => result.status.is_none_or(|s| s >= 500),
        Some(_) => false,
    }
}

/// A breaker's state, as shown on its connection.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, PartialEq, Eq)]
pub struct BreakerView {
    /// `closed`, `open` or `half_open` (open time over: the next call is a trial).
    pub state: &'static str,
    /// Failures in a row counted on this replica.
    pub failures: u32,
    /// Until when it is open (RFC 3339), when open.
    pub open_until: Option<String>,
}

#[derive(Debug, Default, Clone)]
struct Breaker {
    failures: u32,
    open_until_ms: i64,
    /// A half-open trial call is in flight.
    trial: bool,
}

/// Why a call may not go now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The breaker is open until this time (Unix ms).
    Open(i64),
    /// The rate limit would make it wait this long.
    Throttled(Duration),
}

/// The breakers and pacing of every connection on this replica.
#[derive(Debug, Default)]
pub struct Guards {
    breakers: Mutex<HashMap<String, Breaker>>,
    /// Theoretical arrival times (Unix µs) of rate-limited connections, on SQLite.
    pacing: Mutex<HashMap<String, i64>>,
    /// Transitions not yet written: (connection, open until, failures).
    unshared: Mutex<Vec<(String, i64, i64)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Guards {
    /// Lets a call through the breaker of `connection_id`, or says until when it is open.
    pub fn admit(&self, connection_id: &str, policy: BreakerPolicy) -> Result<(), Refused> {
        self.admit_at(connection_id, policy, now_ms())
    }

    fn admit_at(
        &self,
        connection_id: &str,
        policy: BreakerPolicy,
        now: i64,
    ) -> Result<(), Refused> {
        let mut map = lock(&self.breakers);
        let Some(b) = map.get_mut(connection_id) else {
            return Ok(());
        };
        if b.failures < policy.threshold && b.open_until_ms <= now {
            return Ok(());
        }
        if b.open_until_ms > now || b.trial {
            return Err(Refused::Open(b.open_until_ms.max(now)));
        }
        // Open time over: this call is the one trial.
        b.trial = true;
        Ok(())
    }

    /// Counts a call's outcome (`Some(true)`: the system failed; `None`: the
    /// call never reached it); opens or closes the breaker.
    pub fn record(&self, connection_id: &str, policy: BreakerPolicy, failed: Option<bool>) {
        match failed {
            Some(failed) => self.record_at(connection_id, policy, failed, now_ms()),
            None => {
                // A trial that never reached the system: the next call tries.
                if let Some(b) = lock(&self.breakers).get_mut(connection_id) {
                    b.trial = false;
                }
            }
        }
    }

    fn record_at(&self, connection_id: &str, policy: BreakerPolicy, failed: bool, now: i64) {
        let mut map = lock(&self.breakers);
        if !failed {
            if let Some(b) = map.remove(connection_id)
                && (b.failures >= policy.threshold || b.open_until_ms > 0)
            {
                tracing::info!(connection = connection_id, "circuit breaker closed");
                lock(&self.unshared).push((connection_id.to_owned(), 0, 0));
            }
            return;
        }
        let b = map.entry(connection_id.to_owned()).or_default();
        b.failures = b.failures.saturating_add(1);
        if b.trial || b.failures == policy.threshold {
            b.trial = false;
            b.open_until_ms = now + policy.open_for_ms;
            tracing::warn!(
                connection = connection_id,
                failures = b.failures,
                "circuit breaker opened for {} ms",
                policy.open_for_ms
            );
            lock(&self.unshared).push((
                connection_id.to_owned(),
                b.open_until_ms,
                i64::from(b.failures),
            ));
        }
    }

    /// The breaker of a connection, for its view.
    pub fn view(&self, connection_id: &str, policy: Option<BreakerPolicy>) -> Option<BreakerView> {
        let policy = policy?;
        let now = now_ms();
        let b = lock(&self.breakers)
            .get(connection_id)
            .cloned()
            .unwrap_or_default();
        let state = if b.open_until_ms > now {
            "open"
        } else if b.failures >= policy.threshold {
            "half_open"
        } else {
            "closed"
        };
        Some(BreakerView {
            state,
            failures: b.failures,
            open_until: (state == "open")
                .then(|| dibop_runtime::support::rfc3339(b.open_until_ms / 1000)),
        })
    }

    /// Waits for the call's slot under `rate`, or refuses when the wait
    /// would be longer than `max_wait`.
    pub async fn pace(
        &self,
        store: &Store,
        connection_id: &str,
        rate: RatePolicy,
        max_wait: Duration,
    ) -> Result<(), Refused> {
        let now = now_us();
        let interval = rate.interval_us();
        let tat = match store.backend() {
            Backend::Postgres => match store.reserve_slot(connection_id, now, interval).await {
                Ok(t) => t,
                Err(e) => {
                    // The limit protects the system; without the database, pace here.
                    tracing::warn!(
                        connection = connection_id,
                        "cannot reserve a call slot: {e}"
                    );
                    self.reserve_here(connection_id, now, interval)
                }
            },
            Backend::Sqlite => self.reserve_here(connection_id, now, interval),
        };
        // This call's slot: the previous arrival time, less the burst allowance.
        let wait = (tat - interval - rate.tolerance_us() - now).max(0);
        if wait == 0 {
            return Ok(());
        }
        let wait = Duration::from_micros(wait as u64);
        if wait > max_wait {
            self.release(store, connection_id, interval).await;
            return Err(Refused::Throttled(wait));
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn reserve_here(&self, connection_id: &str, now_us: i64, interval_us: i64) -> i64 {
        let mut map = lock(&self.pacing);
        let tat = map.entry(connection_id.to_owned()).or_insert(now_us);
        *tat = (*tat).max(now_us) + interval_us;
        *tat
    }

    /// Gives back a slot that a refused call reserved.
    async fn release(&self, store: &Store, connection_id: &str, interval_us: i64) {
        match store.backend() {
            Backend::Postgres => {
                let _ = store.reserve_slot(connection_id, 0, -interval_us).await;
            }
            Backend::Sqlite => {
                if let Some(tat) = lock(&self.pacing).get_mut(connection_id) {
                    *tat -= interval_us;
                }
            }
        }
    }

    /// Writes this replica's breaker changes and applies the others'.
    async fn exchange(&self, store: &Store, seen: &mut i64) {
        let changes: Vec<_> = std::mem::take(&mut *lock(&self.unshared));
        let now = now_ms();
        for (id, until, failures) in &changes {
            if let Err(e) = store.set_breaker(id, *until, *failures, now).await {
                tracing::warn!(connection = %id, "cannot share a breaker change: {e}");
            }
        }
        match store.breakers_since(*seen).await {
            Ok(rows) => {
                let mut map = lock(&self.breakers);
                for (id, until, failures, at) in rows {
                    *seen = (*seen).max(at);
                    if until > now_ms() {
                        let b = map.entry(id).or_default();
                        if until > b.open_until_ms {
                            b.open_until_ms = until;
                            b.failures = b
                                .failures
                                .max(failures.clamp(0, i64::from(u32::MAX)) as u32);
                            b.trial = false;
                        }
                    } else if until == 0 {
                        map.remove(&id);
                    }
                }
            }
            Err(e) => tracing::warn!("cannot read breaker changes: {e}"),
        }
    }
}

/// Shares breaker changes with the other replicas every second.
pub async fn run_sharing(core: Arc<crate::Core>, shutdown: CancellationToken) {
    // Changes older than the start are applied too (a breaker still open).
    let mut seen = now_ms() - 3_600_000;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SHARE_EVERY) => {}
        }
        core.guards.exchange(&core.store, &mut seen).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        threshold: 3,
        open_for_ms: 1000,
    };

    #[test]
    fn failures_in_a_row_open_it_and_one_trial_closes_it() {
        let g = Guards::default();
        for _ in 0..2 {
            assert!(g.admit_at("c", POLICY, 0).is_ok());
            g.record_at("c", POLICY, true, 0);
        }
        // A success in between starts the count over.
        g.record_at("c", POLICY, false, 0);
        for _ in 0..3 {
            assert!(g.admit_at("c", POLICY, 10).is_ok());
            g.record_at("c", POLICY, true, 10);
        }
        assert_eq!(g.admit_at("c", POLICY, 500), Err(Refused::Open(1010)));
        // Open time over: one trial, the others still refused.
        assert!(g.admit_at("c", POLICY, 1011).is_ok());
        assert!(g.admit_at("c", POLICY, 1012).is_err());
        // The trial fails: open again.
        g.record_at("c", POLICY, true, 1020);
        assert_eq!(g.admit_at("c", POLICY, 1500), Err(Refused::Open(2020)));
        assert!(g.admit_at("c", POLICY, 2021).is_ok());
        g.record_at("c", POLICY, false, 2030);
        assert!(g.admit_at("c", POLICY, 2031).is_ok());
        assert!(g.admit_at("c", POLICY, 2032).is_ok());
    }

    #[test]
    fn rates_allow_a_second_of_burst_then_space_calls() {
        let one = RatePolicy { per_second: 1.0 };
        assert_eq!((one.interval_us(), one.tolerance_us()), (1_000_000, 0));
        let ten = RatePolicy { per_second: 10.0 };
        assert_eq!((ten.interval_us(), ten.tolerance_us()), (100_000, 900_000));
        // Above a thousand a second the slots are still distinct.
        let fast = RatePolicy { per_second: 5000.0 };
        assert_eq!(fast.interval_us(), 200);
        let g = Guards::default();
        let waits: Vec<i64> = (0..4)
            .map(|_| {
                let tat = g.reserve_here("c", 0, one.interval_us());
                (tat - one.interval_us() - one.tolerance_us()).max(0)
            })
            .collect();
        assert_eq!(waits, [0, 1_000_000, 2_000_000, 3_000_000]);
    }

    #[test]
    fn only_the_systems_failures_count() {
        let mut r = CallResult::failure(
            &dibop_protocol::CallRequest {
                call_id: 0,
                method: "GET".into(),
                url: "http://x/".into(),
                headers: vec![],
                body: vec![],
                timeout_ms: 1,
            },
            "",
            ErrorClass::UpstreamError,
            "x",
        );
        r.status = Some(503);
        assert!(is_system_failure(&r));
        r.status = Some(404);
        assert!(!is_system_failure(&r));
        r.error.as_mut().unwrap().class = ErrorClass::AuthFailure;
        assert!(!is_system_failure(&r));
        r.error.as_mut().unwrap().class = ErrorClass::Timeout;
        assert!(is_system_failure(&r));
    }
}

//! The registry of connected agents and the dispatcher that sends calls to
//! them.
//!
//! Each call goes to the least-loaded online agent of its group (ties broken
//! at random), on a bidirectional stream of its own. When an agent drops
//! before the request was handed over, the call moves to another agent of the
//! group; when it drops after, the call moves only if its method is safe to
//! repeat, otherwise the caller learns that the call may have been performed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use dibop_protocol::{
    AgentToControl, CallRequest, CallResult, ControlToAgent, ErrorClass, InvokeRequest,
    InvokeResult, MAX_FRAME_LEN, codes,
};
use dibop_runtime::wire::{WireError, read_frame, write_frame};
use tracing::{debug, warn};

use crate::support::clock::now_ms;

/// Extra time the control plane waits beyond a call's own timeout, for the
/// agent to report that timeout itself.
const RESULT_GRACE: Duration = Duration::from_secs(5);

/// A connected agent.
#[derive(Debug)]
pub struct LiveAgent {
    /// Agent id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Group.
    pub group_id: String,
    /// Release reported at handshake.
    pub version: String,
    /// The negotiated protocol version (connector calls need 2).
    pub protocol: u16,
    /// Host reported at handshake.
    pub hostname: String,
    /// The tunnel (QUIC, or the TCP transport).
    pub connection: dibop_runtime::link::Link,
    /// Calls dispatched and not yet answered.
    pub in_flight: AtomicU32,
    /// Last heartbeat or call (Unix seconds).
    pub last_seen: AtomicI64,
    /// Calls completed over this connection.
    pub calls_total: AtomicU64,
    /// When the agent was last heard from, and probed (protocol 3).
    pub heard: Heard,
}

/// How long the agent may be silent, while calls wait on it, before it is
/// probed.
const PROBE_AFTER: Duration = Duration::from_millis(400);
/// How long the agent may be silent, while calls wait on it and probes go
/// unanswered, before it is given up on (longer on a path whose round trip
/// is long: four round trips and a probe interval).
const DEAD_AFTER: Duration = Duration::from_millis(1200);
/// How often a waiting call looks at its agent's liveness.
const LIVENESS_TICK: Duration = Duration::from_millis(200);

/// When an agent was last heard from (any frame: heartbeat, acknowledgement,
/// result, pong) and last probed, in Unix milliseconds.
#[derive(Debug)]
pub struct Heard {
    at: AtomicI64,
    probed: AtomicI64,
}

impl Default for Heard {
    fn default() -> Self {
        Heard {
            at: AtomicI64::new(now_ms()),
            probed: AtomicI64::new(0),
        }
    }
}

impl Heard {
    /// The agent said something.
    pub fn now(&self) {
        self.at.store(now_ms(), Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        Duration::from_millis((now_ms() - self.at.load(Ordering::Relaxed)).max(0) as u64)
    }

    /// Whether this caller should send the probe (one per [`PROBE_AFTER`]).
    fn claim_probe(&self) -> bool {
        let now = now_ms();
        let last = self.probed.load(Ordering::Relaxed);
        now - last >= PROBE_AFTER.as_millis() as i64
            && self
                .probed
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Sends a liveness probe to `agent` and records its answer.
fn probe(agent: Arc<LiveAgent>) {
    tokio::spawn(async move {
        let nonce = fastrand::u64(..);
        let exchange = async {
            let (mut send, mut recv) = agent.connection.open_bi().await.ok()?;
            write_frame(&mut send, &ControlToAgent::Ping(nonce))
                .await
                .ok()?;
            send.finish().await;
            match read_frame::<AgentToControl, _>(&mut recv, 64).await {
                Ok(Some(AgentToControl::Pong(n))) if n == nonce => Some(()),
                _ => None,
            }
        };
        let patience = DEAD_AFTER.max(agent.connection.rtt() * 4 + PROBE_AFTER);
        if tokio::time::timeout(patience, exchange)
            .await
            .ok()
            .flatten()
            .is_some()
        {
            agent.heard.now();
        }
    });
}

#[derive(Debug, Default)]
struct Maps {
    by_id: HashMap<String, Arc<LiveAgent>>,
    by_group: HashMap<String, Vec<Arc<LiveAgent>>>,
}

/// Online agents.
#[derive(Debug)]
pub struct Registry {
    maps: RwLock<Maps>,
    next_call_id: AtomicU64,
    /// Woken whenever an agent comes online.
    arrived: tokio::sync::Notify,
    /// When this control plane started (agents reconnect after a restart).
    born: Instant,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            maps: RwLock::default(),
            next_call_id: AtomicU64::default(),
            arrived: tokio::sync::Notify::new(),
            born: Instant::now(),
        }
    }
}

/// How long the control plane waits for an agent's answer to `message`:
/// every attempt its retry policy allows, with the longest pauses between
/// them, and [`RESULT_GRACE`] for the agent to report its own timeout.
pub fn answer_deadline(message: &ControlToAgent) -> Duration {
    let (request, retry) = match message {
        ControlToAgent::Call(r) => (r, None),
        ControlToAgent::Invoke(r) => (&r.call, Some(&r.retry)),
        _ => return RESULT_GRACE,
    };
    let per_attempt = Duration::from_millis(u64::from(request.timeout_ms));
    let Some(retry) = retry else {
        return per_attempt + RESULT_GRACE;
    };
    // As the agent counts them.
    let attempts = retry.max_attempts.clamp(1, 10);
    // A token fetch, and one more try after a refused token, may each take
    // a timeout of their own.
    per_attempt * (attempts + 2)
        + Duration::from_millis(u64::from(retry.max_backoff_ms)) * (attempts - 1)
        + RESULT_GRACE
}

struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Stops the receive half of a call stream unless the result was read, so
/// that a cancelled caller cancels the agent's HTTP request.
struct CallStream {
    recv: dibop_runtime::link::RecvHalf,
    done: bool,
}

impl Drop for CallStream {
    fn drop(&mut self) {
        if !self.done {
            self.recv.stop(codes::STREAM_CANCELLED);
        }
    }
}

enum Attempt {
    Done(Box<InvokeResult>),
    /// The request never reached the agent: safe to send elsewhere.
    NotSent(String),
    /// The agent went away after receiving the request.
    Lost(String),
}

fn done(result: CallResult) -> Attempt {
    Attempt::Done(Box::new(plain(result)))
}

fn plain(result: CallResult) -> InvokeResult {
    InvokeResult {
        result,
        rotated_refresh_token: None,
        token_fetches: 0,
    }
}

fn is_idempotent(method: &str) -> bool {
    matches!(
        method.to_ascii_uppercase().as_str(),
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}

fn lock_poisoned<T>(e: std::sync::PoisonError<T>) -> T {
    e.into_inner()
}

impl Registry {
    /// Registers a connected agent, replacing (and closing) an older
    /// connection of the same agent.
    pub fn insert(&self, agent: Arc<LiveAgent>) {
        let old = self.replace(agent);
        self.arrived.notify_waiters();
        if let Some(old) = old {
            old.connection.close(
                codes::CLOSE_REPLACED,
                b"replaced by a newer connection of this agent",
            );
        }
    }

    /// How long ago this control plane started.
    pub fn uptime(&self) -> Duration {
        self.born.elapsed()
    }

    /// Waits until an agent of `group_id` is online (`true`), or `until`
    /// passes without one (`false`).
    pub async fn wait_for_group(&self, group_id: &str, until: Instant) -> bool {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.online_in_group(group_id) > 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::select! {
                _ = arrived => {}
                _ = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    fn replace(&self, agent: Arc<LiveAgent>) -> Option<Arc<LiveAgent>> {
        {
            let mut maps = self.maps.write().unwrap_or_else(lock_poisoned);
            let old = maps.by_id.insert(agent.id.clone(), agent.clone());
            let group = maps.by_group.entry(agent.group_id.clone()).or_default();
            group.retain(|a| a.id != agent.id);
            group.push(agent);
            old
        }
    }

    /// Removes an agent if `connection_id` is still its current connection.
    pub fn remove(&self, agent_id: &str, connection_id: usize) {
        let mut maps = self.maps.write().unwrap_or_else(lock_poisoned);
        let current = maps
            .by_id
            .get(agent_id)
            .is_some_and(|a| a.connection.stable_id() == connection_id);
        if current
            && let Some(agent) = maps.by_id.remove(agent_id)
            && let Some(group) = maps.by_group.get_mut(&agent.group_id)
        {
            group.retain(|a| a.id != agent_id);
            if group.is_empty() {
                maps.by_group.remove(&agent.group_id);
            }
        }
    }

    /// The live agent with this id.
    pub fn get(&self, agent_id: &str) -> Option<Arc<LiveAgent>> {
        self.maps
            .read()
            .unwrap_or_else(lock_poisoned)
            .by_id
            .get(agent_id)
            .cloned()
    }

    /// Closes an agent's connection (revocation).
    pub fn disconnect(&self, agent_id: &str, code: u32, reason: &str) {
        if let Some(agent) = self.get(agent_id) {
            agent.connection.close(code, reason.as_bytes());
        }
    }

    /// How many agents of a group are online.
    pub fn online_in_group(&self, group_id: &str) -> usize {
        self.maps
            .read()
            .unwrap_or_else(lock_poisoned)
            .by_group
            .get(group_id)
            .map_or(0, Vec::len)
    }

    /// Whether an online agent proves that `group_id` belongs to `tenant_id`;
    /// lets the hot path skip the database.
    pub fn group_owned_by(&self, group_id: &str, tenant_id: &str) -> bool {
        let maps = self.maps.read().unwrap_or_else(lock_poisoned);
        maps.by_group
            .get(group_id)
            .and_then(|g| g.first())
            .is_some_and(|a| a.tenant_id == tenant_id)
    }

    /// How many agents are online.
    pub fn online_count(&self) -> usize {
        self.maps.read().unwrap_or_else(lock_poisoned).by_id.len()
    }

    fn pick(&self, group_id: &str, exclude: &[usize], protocol: u16) -> Option<Arc<LiveAgent>> {
        let maps = self.maps.read().unwrap_or_else(lock_poisoned);
        let group = maps.by_group.get(group_id)?;
        let mut best: Option<(&Arc<LiveAgent>, u32)> = None;
        let mut ties = 0u32;
        for agent in group.iter().filter(|a| {
            !exclude.contains(&a.connection.stable_id())
                && a.connection.close_reason().is_none()
                && a.protocol >= protocol
        }) {
            let load = agent.in_flight.load(Ordering::Relaxed);
            match best {
                Some((_, b)) if load > b => {}
                Some((_, b)) if load == b => {
                    // Reservoir sampling among equally loaded agents.
                    ties += 1;
                    if fastrand::u32(0..=ties) == 0 {
                        best = Some((agent, load));
                    }
                }
                _ => {
                    best = Some((agent, load));
                    ties = 0;
                }
            }
        }
        best.map(|(a, _)| a.clone())
    }

    /// Performs `request` on an agent of `group_id`. Never fails: every
    /// outcome is a normalized result.
    pub async fn call(&self, group_id: &str, mut request: CallRequest) -> CallResult {
        request.call_id = self.next_call_id.fetch_add(1, Ordering::Relaxed) + 1;
        let message = ControlToAgent::Call(request);
        self.dispatch(group_id, &message, 1).await.result
    }

    /// Performs a connector call on an agent of `group_id` (agents that
    /// speak protocol 2 only). Never fails.
    pub async fn invoke(&self, group_id: &str, mut request: InvokeRequest) -> InvokeResult {
        request.call.call_id = self.next_call_id.fetch_add(1, Ordering::Relaxed) + 1;
        let message = ControlToAgent::Invoke(Box::new(request));
        self.dispatch(group_id, &message, 2).await
    }

    async fn dispatch(
        &self,
        group_id: &str,
        message: &ControlToAgent,
        protocol: u16,
    ) -> InvokeResult {
        let request = match message {
            ControlToAgent::Call(r) => r,
            ControlToAgent::Invoke(r) => &r.call,
            _ => unreachable!("only calls are dispatched"),
        };
        // Connections already tried: an agent that reconnected may be tried again.
        let mut tried: Vec<usize> = Vec::new();
        let mut attempts = 0u32;
        let mut last_problem: Option<String> = None;
        loop {
            let Some(agent) = self.pick(group_id, &tried, protocol) else {
                let message = match (&last_problem, tried.len()) {
                    (Some(p), n) => format!("no agent of the group could take the call ({n} tried; last: {p})"),
                    (None, _) if protocol > 1 && self.online_in_group(group_id) > 0 => {
                        "the group's online agents run a dibop-agent release too old for connector calls: upgrade them".to_owned()
                    }
                    (None, _) => "no agent of this group is online: check that dibop-agent runs at the site and can reach the control plane".to_owned(),
                };
                let mut result =
                    CallResult::failure(request, "", ErrorClass::AgentUnavailable, message);
                result.attempts = attempts;
                return plain(result);
            };
            tried.push(agent.connection.stable_id());
            match self.attempt(&agent, message, request).await {
                Attempt::Done(mut out) => {
                    out.result.attempts = out.result.attempts.max(1) + attempts;
                    agent.calls_total.fetch_add(1, Ordering::Relaxed);
                    return *out;
                }
                Attempt::NotSent(problem) => {
                    debug!(agent_id = %agent.id, "call not delivered, trying another agent: {problem}");
                    last_problem = Some(problem);
                }
                Attempt::Lost(problem) => {
                    attempts += 1;
                    let safe = is_idempotent(&request.method)
                        || matches!(message, ControlToAgent::Invoke(r) if r.retry.safe_to_retry);
                    if safe {
                        warn!(agent_id = %agent.id, "agent lost during a {} call, retrying elsewhere: {problem}", request.method);
                        last_problem = Some(problem);
                        continue;
                    }
                    let mut result = CallResult::failure(
                        request,
                        &agent.id,
                        ErrorClass::AgentUnavailable,
                        format!(
                            "agent {} went away during the call ({problem}); a {} call is not repeated automatically, \
                             and it may have been performed",
                            agent.id, request.method
                        ),
                    );
                    result.attempts = attempts;
                    return plain(result);
                }
            }
        }
    }

    async fn attempt(
        &self,
        agent: &Arc<LiveAgent>,
        message: &ControlToAgent,
        request: &CallRequest,
    ) -> Attempt {
        agent.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(&agent.in_flight);
        let (mut send, recv) = match agent.connection.open_bi().await {
            Ok(s) => s,
            Err(e) => return Attempt::NotSent(format!("cannot open a stream: {e}")),
        };
        let mut stream = CallStream { recv, done: false };
        if let Err(e) = write_frame(&mut send, message).await {
            return Attempt::NotSent(format!("cannot send the request: {e}"));
        }
        send.finish().await;
        let wait = answer_deadline(message);
        let started = Instant::now();
        // From protocol 3 the agent acknowledges the call before performing
        // it, and answers probes: until it acknowledges, the call can move.
        let live = agent.protocol >= 3;
        let mut accepted = !live;
        let mut tick = tokio::time::interval(LIVENESS_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        loop {
            let frame = tokio::select! {
                f = read_frame::<AgentToControl, _>(&mut stream.recv, MAX_FRAME_LEN) => f,
                _ = tick.tick() => {
                    if started.elapsed() >= wait {
                        return done(CallResult::failure(
                            request,
                            &agent.id,
                            ErrorClass::Timeout,
                            format!(
                                "no result from agent {} within {} ms",
                                agent.id,
                                started.elapsed().as_millis()
                            ),
                        ));
                    }
                    if live {
                        // Silence counts from this call's start: an idle agent
                        // has had nothing to say before it. A slow path (a
                        // satellite link, a far VPN) gets its round trips' worth.
                        let silent = agent.heard.silent_for().min(started.elapsed());
                        let rtt = agent.connection.rtt();
                        let (probe_after, dead_after) =
                            (PROBE_AFTER.max(rtt * 2), DEAD_AFTER.max(rtt * 4 + PROBE_AFTER));
                        if silent >= dead_after {
                            warn!(agent_id = %agent.id, silent_ms = silent.as_millis() as u64,
                                "agent silent and not answering probes: closing its tunnel");
                            agent.connection.close(codes::CLOSE_UNRESPONSIVE,
                                b"no answer to liveness probes",
                            );
                            let why = format!("agent {} stopped answering", agent.id);
                            return if accepted { Attempt::Lost(why) } else { Attempt::NotSent(why) };
                        }
                        if silent >= probe_after && agent.heard.claim_probe() {
                            probe(agent.clone());
                        }
                    }
                    continue;
                }
            };
            if live {
                agent.heard.now();
            }
            return match frame {
                Ok(Some(AgentToControl::Accepted(_))) if !accepted => {
                    accepted = true;
                    continue;
                }
                Ok(Some(AgentToControl::CallResult(mut result))) => {
                    stream.done = true;
                    result.call_id = request.call_id;
                    done(result)
                }
                Ok(Some(AgentToControl::InvokeResult(mut out)))
                    if matches!(message, ControlToAgent::Invoke(_)) =>
                {
                    stream.done = true;
                    out.result.call_id = request.call_id;
                    Attempt::Done(out)
                }
                Ok(other) => done(CallResult::failure(
                    request,
                    &agent.id,
                    ErrorClass::Internal,
                    format!("the agent answered the call with {}", describe(&other)),
                )),
                Err(WireError::Frame(e)) => {
                    warn!(agent_id = %agent.id, "malformed call result: {e}");
                    done(CallResult::failure(
                        request,
                        &agent.id,
                        ErrorClass::Internal,
                        format!("the agent sent a malformed result: {e}"),
                    ))
                }
                // The stream broke before the agent took the call: it never had it.
                Err(e) if !accepted => Attempt::NotSent(e.to_string()),
                Err(e) => Attempt::Lost(e.to_string()),
            };
        }
    }
}

fn describe(message: &Option<AgentToControl>) -> String {
    match message {
        None => "nothing (the stream ended)".into(),
        Some(m) => format!("an unexpected message ({:?})", std::mem::discriminant(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_methods_are_repeated() {
        assert!(is_idempotent("GET"));
        assert!(is_idempotent("put"));
        assert!(!is_idempotent("POST"));
        assert!(!is_idempotent("PATCH"));
    }

    /// The control plane waits for every attempt the agent may make: a 5 s
    /// timeout with 3 attempts and pauses of up to 2 s is never cut off at
    /// 5 s + grace while the agent is still retrying.
    #[test]
    fn the_answer_deadline_covers_the_retry_policy() {
        let call = CallRequest {
            call_id: 0,
            method: "GET".into(),
            url: "http://x/".into(),
            headers: vec![],
            body: vec![],
            timeout_ms: 5000,
        };
        assert_eq!(
            answer_deadline(&ControlToAgent::Call(call.clone())),
            Duration::from_secs(5) + RESULT_GRACE
        );
        let invoke = InvokeRequest {
            call,
            auth: dibop_protocol::CallAuth::None,
            auth_cache_key: String::new(),
            retry: dibop_protocol::RetryPolicy {
                max_attempts: 3,
                initial_backoff_ms: 200,
                max_backoff_ms: 2000,
                safe_to_retry: false,
            },
            tls: Default::default(),
            proxy: None,
        };
        let deadline = answer_deadline(&ControlToAgent::Invoke(Box::new(invoke)));
        assert!(
            deadline >= Duration::from_secs(3 * 5 + 2 * 2),
            "{deadline:?}"
        );
    }

    #[tokio::test]
    async fn no_agent_means_agent_unavailable() {
        let registry = Registry::default();
        let request = CallRequest {
            call_id: 0,
            method: "GET".into(),
            url: "http://x/".into(),
            headers: vec![],
            body: vec![],
            timeout_ms: 1000,
        };
        let result = registry.call("grp_none", request).await;
        assert!(!result.ok);
        assert_eq!(
            result.error.map(|e| e.class),
            Some(ErrorClass::AgentUnavailable)
        );
    }
}

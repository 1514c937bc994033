//! Wall-clock time at the resolutions the control plane needs beside
//! `store::now_unix` (seconds): milliseconds and microseconds since the Unix
//! epoch, for leases of time shorter than a second (rate slots, liveness,
//! durable delays, shared windows).

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    now_us() / 1000
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

//! A small time-bounded cache for hot-path lookups (tokens, tenant plans):
//! entries expire after a fixed time, and the map is swept of expired
//! entries whenever it passes its size bound, so it cannot grow without end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// String-keyed values that expire `ttl` after they were stored.
#[derive(Debug)]
pub struct TtlCache<V> {
    ttl: Duration,
    sweep_above: usize,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    /// A cache whose entries live `ttl`, swept when above `sweep_above` entries.
    pub fn new(ttl: Duration, sweep_above: usize) -> Self {
        TtlCache {
            ttl,
            sweep_above,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value, if stored less than `ttl` ago.
    pub fn get(&self, key: &str) -> Option<V> {
        self.map()
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    /// Stores a value.
    pub fn insert(&self, key: String, value: V) {
        let mut map = self.map();
        if map.len() > self.sweep_above {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        map.insert(key, (Instant::now(), value));
    }

    /// Drops the entries whose value matches.
    pub fn remove_where(&self, matches: impl Fn(&V) -> bool) {
        self.map().retain(|_, (_, v)| !matches(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_map_stays_bounded() {
        let cache = TtlCache::new(Duration::from_millis(20), 2);
        cache.insert("a".into(), 1);
        assert_eq!(cache.get("a"), Some(1));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(cache.get("a"), None, "expired");
        cache.insert("b".into(), 2);
        cache.insert("c".into(), 3);
        cache.insert("d".into(), 4);
        assert!(cache.map().len() <= 3, "the expired entry was swept");
        cache.remove_where(|v| *v == 3);
        assert_eq!(cache.get("c"), None);
        assert_eq!(cache.get("d"), Some(4));
    }
}

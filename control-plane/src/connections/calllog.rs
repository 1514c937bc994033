//! The API-call log's write path: calls are buffered in memory and written
//! in batches (one transaction every 100 ms, or sooner past 1,000 rows), so
//! the hot path never waits for a database write. Reads of the log and of
//! usage flush first, so this node always shows its own calls. At shutdown
//! the buffer is written; a crash (SIGKILL, power loss) loses the call-log rows of
//! at most the last 100 ms. Calls made by orchestration steps are also in the
//! steps' durable records.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Core;
use crate::store::{ApiCallRow, CallPayloadRow, Store};

/// Rows that trigger an early write.
const EARLY_FLUSH: usize = 1000;

/// Buffered call records.
#[derive(Debug, Default)]
pub struct CallLog {
    pending: Mutex<Vec<(ApiCallRow, Option<CallPayloadRow>)>>,
    wake: tokio::sync::Notify,
    /// Serializes flushes so batches land in order.
    writing: tokio::sync::Mutex<()>,
}

impl CallLog {
    /// Queues a record.
    pub fn push(&self, row: ApiCallRow) {
        self.push_with(row, None);
    }

    /// Queues a record with its payload.
    pub fn push_with(&self, row: ApiCallRow, payload: Option<CallPayloadRow>) {
        let len = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.push((row, payload));
            pending.len()
        };
        if len >= EARLY_FLUSH {
            self.wake.notify_one();
        }
    }

    /// Writes everything queued so far.
    pub async fn flush(&self, store: &Store) {
        let _writing = self.writing.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.record_calls_with(&batch).await {
            tracing::error!(
                calls = batch.len(),
                "cannot write the API-call log, keeping the batch: {e}"
            );
            // Put them back in front so the next flush retries them.
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let newer = std::mem::replace(&mut *pending, batch);
            pending.extend(newer);
        }
    }
}

/// Writes the call log every 100 ms (or sooner) until shutdown, then once more.
pub async fn run(core: Arc<Core>, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = core.calls.wake.notified() => {}
            _ = shutdown.cancelled() => break,
        }
        core.calls.flush(&core.store).await;
    }
    core.calls.flush(&core.store).await;
}

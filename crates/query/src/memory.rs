//! Memory of the whole process: each query runs in a pool of its own
//! ([`Limits::memory_bytes`]), and at most as many queries run at once as such pools fit in
//! [`Limits::total_memory_bytes`]; the others wait for a place, within their deadline. So
//! several large queries at once cannot take more than the server was given together (three
//! analyst queries took 7.5 GB before, each within its 1 GiB), and an admitted query always
//! has its whole pool: a shared pool instead failed queries that fit their own, only because
//! others ran beside them.
//!
//! [`Limits::memory_bytes`]: crate::Limits::memory_bytes
//! [`Limits::total_memory_bytes`]: crate::Limits::total_memory_bytes

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The places for running queries.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    places: Arc<Semaphore>,
}

impl Admission {
    /// As many places as pools of `per_query` bytes fit in `total` (one at least).
    pub(crate) fn new(per_query: usize, total: usize) -> Self {
        let places = (total / per_query.max(1)).clamp(1, Semaphore::MAX_PERMITS);
        Self { places: Arc::new(Semaphore::new(places)) }
    }

    /// Waits for a place; the query runs while the permit lives.
    pub(crate) async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.places).acquire_owned().await.ok()
    }

    /// Places free now.
    #[cfg(test)]
    fn free(&self) -> usize {
        self.places.available_permits()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed step should fail loudly

    use super::*;

    #[tokio::test]
    async fn as_many_queries_run_as_their_pools_fit_in_the_process() {
        let admission = Admission::new(1 << 30, 4 << 30);
        let running: Vec<_> = futures::future::join_all((0..4).map(|_| admission.enter())).await;
        assert_eq!(admission.free(), 0);
        // A fifth waits until one ends.
        let fifth = admission.enter();
        tokio::pin!(fifth);
        assert!(futures::poll!(fifth.as_mut()).is_pending());
        drop(running);
        assert!(fifth.await.is_some());
        // A process smaller than one pool still runs one query at a time.
        assert_eq!(Admission::new(1 << 30, 1 << 20).free(), 1);
    }
}

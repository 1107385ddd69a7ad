//! Memory of the whole process: each query runs in a pool of its own
//! ([`Limits::memory_bytes`]), and at most as many queries run at once as such pools fit in
//! [`Limits::total_memory_bytes`]; the others wait for a place, within their deadline. So
//! several large queries at once cannot take more than the server was given together (three
//! analyst queries took 7.5 GB before, each within its 1 GiB), and an admitted query always
//! has its whole pool: a shared pool instead failed queries that fit their own, only because
//! others ran beside them. Other work that holds data in memory (a registration's ingest, an
//! extract's build) takes places from the same budget while it runs ([`Admission::reserve`]).
//!
//! [`Limits::memory_bytes`]: crate::Limits::memory_bytes
//! [`Limits::total_memory_bytes`]: crate::Limits::total_memory_bytes

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The places for running queries.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    places: Arc<Semaphore>,
    /// How many places there are, and the bytes of one.
    count: usize,
    place_bytes: usize,
}

/// Places held by work other than a query, for as long as it lives.
#[derive(Debug)]
pub struct Reserved {
    _places: OwnedSemaphorePermit,
}

/// Why memory could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unreserved {
    /// The work needs more than the whole budget.
    #[error(
        "it needs about {}, more than the {} this server gives queries and builds together",
        size(*needed),
        size(*total)
    )]
    TooLarge {
        /// Its estimate, in bytes.
        needed: u64,
        /// The whole budget, in bytes.
        total: u64,
    },
    /// No room came free within the wait.
    #[error("the server's memory is taken by other queries and builds; try again shortly")]
    Busy,
}

/// `bytes` as a person reads them: MiB, or KiB below one MiB.
fn size(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{} KiB", bytes.div_ceil(1 << 10))
    } else {
        format!("{} MiB", bytes.div_ceil(1 << 20))
    }
}

impl Admission {
    /// As many places as pools of `per_query` bytes fit in `total` (one at least).
    pub(crate) fn new(per_query: usize, total: usize) -> Self {
        let count = (total / per_query.max(1)).clamp(1, Semaphore::MAX_PERMITS);
        Self { places: Arc::new(Semaphore::new(count)), count, place_bytes: per_query.max(1) }
    }

    /// Waits for a place; the query runs while the permit lives.
    pub(crate) async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.places).acquire_owned().await.ok()
    }

    /// Places for work expected to hold about `bytes` (one place at least), waiting at most
    /// `wait` for them.
    pub(crate) async fn reserve(&self, bytes: u64, wait: std::time::Duration) -> Result<Reserved, Unreserved> {
        let needed = bytes.div_ceil(self.place_bytes as u64).max(1);
        if needed > self.count as u64 {
            let total = self.count as u64 * self.place_bytes as u64;
            return Err(Unreserved::TooLarge { needed: bytes, total });
        }
        let acquire = Arc::clone(&self.places).acquire_many_owned(needed as u32);
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(places)) => Ok(Reserved { _places: places }),
            _ => Err(Unreserved::Busy),
        }
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

    #[tokio::test]
    async fn other_work_takes_places_from_the_same_budget() {
        let admission = Admission::new(1 << 30, 4 << 30);
        let wait = std::time::Duration::from_millis(20);
        // 2.5 GiB of building takes three places; one is left for a query.
        let build = admission.reserve(5 << 29, wait).await.unwrap();
        assert_eq!(admission.free(), 1);
        let query = admission.enter().await;
        assert!(matches!(admission.reserve(1, wait).await, Err(Unreserved::Busy)), "nothing free: waits, then busy");
        drop((build, query));
        assert_eq!(admission.free(), 4);
        // More than the whole budget is refused at once, with what it needs.
        let refused = admission.reserve(5 << 30, wait).await.unwrap_err();
        assert_eq!(refused, Unreserved::TooLarge { needed: 5 << 30, total: 4 << 30 });
        assert!(refused.to_string().contains("about 5120 MiB, more than the 4096 MiB"), "{refused}");
    }
}

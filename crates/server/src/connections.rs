//! The connection loop under the router: what axum's `serve` does, plus the limits a server
//! facing untrusted clients needs (a red team kept 50 slow connections open for minutes, made
//! the server unreachable with 1,100 idle ones, and held shutdown forever with half-sent
//! requests):
//!
//! - a request's headers must arrive within [`HEADER_TIMEOUT`], and an idle keep-alive
//!   connection waiting for its next request is closed after as long;
//! - at most [`MAX_CONNECTIONS`] connections are served at once; more wait in the kernel's
//!   backlog until one closes, so the process never runs out of descriptors for its own files;
//! - on shutdown the listener closes, connections finish their requests within a grace period
//!   (`veil serve --shutdown-grace`, [`SHUTDOWN_GRACE`] by default) or until a second signal,
//!   and whatever is left is dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a client may take to send a request's headers, or to start its next request.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 512;

/// How long shutdown waits for requests in flight, unless told otherwise.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `stop.begin` completes, then lets connections finish
/// their requests for at most `stop.grace`, or until `stop.now` completes.
///
/// # Errors
/// Never at present: accept errors (out of descriptors, a reset connection) are logged and the
/// loop goes on after a short pause.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    stop: Stop<impl Future<Output = ()> + Send + 'static, impl Future<Output = ()> + Send + 'static>,
) -> std::io::Result<()> {
    let Stop { begin: shutdown, now, grace } = stop;
    tokio::pin!(now);
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(true);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    let open = MAX_CONNECTIONS - permits.available_permits();
    if open > 0 {
        tracing::info!(
            connections = open,
            grace_seconds = grace.as_secs(),
            "shutting down: waiting for the requests of open connections; a second signal stops now"
        );
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            let open = MAX_CONNECTIONS - permits.available_permits();
            tracing::warn!(connections = open, "connections still open after the shutdown grace period were closed");
        }
        () = &mut now => {
            let open = MAX_CONNECTIONS - permits.available_permits();
            tracing::warn!(connections = open, "stopping now on a second signal: open connections were closed");
        }
    }
    Ok(())
}

/// When and how a server stops: `begin` starts a graceful shutdown, in which open connections
/// have `grace` to finish their requests; `now` ends the wait early (a second Ctrl-C).
pub struct Stop<B, N> {
    /// Completes when shutdown should begin.
    pub begin: B,
    /// Completes when shutdown should stop waiting for open connections.
    pub now: N,
    /// The longest shutdown waits for open connections.
    pub grace: Duration,
}

impl<B: Future<Output = ()>> Stop<B, std::future::Pending<()>> {
    /// Stops when `begin` completes, waiting the standard grace for open connections.
    pub fn on(begin: B) -> Self {
        Self { begin, now: std::future::pending(), grace: SHUTDOWN_GRACE }
    }
}

/// Descriptors the process asks for: [`MAX_CONNECTIONS`] connections, and room besides for the
/// catalogue, the audit log, dataset files and spill files (a red team made the server
/// unreachable with idle connections at a limit of 1,024).
const WANTED_DESCRIPTORS: u64 = 65_536;

/// Raises the soft limit on open descriptors towards [`WANTED_DESCRIPTORS`], as far as the hard
/// limit allows (which needs no privilege), and warns when it stays below what the connection
/// cap needs. A process-wide limit is the binary's to set, once at start (`veil serve` does),
/// not the library's on every run.
pub fn raise_descriptor_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = limit.maximum.map_or(WANTED_DESCRIPTORS, |hard| hard.min(WANTED_DESCRIPTORS));
    let current = limit.current.unwrap_or(u64::MAX);
    let now = if current < wanted {
        match setrlimit(Resource::Nofile, Rlimit { current: Some(wanted), maximum: limit.maximum }) {
            Ok(()) => wanted,
            Err(e) => {
                tracing::warn!(error = %e, current, "the open-descriptor limit could not be raised");
                current
            }
        }
    } else {
        current
    };
    if now < 2 * MAX_CONNECTIONS as u64 {
        tracing::warn!(
            limit = now,
            connections = MAX_CONNECTIONS,
            "the open-descriptor limit is low for the connection cap; raise the hard limit (ulimit -Hn)"
        );
    } else {
        tracing::debug!(limit = now, "open-descriptor limit");
    }
}

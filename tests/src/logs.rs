//! Every server a test process starts logs at trace level, as JSON lines, into one buffer, through
//! the filter `veil` itself logs with (`veil_server::logs`), so that tests can search what a
//! server wrote for values of the data.

use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// Appends what it is given to the process's log buffer.
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing this process's log at trace level, once.
pub fn capture() {
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&buffer);
        let layer = veil_server::logs::layer(EnvFilter::new("trace"), true, move || Buffer(Arc::clone(&shared)), false);
        // Another subscriber already set (a test of its own) leaves this one out.
        let _ = tracing_subscriber::registry().with(layer).try_init();
        buffer
    });
}

/// Everything logged so far in this process.
pub fn captured() -> String {
    LOG.get()
        .map(|b| String::from_utf8_lossy(&b.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).into_owned())
        .unwrap_or_default()
}

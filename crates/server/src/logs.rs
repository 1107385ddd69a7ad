//! The process's log: what `veil` writes to stderr, and what the tests write to a buffer to
//! search it for data values.
//!
//! Other crates than Veil's log at most warnings, whatever the level asked for: DataFusion and
//! sqlparser print plans, tokens and filter bounds at their debug and trace levels, and those
//! carry literals and values read from datasets (a join on 身份证号 wrote real ID numbers at
//! debug). Veil's own lines describe its steps, never values.

use tracing::Subscriber;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, fmt};

/// A log layer writing to `writer` at `levels` (`EnvFilter` directives such as `info` or
/// `veil_query=trace`), as JSON lines or text, with colour codes only where `ansi` says.
pub fn layer<S, W>(levels: EnvFilter, json: bool, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let ours_or_warning = filter_fn(|meta| is_veil_target(meta.target()) || *meta.level() <= tracing::Level::WARN);
    let filter = levels.and(ours_or_warning);
    // A log line that cannot be written (stderr redirected to a full disk, or closed) is
    // dropped: reporting it would print to stderr again, and Rust's eprintln! panics when that
    // fails too, so a full disk under the log would end the server instead of one line.
    let layer = fmt::layer().with_writer(writer).with_ansi(ansi).log_internal_errors(false);
    if json { layer.json().with_filter(filter).boxed() } else { layer.with_filter(filter).boxed() }
}

/// Whether a log target is one of Veil's crates (`veil`, `veil_server`, …).
fn is_veil_target(target: &str) -> bool {
    target.split("::").next().is_some_and(|krate| krate == "veil" || krate.starts_with("veil_"))
}

#[cfg(test)]
mod tests {
    use super::is_veil_target;

    #[test]
    fn only_veils_crates_are_veil_targets() {
        for ours in ["veil", "veil::serve", "veil_query::release", "veil_server"] {
            assert!(is_veil_target(ours), "{ours}");
        }
        for theirs in ["datafusion_optimizer::optimizer", "sqlparser::parser", "veilside", "hyper"] {
            assert!(!is_veil_target(theirs), "{theirs}");
        }
    }
}

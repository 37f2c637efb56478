//! Stopping on SIGINT/SIGTERM within a bound.
//!
//! The first signal cancels the service's token: it stops taking work and
//! drains (the indexer's source stops, its writer flushes, its cursor saves
//! what ClickHouse acknowledged). A drain can hang (a ClickHouse that accepts
//! connections and never answers), so it is bounded: past the grace period
//! the process exits with [`EXIT_GRACE_PASSED`], and a second signal exits at
//! once with 128 + the signal's number, as a shell reports a process killed
//! by it. Either way one error line says what was still unfinished, in the
//! words of the service's [`Pending`]. Exiting there is safe for the data
//! because nothing is acknowledged early: the indexer's cursor only moves
//! after ClickHouse acknowledged a batch, a backfill entry is acked only
//! after its rows are stored, so what was cut short is read again by the
//! next start (or another worker).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The default bound on a drain (`--shutdown-grace-secs`,
/// `SKYHOUSE_SHUTDOWN_GRACE_SECS`): a healthy writer flushes its open batch
/// and the one in flight in a few seconds; 30 s leaves room for a slow
/// ClickHouse. Give the orchestrator's own kill timeout a little more (the
/// compose file gives the services 40 s).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Exit status when the grace period passes before the drain finished.
pub const EXIT_GRACE_PASSED: i32 = 1;

/// What a stopping service has not finished yet, in words, for the line
/// printed when it is cut short (the grace period passed, or a second
/// signal came). The service sets a description; it is only called then.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Pending(Arc<Mutex<Option<Describe>>>);

type Describe = Arc<dyn Fn() -> String + Send + Sync>;

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl Pending {
    /// Describe what is unfinished with `describe`: a phrase that reads
    /// after "passed with", e.g. "51,000 rows not acknowledged by
    /// ClickHouse; cursor saved at 123". Replaces an earlier description.
    pub fn describe_with(&self, describe: impl Fn() -> String + Send + Sync + 'static) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(describe));
    }

    /// What is unfinished now.
    pub fn describe(&self) -> String {
        let describe = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match describe {
            Some(d) => d(),
            None => "its drain unfinished".to_owned(),
        }
    }
}

/// A token cancelled on the first SIGINT (Ctrl-C) or SIGTERM: the service
/// drains and exits when it fires. After it, the process exits on its own
/// if it is still running `grace` later ([`EXIT_GRACE_PASSED`]), or at once
/// on a second signal (128 + its number: 130 for SIGINT, 143 for SIGTERM),
/// with one error line naming what `pending` says is unfinished.
///
/// The handlers are installed before this returns (a signal from then on is
/// never the default "terminate now"). Call it inside the runtime.
pub fn shutdown_on_signals(grace: Duration, pending: Pending) -> CancellationToken {
    let token = CancellationToken::new();
    let mut signals = Signals::install();
    let t = token.clone();
    tokio::spawn(async move {
        let first = signals.next().await;
        tracing::info!(
            signal = first.name(),
            grace_secs = grace.as_secs(),
            "Shutdown requested; draining (a second signal exits at once)."
        );
        t.cancel();
        tokio::select! {
            second = signals.next() => {
                tracing::error!(
                    "Second {} during shutdown: exiting at once with {}.",
                    second.name(),
                    pending.describe()
                );
                std::process::exit(128 + second.number());
            }
            _ = tokio::time::sleep(grace) => {
                tracing::error!(
                    "Shutdown grace of {} s passed with {}; exiting.",
                    grace.as_secs(),
                    pending.describe()
                );
                std::process::exit(EXIT_GRACE_PASSED);
            }
        }
    });
    token
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }

    fn number(self) -> i32 {
        match self {
            Signal::Interrupt => 2,
            Signal::Terminate => 15,
        }
    }
}

/// SIGINT and SIGTERM, received as often as they come.
struct Signals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let unix = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(int), Ok(term)) => Some((int, term)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(error = %e, "Cannot handle SIGTERM; only Ctrl-C stops the service gracefully.");
                    None
                }
            };
            Signals { unix }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.unix {
            return tokio::select! {
                _ = int.recv() => Signal::Interrupt,
                _ = term.recv() => Signal::Terminate,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        Signal::Interrupt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_says_what_the_service_describes() {
        let pending = Pending::default();
        assert_eq!(pending.describe(), "its drain unfinished");
        let rows = Arc::new(std::sync::atomic::AtomicU64::new(5));
        let r = rows.clone();
        pending.describe_with(move || {
            format!(
                "{} rows not acknowledged",
                r.load(std::sync::atomic::Ordering::Relaxed)
            )
        });
        rows.store(7, std::sync::atomic::Ordering::Relaxed);
        // Evaluated when asked, not when set.
        assert_eq!(pending.clone().describe(), "7 rows not acknowledged");
    }
}

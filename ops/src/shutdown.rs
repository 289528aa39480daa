//! Turning SIGTERM/SIGINT into a cancellation that is handed down as a value, and bounding how long the
//! process may take to drain after it.

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled on the first SIGTERM or SIGINT. Must be called inside a Tokio runtime.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested, draining");
        cancel.cancel();
    });
    Ok(token)
}

/// How a daemon's main task ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The task returned on its own (before or after shutdown was requested).
    Finished(T),
    /// Shutdown was requested and the task did not finish within the drain timeout.
    DrainTimedOut,
}

/// Runs `task` to completion, but once `shutdown` is cancelled gives it at most `drain` more time.
pub async fn run_with_drain<T>(
    task: impl Future<Output = T>,
    shutdown: CancellationToken,
    drain: Duration,
) -> Outcome<T> {
    tokio::pin!(task);
    tokio::select! {
        out = &mut task => return Outcome::Finished(out),
        () = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(drain, task).await {
        Ok(out) => Outcome::Finished(out),
        Err(_) => Outcome::DrainTimedOut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_shutdown_is_cut_off_after_the_drain_timeout() {
        let token = CancellationToken::new();
        token.cancel();
        let never = std::future::pending::<()>();
        let start = tokio::time::Instant::now();
        let outcome = run_with_drain(never, token, Duration::from_secs(3)).await;
        assert_eq!(outcome, Outcome::DrainTimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_drains_in_time_reports_its_result() {
        let token = CancellationToken::new();
        let child = token.clone();
        let task = async move {
            child.cancelled().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            7
        };
        token.cancel();
        let outcome = run_with_drain(task, token, Duration::from_secs(3)).await;
        assert_eq!(outcome, Outcome::Finished(7));
    }
}

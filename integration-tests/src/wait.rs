//! Waiting on a condition with a deadline, instead of sleeping and hoping.

use std::future::Future;
use std::time::Duration;

use crate::{HarnessError, Result};

/// How often conditions are re-checked.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Polls `probe` until it returns `Ok`, or fails with [`HarnessError::Timeout`] after `timeout`, carrying the
/// last reason `probe` gave for not being there yet.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ticker = tokio::time::interval(POLL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let last = match probe().await {
            Ok(value) => return Ok(value),
            Err(reason) => reason,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_owned(),
                after: timeout,
                last,
            });
        }
    }
}

/// Blocking twin of [`until`], for code that runs outside an async runtime (Drop, namespace threads).
pub fn until_blocking<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> std::result::Result<T, String>,
) -> Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let last = match probe() {
            Ok(value) => return Ok(value),
            Err(reason) => reason,
        };
        if std::time::Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_owned(),
                after: timeout,
                last,
            });
        }
        std::thread::sleep(POLL_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn until_returns_the_value_once_the_condition_holds() {
        let mut calls = 0;
        let value = until("three calls", Duration::from_secs(1), || {
            calls += 1;
            let n = calls;
            async move {
                if n >= 3 {
                    Ok(n)
                } else {
                    Err(format!("only {n}"))
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn until_times_out_with_the_last_reason() {
        let err = until("never", Duration::from_millis(100), || async {
            Err::<(), _>("still no".to_owned())
        })
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("never") && text.contains("still no"),
            "{text}"
        );
    }

    #[test]
    fn until_blocking_times_out_with_the_last_reason() {
        let err = until_blocking("never", Duration::from_millis(60), || {
            Err::<(), _>("nope".to_owned())
        })
        .unwrap_err();
        assert!(err.to_string().contains("nope"));
    }
}

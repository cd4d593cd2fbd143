//! SIGTERM and Ctrl-C: finish the work in hand, commit, exit 0. A second signal aborts.

use brewline_speed::StopWhen;
use tokio::sync::watch;

/// A flag set by the first SIGTERM or SIGINT (and the sender, to stop from inside); a second
/// signal exits at once with 130.
pub fn signalled() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let set = tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("stopping: finishing the work in hand (signal again to abort)");
        let _ = set.send(true);
        wait_for_signal().await;
        std::process::exit(130);
    });
    (tx, rx)
}

/// A stop condition for a service: set by a signal, never by running out of work.
pub fn on_signal() -> (watch::Sender<bool>, StopWhen) {
    let (tx, rx) = signalled();
    // Only ever read, never set: a closed channel keeps its `false`.
    let (_, never) = watch::channel(false);
    (
        tx,
        StopWhen {
            drained: never,
            shutdown: rx,
        },
    )
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

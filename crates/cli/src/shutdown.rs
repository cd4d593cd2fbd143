//! SIGTERM and Ctrl-C: finish the work in hand, commit, exit 0.

use brewline_speed::StopWhen;
use tokio::sync::watch;

/// A stop condition set by SIGTERM or SIGINT (and the sender, to stop from inside). The
/// `drained` side never fires: a service runs until told to stop.
pub fn on_signal() -> (watch::Sender<bool>, StopWhen) {
    let (tx, rx) = watch::channel(false);
    let (never_tx, never) = watch::channel(false);
    let signalled = tx.clone();
    tokio::spawn(async move {
        let _keep = never_tx;
        wait_for_signal().await;
        tracing::info!("stopping: finishing the batch in hand");
        let _ = signalled.send(true);
    });
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

//! Graceful shutdown: every task holds a [`Shutdown`]; Ctrl-C (or the demo finishing) fires it once,
//! and each task finishes its current step, takes a last checkpoint and returns.

use tokio::sync::watch;

/// A handle that resolves when shutdown is requested.
#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

/// Fires the shutdown for every [`Shutdown`] cloned from it.
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

/// A new trigger and its first handle.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger { sender }, Shutdown { receiver })
}

impl ShutdownTrigger {
    /// Requests shutdown.
    pub fn fire(&self) {
        self.sender.send_replace(true);
    }

    /// Fires on Ctrl-C or SIGTERM.
    pub fn on_signals(self) {
        tokio::spawn(async move {
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("signal received");
            self.fire();
        });
    }
}

impl Shutdown {
    /// Resolves once shutdown is requested (at once if it already was).
    pub async fn recv(&mut self) {
        // An error means the trigger is gone, which also means: stop.
        let _ = self.receiver.wait_for(|fired| *fired).await;
    }
}

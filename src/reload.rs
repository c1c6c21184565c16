//! Asking the control thread to re-read the configuration file, and its answer. SIGHUP,
//! `POST /internal/reload` (answered on a shard) and [`crate::Server::reload`] all ask
//! here; the control thread (`control/reload.rs`) reads and validates the file, and
//! either applies it as a new generation (`crate::live`) or keeps the running one.

use std::sync::mpsc;
use std::time::Duration;

/// How long an asker waits for the control thread's answer.
pub(crate) const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Where reloads are asked for (one receiver: the control thread).
#[derive(Debug, Clone)]
pub(crate) struct Reloads(mpsc::Sender<Asked>);

/// One request for a reload, with where to send its outcome (none for SIGHUP).
#[derive(Debug)]
pub(crate) struct Asked {
    pub(crate) reply: Option<mpsc::Sender<Outcome>>,
}

/// A reload's outcome: the generation now running and what the file asked for that
/// waits for a restart; or why the file was rejected (the running configuration stays).
pub(crate) type Outcome = Result<Applied, String>;

#[derive(Debug, Clone)]
pub(crate) struct Applied {
    pub(crate) generation: u64,
    pub(crate) warnings: Vec<String>,
}

impl Reloads {
    pub(crate) fn new() -> (Reloads, mpsc::Receiver<Asked>) {
        let (tx, rx) = mpsc::channel();
        (Reloads(tx), rx)
    }

    /// Asks for a reload without waiting for it.
    pub(crate) fn ask(&self) {
        let _ = self.0.send(Asked { reply: None });
    }

    /// Asks for a reload; the receiver gets its outcome.
    pub(crate) fn ask_answered(&self) -> mpsc::Receiver<Outcome> {
        let (tx, rx) = mpsc::channel();
        // If the control thread is gone, the receiver says so by disconnecting.
        let _ = self.0.send(Asked { reply: Some(tx) });
        rx
    }

    /// Asks for a reload and blocks until it is done (not on a shard).
    pub(crate) fn reload(&self) -> Outcome {
        match self.ask_answered().recv_timeout(ANSWER_WITHIN) {
            Ok(outcome) => outcome,
            Err(mpsc::RecvTimeoutError::Timeout) => Err("the reload did not finish in time".into()),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err("the control thread is not running".into())
            }
        }
    }
}

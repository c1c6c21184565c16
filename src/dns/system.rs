//! The system resolver, when `dns.servers` is not set: `getaddrinfo` (through
//! `ToSocketAddrs`), which reads /etc/hosts, nsswitch and resolv.conf (search domains
//! included) as every other program does. It says nothing of TTLs.
//!
//! `getaddrinfo` blocks for as long as it likes (glibc: 5 s per server and attempt, by
//! resolv.conf) and cannot be cancelled. So each lookup runs on a thread of its own that
//! the caller waits for at most `dns.timeout_ms`; one still running after that is left to
//! finish on its own, its answer dropped. At most [`MAX_PENDING`] may be left running at
//! once: a resolver that hangs cannot make threads pile up.

use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::DnsError;

/// Most `getaddrinfo` calls running at once, abandoned ones included.
const MAX_PENDING: usize = 32;

static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Counts one running call until dropped (on its thread, whatever happens there).
struct Pending;

impl Drop for Pending {
    fn drop(&mut self) {
        PENDING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The addresses of `host`, waited for at most `timeout`.
pub(super) fn lookup(host: &str, timeout: Duration) -> Result<Vec<IpAddr>, DnsError> {
    if PENDING.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING {
        PENDING.fetch_sub(1, Ordering::Relaxed);
        return Err(DnsError::Failed(format!(
            "the system resolver is not answering ({MAX_PENDING} lookups still waiting)"
        )));
    }
    let pending = Pending;
    let (tx, rx) = mpsc::sync_channel(1);
    let name = host.to_string();
    let spawned = std::thread::Builder::new()
        .name("ringway-getaddrinfo".into())
        .spawn(move || {
            let _pending = pending;
            let found = (name.as_str(), 0)
                .to_socket_addrs()
                .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<_>>());
            let _ = tx.send(found);
        });
    if let Err(e) = spawned {
        return Err(DnsError::Failed(format!(
            "cannot start a lookup thread: {e}"
        )));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(ips)) => Ok(ips),
        Ok(Err(e)) => Err(classify(&e)),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(DnsError::Timeout),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(DnsError::Failed(
            "the lookup thread ended without an answer".into(),
        )),
    }
}

/// `getaddrinfo`'s error, by its message (std keeps only `gai_strerror`'s text): "no such
/// name" in glibc's, musl's and the BSDs' words is NXDOMAIN, "no address" is NODATA.
fn classify(e: &io::Error) -> DnsError {
    let text = e.to_string();
    let says = |words: &[&str]| words.iter().any(|w| text.contains(w));
    if says(&[
        "Name or service not known",
        "Name does not resolve",
        "nodename nor servname provided",
    ]) {
        DnsError::NxDomain
    } else if says(&["No address associated with hostname"]) {
        DnsError::NoAddress
    } else {
        DnsError::Failed(format!("system resolver: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getaddrinfo_errors_are_told_apart() {
        let gai = |m: &str| io::Error::other(format!("failed to lookup address information: {m}"));
        assert_eq!(
            classify(&gai("Name or service not known")),
            DnsError::NxDomain
        );
        assert_eq!(classify(&gai("Name does not resolve")), DnsError::NxDomain);
        assert_eq!(
            classify(&gai("No address associated with hostname")),
            DnsError::NoAddress
        );
        let again = classify(&gai("Temporary failure in name resolution"));
        assert!(again.is_transient(), "{again:?}");
    }
}

//! Name resolution for endpoint hosts, off the shards: once at start (the config loader
//! asks, with a bounded wait) and again while running (a [`DnsWatcher`] thread re-resolves
//! every watched name when its TTL, or `dns.refresh_interval_ms`, runs out). The control
//! thread polls the watcher's answers without blocking; nothing here runs on a shard.
//!
//! ```text
//!  config load ── Resolver::resolve (bounded) ──┐
//!                                               ├─ dns.servers set: `stub` (UDP, EDNS0,
//!  DnsWatcher thread ── one lookup thread ──────┘    TCP after TC; `wire` reads replies)
//!   (schedule: TTL, floor, ceiling)  per lookup      not set: `system` (getaddrinfo on a
//!        │                                           thread of its own, waited for with
//!        └─ mpsc ─► control thread (try_recv)        a timeout)
//! ```
//!
//! Why our own stub resolver rather than hickory-resolver: what ringway needs is A and
//! AAAA over UDP with a TCP fallback, TTLs, CNAME chains and the NXDOMAIN/timeout
//! distinction: some 900 lines of code here (1,160 with comments), plus their tests.
//! hickory-resolver 0.26 brings tokio and its own runtime into a process built on monoio
//! (a second reactor, a second timer wheel), 86 crates, Rust 1.88 (ours is 1.85), and
//! features (DNSSEC, DoH, DoT, caching, search lists) an endpoint list has no use for.
//! Measured with our release profile: a program that resolves one name with it is
//! 1.29 MB larger than one calling `getaddrinfo`; this module adds 88 KB to ringway
//! (5.14 MB). Without `dns.servers` the system's resolver (`getaddrinfo`: /etc/hosts,
//! nsswitch, resolv.conf search domains) is used, as before.
//!
//! What the stub resolver does not do: search domains (names are sent as written, so
//! write fully qualified names such as `vllm.infer.svc.cluster.local`), /etc/hosts,
//! DNSSEC, and caching beyond the watcher's own last answer.

mod stub;
mod system;
mod watcher;
mod wire;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use watcher::{DnsWatcher, Update};

/// Shortest wait between two resolutions of a name, whatever its TTL says: a TTL of 0 (or
/// a server flapping) cannot make a hot loop.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

/// `[dns]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Longest time an answer is used before the name is resolved again (shorter when its
    /// TTL says so, never below [`MIN_REFRESH`]); `None`: resolved once, at start.
    pub refresh_interval: Option<Duration>,
    /// The DNS servers asked, in order; empty: the system resolver (`getaddrinfo`).
    pub servers: Vec<SocketAddr>,
    /// Longest wait for one answer: per server and per exchange (UDP, then TCP when the
    /// UDP answer is truncated), and for the system resolver's whole lookup.
    pub timeout: Duration,
    /// Which address families are asked for (and kept from the system resolver).
    pub family: Family,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            refresh_interval: Some(Duration::from_secs(30)),
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
            family: Family::Both,
        }
    }
}

/// `dns.family`: which addresses a name resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A records only.
    Ipv4,
    /// AAAA records only.
    Ipv6,
    /// Both: A and AAAA (both must answer for a lookup to succeed).
    Both,
}

impl Family {
    pub fn parse(s: &str) -> Option<Family> {
        match s {
            "ipv4" => Some(Family::Ipv4),
            "ipv6" => Some(Family::Ipv6),
            "both" => Some(Family::Both),
            _ => None,
        }
    }

    /// As written in `dns.family`.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
            Family::Both => "both",
        }
    }

    fn wants(self, ip: &IpAddr) -> bool {
        match self {
            Family::Ipv4 => ip.is_ipv4(),
            Family::Ipv6 => ip.is_ipv6(),
            Family::Both => true,
        }
    }
}

/// A name's addresses, as one lookup found them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The name as it was asked for.
    pub host: String,
    /// Sorted (IPv4 first), without duplicates; never empty.
    pub addrs: Vec<IpAddr>,
    /// The smallest TTL of the records used (CNAMEs included); `None` from the system
    /// resolver, which does not say, and for an IP address.
    pub ttl: Option<Duration>,
    pub resolved_at: Instant,
}

impl Answer {
    /// The addresses with `port`: an endpoint's, its URL's port being theirs.
    pub fn on_port(&self, port: u16) -> Vec<SocketAddr> {
        self.addrs
            .iter()
            .map(|&ip| SocketAddr::new(ip, port))
            .collect()
    }
}

/// Why a lookup found no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// NXDOMAIN: the server says the name does not exist.
    NxDomain,
    /// The name exists but has no address of the families asked for (NODATA).
    NoAddress,
    /// No server answered within `dns.timeout_ms`.
    Timeout,
    /// Any other failure: SERVFAIL, REFUSED, an unreadable answer, a socket error, the
    /// system resolver's error. The text says which, and from which server.
    Failed(String),
}

impl DnsError {
    /// A failure that says nothing about the name (a server down, slow or broken), as
    /// opposed to an answer about it (NXDOMAIN, NODATA).
    pub fn is_transient(&self) -> bool {
        matches!(self, DnsError::Timeout | DnsError::Failed(_))
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::NxDomain => f.write_str("no such name (NXDOMAIN)"),
            DnsError::NoAddress => f.write_str("the name has no address (NODATA)"),
            DnsError::Timeout => f.write_str("no answer in time"),
            DnsError::Failed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for DnsError {}

/// Resolves names the way `[dns]` says: through `dns.servers` with our stub resolver, or
/// through the system's. Blocking, and bounded by [`Resolver::budget`]: call it off the
/// shards and off the control thread's event loop (the config loader, a watcher thread).
#[derive(Debug, Clone)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    family: Family,
    timeout: Duration,
}

impl Resolver {
    pub fn new(config: &DnsConfig) -> Resolver {
        Resolver {
            servers: config.servers.clone(),
            family: config.family,
            timeout: config.timeout,
        }
    }

    /// The longest [`Resolver::resolve`] takes: per server, a UDP exchange and a TCP one
    /// after a truncated answer; the system resolver's lookup is waited for once.
    pub fn budget(&self) -> Duration {
        match self.servers.len() {
            0 => self.timeout,
            n => self.timeout * 2 * n as u32,
        }
    }

    /// Whether names go to `dns.servers` (rather than the system resolver).
    pub fn uses_servers(&self) -> bool {
        !self.servers.is_empty()
    }

    /// The addresses of `host` (a name, or an IP address returned as is).
    pub fn resolve(&self, host: &str) -> Result<Answer, DnsError> {
        let (ips, ttl) = match host.parse::<IpAddr>() {
            Ok(ip) => (vec![ip], None),
            Err(_) if self.servers.is_empty() => {
                let ips = system::lookup(host, self.timeout)?;
                (ips, None)
            }
            Err(_) => {
                let (ips, ttl) = stub::lookup(&self.servers, host, self.family, self.timeout)?;
                (ips, Some(Duration::from_secs(ttl.into())))
            }
        };
        let mut addrs: Vec<IpAddr> = ips.into_iter().filter(|ip| self.family.wants(ip)).collect();
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(DnsError::NoAddress);
        }
        Ok(Answer {
            host: host.to_string(),
            addrs,
            ttl,
            resolved_at: Instant::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_resolve_to_themselves_without_a_lookup() {
        let config = DnsConfig {
            // Nothing listens there: an IP address must not be sent anywhere.
            servers: vec!["127.0.0.1:9".parse().unwrap()],
            ..DnsConfig::default()
        };
        let r = Resolver::new(&config);
        let a = r.resolve("::1").unwrap();
        assert_eq!(a.addrs, ["::1".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.ttl, None);
        let v4 = Resolver::new(&DnsConfig {
            family: Family::Ipv4,
            ..config
        });
        assert_eq!(v4.resolve("::1"), Err(DnsError::NoAddress));
    }

    #[test]
    fn the_system_resolver_reads_the_hosts_file() {
        let r = Resolver::new(&DnsConfig::default());
        let a = r.resolve("localhost").unwrap();
        assert!(a.addrs.iter().all(IpAddr::is_loopback), "{a:?}");
        assert!(a.addrs.windows(2).all(|w| w[0] < w[1]), "sorted: {a:?}");
    }
}

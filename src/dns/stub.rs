//! Our stub resolver: asks `dns.servers`, in order, for a name's A and AAAA records. Both
//! queries go out at once on one UDP socket of a fresh random port, connected to the
//! server (the kernel then drops datagrams from anyone else; the source is checked again
//! here); a reply counts only if its id and question are ours. A truncated reply (TC) is
//! asked again over TCP. A query still unanswered after a third of `timeout` is sent
//! again, with the same id (a late reply to the first datagram still counts), so one lost
//! datagram costs a third of the wait, not the lookup. Blocking, with every wait bounded
//! by `timeout`: it runs on a watcher's lookup thread or in the config loader, never on
//! a shard.
//!
//! A server that times out, fails (SERVFAIL, REFUSED) or answers garbage, for either
//! family, passes the lookup to the next server; NXDOMAIN and NODATA are answers about
//! the name, and end it.

use std::hash::{BuildHasher, RandomState};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::wire::{self, Query, Rejected, Reply, TYPE_A, TYPE_AAAA};
use super::{DnsError, Family};

/// Largest datagram read: more than the payload size advertised, so that a server that
/// ignores it is read whole rather than cut.
const MAX_DATAGRAM: usize = 65_535;
/// How many times, in all, an unanswered query goes out over UDP to one server: evenly
/// spaced over the server's `timeout`.
const SENDS: u32 = 3;

/// The addresses of `host` and the smallest TTL of the records used.
pub(super) fn lookup(
    servers: &[SocketAddr],
    host: &str,
    family: Family,
    timeout: Duration,
) -> Result<(Vec<IpAddr>, u32), DnsError> {
    let types: &[u16] = match family {
        Family::Ipv4 => &[TYPE_A],
        Family::Ipv6 => &[TYPE_AAAA],
        Family::Both => &[TYPE_A, TYPE_AAAA],
    };
    let mut last = DnsError::Timeout;
    for &server in servers {
        // Fresh ids for each server: a late reply from the one before cannot match.
        let queries = types
            .iter()
            .map(|&t| Query::new(random_id(), host, t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(DnsError::Failed)?;
        let (mut addrs, mut ttl, mut failure, mut nxdomain) = (Vec::new(), None, None, false);
        for result in ask(server, &queries, timeout) {
            match result {
                Ok(Reply::Answer { addrs: a, ttl: t }) => {
                    addrs.extend(a);
                    ttl = match (ttl, t) {
                        (Some(x), Some(y)) => Some(u32::min(x, y)),
                        (x, y) => x.or(y),
                    };
                }
                Ok(Reply::NxDomain) => nxdomain = true,
                Ok(Reply::Rcode(code)) => {
                    let what = rcode_name(code);
                    failure = Some(DnsError::Failed(format!("{server} answered {what}")));
                }
                Ok(Reply::Truncated) => {
                    let why = format!("{server}: a truncated answer even over TCP");
                    failure = Some(DnsError::Failed(why));
                }
                Err(e) => failure = Some(e),
            }
        }
        if nxdomain {
            return Err(DnsError::NxDomain);
        }
        if let Some(e) = failure {
            last = e;
            continue;
        }
        return match ttl {
            Some(ttl) if !addrs.is_empty() => Ok((addrs, ttl)),
            _ => Err(DnsError::NoAddress),
        };
    }
    Err(last)
}

/// Sends every query to `server` over UDP and collects each one's reply (over TCP for
/// one that came back truncated), in the queries' order.
fn ask(server: SocketAddr, queries: &[Query], timeout: Duration) -> Vec<Result<Reply, DnsError>> {
    let failed = |e: &io::Error| DnsError::Failed(format!("{server}: {e}"));
    let socket = match udp_socket(server) {
        Ok(s) => s,
        Err(e) => return queries.iter().map(|_| Err(failed(&e))).collect(),
    };
    let started = Instant::now();
    let deadline = started + timeout;
    let mut results: Vec<Option<Result<Reply, DnsError>>> = queries.iter().map(|_| None).collect();
    // A reply with our id that could not be read: said if nothing better comes.
    let mut unreadable: Vec<Option<&'static str>> = vec![None; queries.len()];
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let (mut sends, mut resend_at) = (0, started);
    while results.iter().any(Option::is_none) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if sends < SENDS && now >= resend_at {
            let sent = (queries.iter().zip(&results))
                .filter(|(_, r)| r.is_none())
                .try_for_each(|(q, _)| socket.send(&q.bytes).map(drop));
            if let Err(e) = sent {
                for r in results.iter_mut().filter(|r| r.is_none()) {
                    *r = Some(Err(failed(&e)));
                }
                break;
            }
            sends += 1;
            resend_at = started + timeout * sends / SENDS;
            continue;
        }
        let wait = if sends < SENDS { resend_at } else { deadline };
        let received = socket
            .set_read_timeout(Some(
                wait.saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            ))
            .and_then(|()| socket.recv_from(&mut buf));
        let (n, from) = match received {
            Ok(got) => got,
            Err(e) if is_timeout(&e) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // ECONNREFUSED (an ICMP port unreachable) and the like: no use waiting.
            Err(e) => {
                for r in results.iter_mut().filter(|r| r.is_none()) {
                    *r = Some(Err(failed(&e)));
                }
                break;
            }
        };
        if from != server {
            continue;
        }
        let msg = &buf[..n];
        for (i, q) in queries.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            match wire::parse_reply(msg, q) {
                Err(Rejected::NotOurs) => continue,
                Err(Rejected::Malformed(why)) => unreadable[i] = Some(why),
                Ok(Reply::Truncated) => results[i] = Some(over_tcp(server, q, timeout)),
                Ok(reply) => results[i] = Some(Ok(reply)),
            }
            break;
        }
    }
    results
        .into_iter()
        .zip(unreadable)
        .map(|(result, why)| {
            result.unwrap_or_else(|| {
                Err(match why {
                    Some(why) => DnsError::Failed(format!("{server}: unreadable reply: {why}")),
                    None => DnsError::Timeout,
                })
            })
        })
        .collect()
}

/// A UDP socket on a random port chosen by the kernel, connected to `server`.
fn udp_socket(server: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(server)?;
    Ok(socket)
}

/// Query `q` again over TCP (two-byte length prefix, RFC 1035 4.2.2; RFC 7766).
fn over_tcp(server: SocketAddr, q: &Query, timeout: Duration) -> Result<Reply, DnsError> {
    let failed = |e: io::Error| {
        if is_timeout(&e) {
            DnsError::Timeout
        } else {
            DnsError::Failed(format!("{server} over TCP: {e}"))
        }
    };
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&server, timeout).map_err(failed)?;
    let mut out = Vec::with_capacity(2 + q.bytes.len());
    out.extend_from_slice(&(q.bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(&q.bytes);
    let sent = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_write_timeout(Some(left(deadline)?)))
        .and_then(|()| stream.write_all(&out));
    sent.map_err(failed)?;
    let mut len = [0u8; 2];
    read_full(&mut stream, &mut len, deadline).map_err(failed)?;
    let mut msg = vec![0u8; u16::from_be_bytes(len).into()];
    read_full(&mut stream, &mut msg, deadline).map_err(failed)?;
    wire::parse_reply(&msg, q)
        .map_err(|r| DnsError::Failed(format!("{server} over TCP: {}", String::from(r))))
}

/// Fills `buf` from `stream` before `deadline`.
fn read_full(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        stream.set_read_timeout(Some(left(deadline)?))?;
        match stream.read(&mut buf[at..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed early")),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The time left before `deadline`; an error once it has passed (a zero timeout would
/// mean "wait forever" to the socket calls).
fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::ErrorKind::TimedOut.into())
    } else {
        Ok(left)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A query id nobody off the path can predict: SipHash with the process's random keys
/// over a counter.
fn random_id() -> u16 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    KEYS.get_or_init(RandomState::new).hash_one(n) as u16
}

fn rcode_name(code: u8) -> String {
    match code {
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        other => format!("RCODE {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply to `query` (as received) claiming `ip`, with `id` as its id.
    fn reply(query: &[u8], id: u16, ip: [u8; 4]) -> Vec<u8> {
        // The query: header, question, then the 11-byte OPT record.
        let question = &query[12..query.len() - 11];
        let mut m = id.to_be_bytes().to_vec();
        m.extend([0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
        m.extend_from_slice(question);
        m.extend([0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 9, 0, 4]);
        m.extend(ip);
        m
    }

    #[test]
    fn replies_from_elsewhere_or_to_other_queries_are_ignored() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let spoofer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let answering = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, client) = server.recv_from(&mut buf).unwrap();
            let query = &buf[..n];
            let id = u16::from_be_bytes([query[0], query[1]]);
            // Right id and question, wrong source: dropped (by the connected socket, and
            // checked again).
            spoofer
                .send_to(&reply(query, id, [6, 6, 6, 6]), client)
                .unwrap();
            // Right source, another id.
            server
                .send_to(&reply(query, id ^ 1, [7, 7, 7, 7]), client)
                .unwrap();
            // Right source and id, another question.
            let mut other = reply(query, id, [8, 8, 8, 8]);
            other[13] ^= 0x20 ^ 0x01;
            server.send_to(&other, client).unwrap();
            // Garbage.
            server.send_to(&[0xFF; 40], client).unwrap();
            server
                .send_to(&reply(query, id, [10, 0, 0, 1]), client)
                .unwrap();
        });
        let got = lookup(
            &[addr],
            "backends.test",
            Family::Ipv4,
            Duration::from_secs(2),
        );
        answering.join().unwrap();
        assert_eq!(got, Ok((vec![IpAddr::from([10, 0, 0, 1])], 9)));
    }

    #[test]
    fn a_closed_port_fails_fast() {
        // Bound then dropped: nothing listens there, the kernel answers "port
        // unreachable" and the wait ends before the timeout.
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let started = Instant::now();
        let got = lookup(
            &[closed],
            "backends.test",
            Family::Both,
            Duration::from_secs(5),
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        match got {
            Err(DnsError::Failed(why)) => assert!(why.contains(&closed.to_string()), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

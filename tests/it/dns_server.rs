//! A loopback DNS server for tests: UDP and TCP on one port of 127.0.0.1, answering A and
//! AAAA queries from a table the test changes while it runs (`set`, `set_cname`,
//! `remove`). It can misbehave on request: truncate every UDP answer (so the client must
//! ask again over TCP), stop answering, lose the next datagrams, or answer SERVFAIL. An answer larger than the
//! EDNS0 payload the query advertised (512 bytes without EDNS0) goes truncated over UDP,
//! as a real server's would. Unknown names get NXDOMAIN. It stops when dropped.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Clone)]
enum Entry {
    Addrs(Vec<IpAddr>, u32),
    Cname(String, u32),
}

#[derive(Default)]
struct Shared {
    table: Mutex<HashMap<String, Entry>>,
    truncate_udp: AtomicBool,
    silent: AtomicBool,
    servfail: AtomicBool,
    /// UDP queries still to be read and dropped, as a lost datagram would be.
    drop_udp: AtomicUsize,
    udp_queries: AtomicUsize,
    tcp_queries: AtomicUsize,
    stop: AtomicBool,
}

pub(crate) struct DnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP on a free port of 127.0.0.1, and TCP on the same port.
    pub(crate) fn start() -> DnsServer {
        let (udp, tcp) = (0..20)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").ok()?;
                let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
                Some((udp, tcp))
            })
            .expect("a port free for both UDP and TCP");
        let addr = udp.local_addr().unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared::default());
        let threads = vec![
            {
                let shared = shared.clone();
                std::thread::spawn(move || serve_udp(udp, &shared))
            },
            {
                let shared = shared.clone();
                std::thread::spawn(move || serve_tcp(tcp, &shared))
            },
        ];
        DnsServer {
            addr,
            shared,
            threads,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `name` (any case, with or without the final dot) answers `addrs` (its A and AAAA
    /// records) with `ttl` seconds.
    pub(crate) fn set(&self, name: &str, addrs: &[IpAddr], ttl: u32) {
        let entry = Entry::Addrs(addrs.to_vec(), ttl);
        self.shared.table.lock().unwrap().insert(key(name), entry);
    }

    /// `name` is a CNAME for `target`.
    pub(crate) fn set_cname(&self, name: &str, target: &str, ttl: u32) {
        let entry = Entry::Cname(key(target), ttl);
        self.shared.table.lock().unwrap().insert(key(name), entry);
    }

    /// `name` no longer exists (NXDOMAIN).
    pub(crate) fn remove(&self, name: &str) {
        self.shared.table.lock().unwrap().remove(&key(name));
    }

    /// Every UDP answer goes out truncated (TC set, no records).
    pub(crate) fn truncate_udp(&self, on: bool) {
        self.shared.truncate_udp.store(on, Ordering::SeqCst);
    }

    /// Queries are read and never answered.
    pub(crate) fn silence(&self, on: bool) {
        self.shared.silent.store(on, Ordering::SeqCst);
    }

    /// The next `n` UDP queries are read and dropped unanswered.
    pub(crate) fn drop_udp(&self, n: usize) {
        self.shared.drop_udp.store(n, Ordering::SeqCst);
    }

    /// Every query is answered SERVFAIL.
    pub(crate) fn servfail(&self, on: bool) {
        self.shared.servfail.store(on, Ordering::SeqCst);
    }

    pub(crate) fn udp_queries(&self) -> usize {
        self.shared.udp_queries.load(Ordering::SeqCst)
    }

    pub(crate) fn tcp_queries(&self) -> usize {
        self.shared.tcp_queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn serve_udp(socket: UdpSocket, shared: &Shared) {
    let mut buf = [0u8; 4096];
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        shared.udp_queries.fetch_add(1, Ordering::SeqCst);
        let Some(query) = Query::parse(&buf[..n]) else {
            continue;
        };
        let dropped = (shared.drop_udp)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if dropped || shared.silent.load(Ordering::SeqCst) {
            continue;
        }
        let mut reply = answer(&query, shared);
        let fits = reply.len() <= query.payload.into();
        if shared.truncate_udp.load(Ordering::SeqCst) || !fits {
            reply = query.reply_head(0x0200, 0, 0);
        }
        let _ = socket.send_to(&reply, from);
    }
}

fn serve_tcp(listener: TcpListener, shared: &Shared) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = serve_tcp_conn(stream, shared);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve_tcp_conn(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut msg = vec![0u8; u16::from_be_bytes(len).into()];
    stream.read_exact(&mut msg)?;
    shared.tcp_queries.fetch_add(1, Ordering::SeqCst);
    let Some(query) = Query::parse(&msg) else {
        return Ok(());
    };
    if shared.silent.load(Ordering::SeqCst) {
        return Ok(());
    }
    let reply = answer(&query, shared);
    let mut out = (reply.len() as u16).to_be_bytes().to_vec();
    out.extend(reply);
    stream.write_all(&out)
}

/// A query as the server reads it: trusted to be well formed (it comes from the code
/// under test), but read without panicking all the same.
struct Query<'a> {
    id: u16,
    /// The question as sent (name, type, class), echoed in the reply.
    question: &'a [u8],
    name: String,
    qtype: u16,
    /// The UDP payload size the client can take.
    payload: u16,
}

impl<'a> Query<'a> {
    fn parse(msg: &'a [u8]) -> Option<Query<'a>> {
        let id = u16::from_be_bytes([*msg.first()?, *msg.get(1)?]);
        let mut at = 12;
        let mut labels = Vec::new();
        loop {
            let len = *msg.get(at)? as usize;
            at += 1;
            if len == 0 {
                break;
            }
            labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).to_ascii_lowercase());
            at += len;
        }
        let qtype = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
        let question = msg.get(12..at + 4)?;
        // An OPT record right after the question: its class is the payload size.
        let payload = match msg.get(at + 4..at + 4 + 5) {
            Some(&[0, 0, 41, hi, lo]) => u16::from_be_bytes([hi, lo]).max(512),
            _ => 512,
        };
        Some(Query {
            id,
            question,
            name: labels.join("."),
            qtype,
            payload,
        })
    }

    /// Header and question of the reply, with `flags` added and the counts given.
    fn reply_head(&self, flags: u16, rcode: u8, ancount: u16) -> Vec<u8> {
        let mut m = self.id.to_be_bytes().to_vec();
        // QR, AA, RD, RA.
        m.extend((0x8580 | flags | u16::from(rcode)).to_be_bytes());
        m.extend([0, 1]);
        m.extend(ancount.to_be_bytes());
        m.extend([0, 0, 0, 0]);
        m.extend_from_slice(self.question);
        m
    }
}

/// The reply to `query` from the table: the CNAME chain, then the addresses of the
/// type asked for; NXDOMAIN for a name not in it. Owner names are written as pointers
/// (to the question, or to the CNAME target written before), as real servers do.
fn answer(query: &Query<'_>, shared: &Shared) -> Vec<u8> {
    if shared.servfail.load(Ordering::SeqCst) {
        return query.reply_head(0, 2, 0);
    }
    let table = shared.table.lock().unwrap().clone();
    let mut records = Vec::new();
    let mut count = 0u16;
    let mut name = query.name.clone();
    // Where the current owner name is written in the reply: the question's, at first.
    let mut owner_at: u16 = 12;
    let head_len = 12 + query.question.len();
    for _ in 0..16 {
        match table.get(&name) {
            None if count == 0 => return query.reply_head(0, 3, 0),
            None => break,
            Some(Entry::Cname(target, ttl)) => {
                let mut data = Vec::new();
                for label in target.split('.') {
                    data.push(label.len() as u8);
                    data.extend(label.as_bytes());
                }
                data.push(0);
                // The target is written at: head, records so far, this record's owner
                // pointer (2) and fixed fields (10).
                let target_at = (head_len + records.len() + 12) as u16;
                push_record(&mut records, owner_at, 5, *ttl, &data);
                count += 1;
                owner_at = target_at;
                name = target.clone();
            }
            Some(Entry::Addrs(addrs, ttl)) => {
                for ip in addrs {
                    match (ip, query.qtype) {
                        (IpAddr::V4(v4), 1) => {
                            push_record(&mut records, owner_at, 1, *ttl, &v4.octets())
                        }
                        (IpAddr::V6(v6), 28) => {
                            push_record(&mut records, owner_at, 28, *ttl, &v6.octets())
                        }
                        _ => continue,
                    }
                    count += 1;
                }
                break;
            }
        }
    }
    let mut reply = query.reply_head(0, 0, count);
    reply.extend(records);
    reply
}

fn push_record(out: &mut Vec<u8>, owner_at: u16, rtype: u16, ttl: u32, data: &[u8]) {
    out.extend((0xC000 | owner_at).to_be_bytes());
    out.extend(rtype.to_be_bytes());
    out.extend(1u16.to_be_bytes());
    out.extend(ttl.to_be_bytes());
    out.extend((data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

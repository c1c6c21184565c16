//! DNS messages on the wire (RFC 1035, EDNS0 from RFC 6891): one A or AAAA query built,
//! and its reply read. A reply comes from the network: every read is bounds-checked,
//! counts are never trusted to size anything, compression pointers must point strictly
//! before the labels that led to them (so they cannot loop), names stop at 255 bytes and
//! CNAME chains at [`MAX_CHAIN`] hops. Nothing here panics on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(super) const TYPE_A: u16 = 1;
pub(super) const TYPE_AAAA: u16 = 28;
const TYPE_CNAME: u16 = 5;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

/// The UDP payload size advertised with EDNS0: 1232 bytes fit any path's MTU without IP
/// fragmentation (DNS Flag Day 2020); a larger answer comes back truncated and is asked
/// again over TCP.
pub(super) const UDP_PAYLOAD: u16 = 1232;

/// Longest name, in wire form (RFC 1035 2.3.4).
const MAX_NAME: usize = 255;

/// Most CNAMEs followed from the name asked for to its addresses; a longer chain (or a
/// loop) is refused.
pub(super) const MAX_CHAIN: usize = 8;

/// Most compression pointers followed within one name; the backward rule already ends
/// every walk, this bounds its cost.
const MAX_JUMPS: usize = 32;

/// A query, ready to send.
pub(super) struct Query {
    pub(super) id: u16,
    pub(super) qtype: u16,
    /// The name asked for, in wire form, lower case.
    name: Vec<u8>,
    /// The whole message (without the TCP length prefix).
    pub(super) bytes: Vec<u8>,
}

impl Query {
    /// A recursive query for `qtype` records of `host`, with an EDNS0 OPT record.
    pub(super) fn new(id: u16, host: &str, qtype: u16) -> Result<Query, String> {
        let name = encode_name(host)?;
        let mut bytes = Vec::with_capacity(12 + name.len() + 4 + 11);
        bytes.extend_from_slice(&id.to_be_bytes());
        // RD (recursion desired); QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT 1 (OPT).
        bytes.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
        bytes.extend_from_slice(&name);
        bytes.extend_from_slice(&qtype.to_be_bytes());
        bytes.extend_from_slice(&CLASS_IN.to_be_bytes());
        // OPT: root name, type, the payload size as its class, extended RCODE, version
        // and flags 0 as its TTL, no options.
        bytes.push(0);
        bytes.extend_from_slice(&TYPE_OPT.to_be_bytes());
        bytes.extend_from_slice(&UDP_PAYLOAD.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        Ok(Query {
            id,
            qtype,
            name,
            bytes,
        })
    }
}

/// `host` in wire form (length-prefixed labels, lower case, ending with the root).
/// Letters, digits, `-` and `_` only: nothing else belongs in a host name, and nothing
/// else is sent.
fn encode_name(host: &str) -> Result<Vec<u8>, String> {
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    let mut out = Vec::with_capacity(trimmed.len() + 2);
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "{host:?} is not a valid host name (each dot-separated part must have 1 to 63 characters)"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "{host:?} is not a valid host name (letters, digits, - and _ only)"
            ));
        }
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    out.push(0);
    if out.len() > MAX_NAME {
        return Err(format!("{host:?} is longer than 253 characters"));
    }
    Ok(out)
}

/// What a reply to our query says.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reply {
    /// NOERROR: the addresses of the queried type found for the name (through its CNAMEs),
    /// possibly none (NODATA), and the smallest TTL of the records used (`None` when there
    /// are none).
    Answer {
        addrs: Vec<IpAddr>,
        ttl: Option<u32>,
    },
    NxDomain,
    /// Any other RCODE (2 SERVFAIL, 5 REFUSED...).
    Rcode(u8),
    /// TC: the answer did not fit; ask again over TCP.
    Truncated,
}

/// Why a message is not a usable reply.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Rejected {
    /// Not a reply to this query (another id, not a response, another question): it is
    /// ignored, and the wait goes on.
    NotOurs,
    /// It claims to be our reply but cannot be read.
    Malformed(&'static str),
}

use Rejected::{Malformed, NotOurs};

/// Reads a reply to `query`.
pub(super) fn parse_reply(msg: &[u8], query: &Query) -> Result<Reply, Rejected> {
    let mut r = Reader { msg, at: 0 };
    let id = r.u16().map_err(|_| NotOurs)?;
    let flags = r.u16().map_err(|_| NotOurs)?;
    let (is_reply, opcode) = (flags & 0x8000 != 0, (flags >> 11) & 0xF);
    if id != query.id || !is_reply || opcode != 0 {
        return Err(NotOurs);
    }
    let qdcount = r.u16()?;
    let ancount = r.u16()?;
    let _nscount = r.u16()?;
    let _arcount = r.u16()?;
    let rcode = (flags & 0xF) as u8;
    match qdcount {
        1 => {
            let name = r.name()?;
            let (qtype, qclass) = (r.u16()?, r.u16()?);
            if name != query.name || qtype != query.qtype || qclass != CLASS_IN {
                return Err(NotOurs);
            }
        }
        // Some servers leave the question out of an error (FORMERR, NOTIMP). Never of an
        // answer: without it, nothing says the answer is about our name.
        0 if rcode != 0 => return Ok(Reply::Rcode(rcode)),
        _ => return Err(Malformed("a reply must repeat the one question")),
    }
    if flags & 0x0200 != 0 {
        return Ok(Reply::Truncated);
    }
    match rcode {
        0 => {}
        3 => return Ok(Reply::NxDomain),
        other => return Ok(Reply::Rcode(other)),
    }
    // The answer section, read whole before the chain is followed: records may come in
    // any order. At most one record per 11 bytes of message, whatever ANCOUNT claims.
    let mut records = Vec::new();
    for _ in 0..ancount {
        let owner = r.name()?;
        let (rtype, class, ttl, len) = (r.u16()?, r.u16()?, r.u32()?, r.u16()? as usize);
        let start = r.at;
        let rdata = r.take(len)?;
        if class != CLASS_IN {
            continue;
        }
        let data = match rtype {
            TYPE_CNAME => {
                let mut inner = Reader { msg, at: start };
                let target = inner.name()?;
                if inner.at != start + len {
                    return Err(Malformed("a CNAME's data is not one name"));
                }
                Data::Alias(target)
            }
            t if t == query.qtype => Data::Addr(address(t, rdata)?),
            _ => continue,
        };
        // RFC 2181 8: a TTL with the top bit set is read as 0.
        let ttl = if ttl & 0x8000_0000 != 0 { 0 } else { ttl };
        records.push(Record { owner, ttl, data });
    }
    follow(&query.name, &records)
}

struct Record {
    owner: Vec<u8>,
    ttl: u32,
    data: Data,
}

enum Data {
    Alias(Vec<u8>),
    Addr(IpAddr),
}

/// From the name asked for, through its CNAMEs, to its addresses.
fn follow(name: &[u8], records: &[Record]) -> Result<Reply, Rejected> {
    let mut target = name;
    let mut ttl: Option<u32> = None;
    let mut hops = 0;
    loop {
        let alias = records.iter().find_map(|rec| match &rec.data {
            Data::Alias(to) if rec.owner == target => Some((to, rec.ttl)),
            _ => None,
        });
        let Some((to, alias_ttl)) = alias else { break };
        hops += 1;
        if hops > MAX_CHAIN {
            return Err(Malformed("CNAME chain too long, or a loop"));
        }
        ttl = Some(ttl.map_or(alias_ttl, |t| t.min(alias_ttl)));
        target = to;
    }
    let mut addrs = Vec::new();
    for rec in records.iter().filter(|rec| rec.owner == target) {
        if let Data::Addr(ip) = rec.data {
            addrs.push(ip);
            ttl = Some(ttl.map_or(rec.ttl, |t| t.min(rec.ttl)));
        }
    }
    // A chain that leads to no address says nothing about how long that holds.
    if addrs.is_empty() {
        ttl = None;
    }
    Ok(Reply::Answer { addrs, ttl })
}

fn address(rtype: u16, rdata: &[u8]) -> Result<IpAddr, Rejected> {
    match (rtype, rdata.len()) {
        (TYPE_A, 4) => {
            let b: [u8; 4] = rdata.try_into().map_err(|_| Malformed("A record"))?;
            Ok(IpAddr::V4(Ipv4Addr::from(b)))
        }
        (TYPE_AAAA, 16) => {
            let b: [u8; 16] = rdata.try_into().map_err(|_| Malformed("AAAA record"))?;
            Ok(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => Err(Malformed("an address record of the wrong length")),
    }
}

/// A cursor over a message; every read checks the bounds.
struct Reader<'a> {
    msg: &'a [u8],
    at: usize,
}

const SHORT: Rejected = Malformed("the message ends early");

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Rejected> {
        let end = self.at.checked_add(n).ok_or(SHORT)?;
        let bytes = self.msg.get(self.at..end).ok_or(SHORT)?;
        self.at = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, Rejected> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Rejected> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A name at the cursor, decompressed, in wire form and lower case; the cursor moves
    /// past it (past its first pointer, when it has one).
    fn name(&mut self) -> Result<Vec<u8>, Rejected> {
        let mut out = Vec::with_capacity(32);
        let mut at = self.at;
        // Where the labels being read began: a pointer must point before it.
        let mut run_start = at;
        let mut resume = None;
        let mut jumps = 0;
        loop {
            let len = *self.msg.get(at).ok_or(SHORT)? as usize;
            match len & 0xC0 {
                0x00 if len == 0 => {
                    out.push(0);
                    self.at = resume.unwrap_or(at + 1);
                    return Ok(out);
                }
                0x00 => {
                    let label = self.msg.get(at + 1..at + 1 + len).ok_or(SHORT)?;
                    // The label, its length byte, and the root still to come.
                    if out.len() + 1 + len + 1 > MAX_NAME {
                        return Err(Malformed("a name longer than 255 bytes"));
                    }
                    out.push(len as u8);
                    out.extend(label.iter().map(u8::to_ascii_lowercase));
                    at += 1 + len;
                }
                0xC0 => {
                    let low = *self.msg.get(at + 1).ok_or(SHORT)? as usize;
                    let target = (len & 0x3F) << 8 | low;
                    jumps += 1;
                    if target >= run_start || jumps > MAX_JUMPS {
                        return Err(Malformed("a compression pointer that does not point back"));
                    }
                    resume.get_or_insert(at + 2);
                    at = target;
                    run_start = target;
                }
                _ => return Err(Malformed("an unknown label type")),
            }
        }
    }
}

impl From<Rejected> for String {
    fn from(r: Rejected) -> String {
        match r {
            NotOurs => "not a reply to the query".into(),
            Malformed(why) => format!("unreadable reply: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply to `q` with `flags` (the RCODE in the low bits), claiming `ancount`
    /// answers, with `answers` (encoded records, or anything) after the question.
    fn reply(q: &Query, flags: u16, ancount: u16, answers: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&q.id.to_be_bytes());
        m.extend_from_slice(&(0x8180 | flags).to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&ancount.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(&q.name);
        m.extend_from_slice(&q.qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m.extend_from_slice(answers);
        m
    }

    /// A record: owner (wire bytes, may be a pointer), type, TTL, data.
    fn rr(owner: &[u8], rtype: u16, ttl: u32, data: &[u8]) -> Vec<u8> {
        let mut r = owner.to_vec();
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(data);
        r
    }

    /// The question's name, by pointer.
    const QNAME: [u8; 2] = [0xC0, 12];

    fn a_query() -> Query {
        Query::new(0x1234, "Backends.Test.", TYPE_A).unwrap()
    }

    fn addrs(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn queries_carry_the_question_and_edns0() {
        let q = a_query();
        assert_eq!(&q.bytes[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q.name, b"\x08backends\x04test\x00");
        let tail = &q.bytes[12 + q.name.len()..];
        assert_eq!(tail, [0, 1, 0, 1, 0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
        for bad in [
            "",
            "a..b",
            ".",
            "a b",
            "a/b",
            &"x".repeat(64),
            &"a.".repeat(128),
        ] {
            assert!(Query::new(1, bad, TYPE_A).is_err(), "{bad:?}");
        }
        assert!(Query::new(1, &"a.".repeat(127), TYPE_A).is_ok());
    }

    #[test]
    fn answers_with_their_smallest_ttl() {
        let q = a_query();
        let mut answers = rr(&QNAME, TYPE_A, 30, &[127, 0, 0, 2]);
        answers.extend(rr(&QNAME, TYPE_A, 10, &[127, 0, 0, 3]));
        // Another type, another class: skipped.
        answers.extend(rr(&QNAME, TYPE_AAAA, 1, &[0; 16]));
        let mut chaos = rr(&QNAME, TYPE_A, 1, &[1, 1, 1, 1]);
        chaos[5] = 3;
        answers.extend(chaos);
        let got = parse_reply(&reply(&q, 0, 4, &answers), &q).unwrap();
        let want = addrs(&["127.0.0.2", "127.0.0.3"]);
        assert_eq!(
            got,
            Reply::Answer {
                addrs: want,
                ttl: Some(10)
            }
        );
        let nodata = parse_reply(&reply(&q, 0, 0, &[]), &q).unwrap();
        assert_eq!(
            nodata,
            Reply::Answer {
                addrs: vec![],
                ttl: None
            }
        );
        // A TTL with the top bit set counts as 0.
        let huge = rr(&QNAME, TYPE_A, 0x8000_0001, &[127, 0, 0, 2]);
        let got = parse_reply(&reply(&q, 0, 1, &huge), &q).unwrap();
        assert!(matches!(got, Reply::Answer { ttl: Some(0), .. }), "{got:?}");
    }

    #[test]
    fn cname_chains_are_followed_in_any_order() {
        let q = Query::new(7, "alias.test", TYPE_AAAA).unwrap();
        // alias.test -> mid.test -> end.test, listed backwards.
        let (mid, end) = (b"\x03mid\x04test\x00", b"\x03end\x04test\x00");
        let mut answers = rr(
            end,
            TYPE_AAAA,
            50,
            &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        );
        answers.extend(rr(mid, TYPE_CNAME, 20, end));
        answers.extend(rr(&QNAME, TYPE_CNAME, 40, mid));
        // An address of the first name in the middle of a chain is not the chain's end.
        answers.extend(rr(
            mid,
            TYPE_AAAA,
            1,
            &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
        ));
        let got = parse_reply(&reply(&q, 0, 4, &answers), &q).unwrap();
        assert_eq!(
            got,
            Reply::Answer {
                addrs: addrs(&["fd00::1"]),
                ttl: Some(20)
            }
        );
        // a -> b -> a: a loop, refused.
        let (a, b) = (b"\x01a\x04test\x00", b"\x01b\x04test\x00");
        let q = Query::new(8, "a.test", TYPE_A).unwrap();
        let mut looped = rr(&QNAME, TYPE_CNAME, 1, b);
        looped.extend(rr(b, TYPE_CNAME, 1, a));
        assert!(matches!(
            parse_reply(&reply(&q, 0, 2, &looped), &q),
            Err(Malformed(_))
        ));
        // A chain to nowhere: no address, no TTL.
        let dangling = rr(&QNAME, TYPE_CNAME, 5, b);
        let got = parse_reply(&reply(&q, 0, 1, &dangling), &q).unwrap();
        assert_eq!(
            got,
            Reply::Answer {
                addrs: vec![],
                ttl: None
            }
        );
    }

    #[test]
    fn rcodes_and_truncation() {
        let q = a_query();
        assert_eq!(parse_reply(&reply(&q, 3, 0, &[]), &q), Ok(Reply::NxDomain));
        assert_eq!(parse_reply(&reply(&q, 2, 0, &[]), &q), Ok(Reply::Rcode(2)));
        assert_eq!(parse_reply(&reply(&q, 5, 0, &[]), &q), Ok(Reply::Rcode(5)));
        assert_eq!(
            parse_reply(&reply(&q, 0x0200, 9, &[]), &q),
            Ok(Reply::Truncated)
        );
        // An error without the question is still an error; an answer without it is not
        // an answer.
        let mut bare = reply(&q, 1, 0, &[]);
        bare.truncate(12);
        bare[5] = 0;
        assert_eq!(parse_reply(&bare, &q), Ok(Reply::Rcode(1)));
        bare[3] &= 0xF0;
        assert!(matches!(parse_reply(&bare, &q), Err(Malformed(_))));
    }

    #[test]
    fn replies_to_something_else_are_ignored() {
        let q = a_query();
        let good = reply(&q, 0, 1, &rr(&QNAME, TYPE_A, 1, &[127, 0, 0, 2]));
        let mut wrong_id = good.clone();
        wrong_id[1] ^= 1;
        assert_eq!(parse_reply(&wrong_id, &q), Err(NotOurs));
        let mut a_query_not_a_reply = good.clone();
        a_query_not_a_reply[2] &= 0x7F;
        assert_eq!(parse_reply(&a_query_not_a_reply, &q), Err(NotOurs));
        let mut other_name = good.clone();
        other_name[13] = b'x';
        assert_eq!(parse_reply(&other_name, &q), Err(NotOurs));
        let aaaa = Query::new(q.id, "backends.test", TYPE_AAAA).unwrap();
        assert_eq!(parse_reply(&good, &aaaa), Err(NotOurs));
        // The question's case does not matter (DNS names are case-insensitive).
        let mut upper = good.clone();
        upper[13] = b'B';
        assert!(parse_reply(&upper, &q).is_ok());
        for short in [&[][..], &[0x12], &[0x12, 0x34, 0x81]] {
            assert_eq!(parse_reply(short, &q), Err(NotOurs));
        }
    }

    #[test]
    fn hostile_compression_pointers_end() {
        let q = a_query();
        let hostile: Vec<(&str, Vec<u8>)> = vec![
            ("pointer to itself", vec![0xC0, 12 + 19]),
            ("forward pointer", vec![0xC0, 0xFF]),
            ("pointer past the end", vec![0xFF, 0xFF]),
            ("half a pointer", vec![0xC0]),
            ("label past the end", vec![0x3F, b'a']),
            ("reserved label type", vec![0x80]),
            ("extended label type", vec![0x41, 0]),
        ];
        // The question takes bytes 12..31; the answers start at 31.
        assert_eq!(reply(&q, 0, 0, &[]).len(), 31);
        for (what, owner) in hostile {
            let msg = reply(&q, 0, 1, &owner);
            let got = parse_reply(&msg, &q);
            assert!(matches!(got, Err(Malformed(_))), "{what}: {got:?}");
        }
        // Pointers that point back, one after the other, into a loop: at 47 a pointer to
        // 45, at 45 one to 43, at 43 one to 45 again.
        let backwards = Err(Malformed("a compression pointer that does not point back"));
        let msg = behind_skipped_record(&q, &[0xC0, 45, 0xC0, 43], &[0xC0, 45]);
        assert_eq!(parse_reply(&msg, &q), backwards);
        // A label, then a pointer back to that label: the pointer points back, but to
        // where this walk has already been.
        let msg = behind_skipped_record(&q, &[0x01, b'x', 0xC0, 43], &[0xC0, 43]);
        assert_eq!(parse_reply(&msg, &q), backwards);
        // The same records, the pointers aimed at the label: read.
        let msg = behind_skipped_record(&q, &[0x01, b'x', 0, 0], &[0xC0, 43]);
        assert!(parse_reply(&msg, &q).is_ok());
        // A long name: labels of 63 bytes, each followed by a pointer to the one before:
        // stopped at 255 bytes.
        let mut soup = vec![63];
        soup.extend([b'a'; 63]);
        soup.push(0);
        let mut last = 43;
        for _ in 0..6 {
            let here = 43 + soup.len();
            soup.push(63);
            soup.extend([b'b'; 63]);
            soup.extend([0xC0 | (last >> 8) as u8, last as u8]);
            last = here;
        }
        let owner = [0xC0 | (last >> 8) as u8, last as u8];
        let msg = behind_skipped_record(&q, &soup, &owner);
        assert_eq!(
            parse_reply(&msg, &q),
            Err(Malformed("a name longer than 255 bytes"))
        );
    }

    /// A reply whose first answer is a record of a type that is skipped, holding `rdata`
    /// (from byte 43 on), and whose second is an A record owned by `owner`.
    fn behind_skipped_record(q: &Query, rdata: &[u8], owner: &[u8]) -> Vec<u8> {
        let mut answers = rr(&QNAME, 99, 1, rdata);
        answers.extend(rr(owner, TYPE_A, 1, &[1, 2, 3, 4]));
        let msg = reply(q, 0, 2, &answers);
        assert_eq!(msg[43..43 + rdata.len()], *rdata);
        msg
    }

    #[test]
    fn huge_counts_and_bad_records_are_refused() {
        let q = a_query();
        // 65535 answers claimed, one present.
        let msg = reply(&q, 0, u16::MAX, &rr(&QNAME, TYPE_A, 1, &[127, 0, 0, 2]));
        assert_eq!(parse_reply(&msg, &q), Err(SHORT));
        let mut many_questions = reply(&q, 0, 0, &[]);
        many_questions[5] = 0xFF;
        assert!(matches!(
            parse_reply(&many_questions, &q),
            Err(Malformed(_))
        ));
        // Data longer than the message; an A of 5 bytes; an AAAA of 4.
        let mut long = rr(&QNAME, TYPE_A, 1, &[127, 0, 0, 2]);
        long[11] = 200;
        assert_eq!(parse_reply(&reply(&q, 0, 1, &long), &q), Err(SHORT));
        let five = rr(&QNAME, TYPE_A, 1, &[127, 0, 0, 2, 9]);
        assert!(matches!(
            parse_reply(&reply(&q, 0, 1, &five), &q),
            Err(Malformed(_))
        ));
        let q6 = Query::new(q.id, "backends.test", TYPE_AAAA).unwrap();
        let four = rr(&QNAME, TYPE_AAAA, 1, &[127, 0, 0, 2]);
        assert!(matches!(
            parse_reply(&reply(&q6, 0, 1, &four), &q6),
            Err(Malformed(_))
        ));
        // A CNAME whose data holds more than its name.
        let cname = rr(&QNAME, TYPE_CNAME, 1, b"\x01b\x00junk");
        assert!(matches!(
            parse_reply(&reply(&q, 0, 1, &cname), &q),
            Err(Malformed(_))
        ));
    }

    #[test]
    fn no_input_panics() {
        let q = a_query();
        let mut answers = rr(&QNAME, TYPE_CNAME, 9, b"\x03end\xC0\x15");
        answers.extend(rr(
            &[0x03, b'e', b'n', b'd', 0xC0, 21],
            TYPE_A,
            9,
            &[10, 0, 0, 1],
        ));
        let good = reply(&q, 0, 2, &answers);
        assert!(
            parse_reply(&good, &q).is_ok(),
            "{:?}",
            parse_reply(&good, &q)
        );
        // Every prefix, and every single-byte change of every position.
        for n in 0..good.len() {
            let _ = parse_reply(&good[..n], &q);
        }
        for i in 0..good.len() {
            for v in [0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xFF] {
                let mut m = good.clone();
                m[i] = v;
                let _ = parse_reply(&m, &q);
            }
        }
        // Random messages behind a valid header and question (xorshift: reproducible).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut m = reply(&q, 0, 0, &[]);
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            m[7] = (x >> 60) as u8;
            let len = (x >> 32) as usize % 96;
            for j in 0..len {
                m.push((x >> (j % 8 * 8)) as u8 ^ j as u8);
            }
            let _ = parse_reply(&m, &q);
        }
    }
}

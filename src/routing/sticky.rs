//! Sticky sessions, part of `select_backend`: every turn of a conversation goes to the
//! backend whose KV cache already holds it.
//!
//! No table decides placement. A request's **key** comes from the first configured source
//! that yields one (`sticky.key_sources`): the `X-Olla-Session-ID`/`X-Session-ID` header,
//! the conversation's opening (model, system prompt, first user message: the same on every
//! turn, whatever the JSON formatting; see `api.rs`), the `Authorization` header with the
//! model, or the client IP. The backend is then chosen by **rendezvous hashing**: each
//! candidate scores `mix(key ^ hash(endpoint name))` and the highest eligible score wins.
//! Every shard, and every ringway replica configured with the same endpoint names, picks
//! the same backend for the same key without talking to each other; when a backend leaves,
//! only the keys it won move, each to its runner-up.
//!
//! Outcomes (`X-Olla-Sticky-Session`) are Olla's, given by the memory of seen keys
//! (`seen`), which placement never reads: `miss` for a new key, `hit` for a key seen
//! before and served by its recorded backend or its **home** (the backend it scores
//! highest on among all endpoints of the route, healthy or not), `repin` for a seen key
//! served elsewhere (the home is down, its breaker is open, it failed this request, or it
//! was skipped as overloaded: `sticky.max_load_factor`), `disabled` when sticky routing
//! is off or no key could be derived (key source `none`). Keys are scoped to the model,
//! as Olla's are.
//!
//! When the home comes back, its conversations go back to it (`hit` again): it still
//! holds their prefix up to the turn it missed, so only the turns served elsewhere are
//! processed again.

use xxhash_rust::xxh3::xxh3_64;

use crate::api::RequestFacts;
use crate::routing::balancer::{Candidate, REQUEST_LOAD};

/// Where a session key comes from (`sticky.key_sources`; Olla's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    SessionHeader,
    PrefixHash,
    AuthHeader,
    Ip,
}

impl KeySource {
    /// Every source, in declaration order: `ALL[s as usize] == s`.
    pub(crate) const ALL: [KeySource; 4] = [
        KeySource::SessionHeader,
        KeySource::PrefixHash,
        KeySource::AuthHeader,
        KeySource::Ip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeySource::SessionHeader => "session_header",
            KeySource::PrefixHash => "prefix_hash",
            KeySource::AuthHeader => "auth_header",
            KeySource::Ip => "ip",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<KeySource> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// `X-Olla-Sticky-Session`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Hit,
    Miss,
    Repin,
    Disabled,
}

impl Outcome {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Repin => "repin",
            Outcome::Disabled => "disabled",
        }
    }
}

/// A request's session key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionKey {
    pub(crate) hash: u64,
    pub(crate) source: KeySource,
}

/// What the key sources can draw on, for one request.
pub(crate) struct KeyInputs<'a> {
    pub(crate) session_id: Option<&'a [u8]>,
    pub(crate) facts: &'a RequestFacts<'a>,
    pub(crate) authorization: Option<&'a [u8]>,
    pub(crate) client_ip: &'a str,
}

/// The key from the first source in `sources` that yields one.
pub(crate) fn derive_key(sources: &[KeySource], inputs: &KeyInputs<'_>) -> Option<SessionKey> {
    // Every key is scoped to the model (the opening already holds it), as Olla's are: one
    // session id used with two models is two conversations.
    let model = || xxh3_64(inputs.facts.model.unwrap_or_default()).rotate_left(1);
    sources.iter().find_map(|&source| {
        let hash = match source {
            KeySource::SessionHeader => {
                xxh3_64(inputs.session_id.filter(|v| !v.is_empty())?) ^ model()
            }
            KeySource::PrefixHash => inputs.facts.opening?,
            KeySource::AuthHeader => {
                xxh3_64(inputs.authorization.filter(|v| !v.is_empty())?) ^ model()
            }
            KeySource::Ip => xxh3_64(inputs.client_ip.as_bytes()) ^ model(),
        };
        Some(SessionKey { hash, source })
    })
}

/// A backend's stable identity for rendezvous scores: the hash of its configured name, so
/// replicas agree however their endpoint lists are ordered.
pub(crate) fn endpoint_id(name: &str) -> u64 {
    xxh3_64(name.as_bytes())
}

/// The score of a backend for a key (a strong 64-bit mixer: SplitMix64's finalizer).
#[inline]
pub(crate) fn score(key: u64, id: u64) -> u64 {
    let mut z = key ^ id;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Rendezvous placement: the eligible backend with the highest score for `key`.
///
/// With `max_load_factor > 0`, a backend loaded beyond [`load_limit`] is passed over for
/// the next best, so one hot key cannot pile onto a single backend; if every backend is
/// over, load is ignored.
#[inline]
pub(crate) fn rendezvous<C: Candidate>(
    key: u64,
    backends: &[C],
    eligible: impl Fn(usize) -> bool,
    max_load_factor: f64,
) -> Option<usize> {
    let limit = (max_load_factor > 0.0).then(|| load_limit(backends, &eligible, max_load_factor));
    let mut best: Option<(usize, u64)> = None;
    let mut best_within: Option<(usize, u64)> = None;
    for (i, b) in backends.iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        let s = score(key, b.id());
        if best.is_none_or(|(_, top)| s > top) {
            best = Some((i, s));
        }
        if limit.is_some_and(|l| b.load() <= l) && best_within.is_none_or(|(_, top)| s > top) {
            best_within = Some((i, s));
        }
    }
    best_within.or(best).map(|(i, _)| i)
}

/// The most load an eligible backend may carry under bounded load: `factor` times the
/// mean over the eligible backends, plus one request's worth, so that at low load (a
/// mean under one request) a backend is not over for carrying a single request.
#[inline]
pub(crate) fn load_limit<C: Candidate>(
    backends: &[C],
    eligible: &impl Fn(usize) -> bool,
    factor: f64,
) -> u64 {
    let (mut total, mut n) = (0u64, 0u64);
    for (i, b) in backends.iter().enumerate() {
        if eligible(i) {
            total += b.load();
            n += 1;
        }
    }
    let mean = total as f64 / n.max(1) as f64;
    (factor * mean) as u64 + REQUEST_LOAD
}

#[cfg(test)]
mod tests {
    use super::*;

    struct B {
        id: u64,
        load: u64,
    }

    impl Candidate for B {
        fn load(&self) -> u64 {
            self.load
        }
        fn priority(&self) -> u32 {
            100
        }
        fn id(&self) -> u64 {
            self.id
        }
    }

    fn fleet(n: usize) -> Vec<B> {
        (0..n)
            .map(|i| B {
                id: endpoint_id(&format!("gpu-{i}")),
                load: 0,
            })
            .collect()
    }

    #[test]
    fn the_same_key_always_lands_on_the_same_backend() {
        let bs = fleet(8);
        for key in 0..100u64 {
            let k = xxh3_64(&key.to_le_bytes());
            let first = rendezvous(k, &bs, |_| true, 0.0);
            assert!(first.is_some());
            assert_eq!(rendezvous(k, &bs, |_| true, 0.0), first);
        }
    }

    #[test]
    fn keys_spread_evenly() {
        let bs = fleet(4);
        let mut counts = [0usize; 4];
        for key in 0..4000u64 {
            counts[rendezvous(xxh3_64(&key.to_le_bytes()), &bs, |_| true, 0.0).unwrap()] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn when_a_backend_leaves_only_its_keys_move() {
        let bs = fleet(5);
        let mut moved = 0;
        for key in 0..2000u64 {
            let k = xxh3_64(&key.to_le_bytes());
            let before = rendezvous(k, &bs, |_| true, 0.0).unwrap();
            let after = rendezvous(k, &bs, |i| i != 2, 0.0).unwrap();
            if before == 2 {
                assert_ne!(after, 2);
                moved += 1;
            } else {
                assert_eq!(
                    before, after,
                    "a key that was not on the leaving backend moved"
                );
            }
        }
        assert!(moved > 250 && moved < 550, "{moved}");
    }

    #[test]
    fn bounded_load_passes_over_an_overloaded_home() {
        let mut bs = fleet(4);
        let k = 42;
        let home = rendezvous(k, &bs, |_| true, 0.0).unwrap();
        bs[home].load = 12 * REQUEST_LOAD;
        bs.iter_mut()
            .enumerate()
            .filter(|(i, _)| *i != home)
            .for_each(|(_, b)| b.load = REQUEST_LOAD);
        // mean 15/4 = 3.75; factor 2 → limit 7.5 + 1: the home (12) is over it.
        let chosen = rendezvous(k, &bs, |_| true, 2.0).unwrap();
        assert_ne!(chosen, home);
        assert_eq!(
            rendezvous(k, &bs, |_| true, 0.0),
            Some(home),
            "off by default"
        );
        assert_eq!(
            rendezvous(k, &bs, |_| true, 4.0),
            Some(home),
            "within 4x the mean"
        );
        // Everyone over the limit: load is ignored rather than failing.
        bs.iter_mut().for_each(|b| b.load = 9 * REQUEST_LOAD);
        assert_eq!(rendezvous(k, &bs, |_| true, 0.5), Some(home));
    }

    #[test]
    fn key_sources_are_tried_in_order() {
        let facts = RequestFacts {
            opening: Some(7),
            chat: true,
            ..Default::default()
        };
        let inputs = KeyInputs {
            session_id: Some(b"abc"),
            facts: &facts,
            authorization: Some(b"Bearer t"),
            client_ip: "10.0.0.1",
        };
        let all = [
            KeySource::SessionHeader,
            KeySource::PrefixHash,
            KeySource::AuthHeader,
            KeySource::Ip,
        ];
        assert_eq!(
            derive_key(&all, &inputs).unwrap().source,
            KeySource::SessionHeader
        );
        let no_session = KeyInputs {
            session_id: None,
            ..inputs
        };
        assert_eq!(
            derive_key(&all, &no_session).unwrap(),
            SessionKey {
                hash: 7,
                source: KeySource::PrefixHash
            }
        );
        let plain = RequestFacts::default();
        let only_auth = KeyInputs {
            session_id: None,
            facts: &plain,
            ..no_session
        };
        assert_eq!(
            derive_key(&all, &only_auth).unwrap().source,
            KeySource::AuthHeader
        );
        assert_eq!(
            derive_key(&[KeySource::Ip], &only_auth).unwrap().source,
            KeySource::Ip
        );
        assert_eq!(derive_key(&[KeySource::PrefixHash], &only_auth), None);
    }

    #[test]
    fn key_sources_index_their_own_position() {
        for (i, source) in KeySource::ALL.into_iter().enumerate() {
            assert_eq!(source as usize, i);
        }
    }
}

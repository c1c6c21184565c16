//! Fuzz targets over bodies: a chunked message body, and a JSON request body read for
//! routing (model, session keys, placement).

use super::{defaults, derived_split, piece_sizes};
use crate::api::{self, RequestFacts};
use crate::http1::{BodyProgress, ChunkError, ChunkedDecoder};
use crate::routing::balancer::Candidate;
use crate::routing::sticky::{self, KeyInputs, KeySource, SessionKey};

/// The outcome of feeding a chunked body to a decoder: how many bytes it consumed (none
/// counted once it failed: the message is rejected whole), the payload it produced,
/// whether it reached the end, and the error it stopped at.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    consumed: Option<usize>,
    payload: Vec<u8>,
    done: bool,
    error: Option<ChunkError>,
}

/// Feeds `input` to a fresh decoder with payload limit `limit` in pieces of the given
/// sizes (the last piece takes the rest), as the proxy feeds what each read brought,
/// through `BodyProgress` when `via_progress`. `decode`: collect the payload (a client's
/// chunked body) or only measure (a response relayed as is).
fn feed_chunked(
    input: &[u8],
    limit: u64,
    pieces: &mut dyn Iterator<Item = usize>,
    via_progress: bool,
    decode: bool,
) -> Decoded {
    let mut progress = BodyProgress::Chunked(ChunkedDecoder::new(limit));
    let mut decoder = ChunkedDecoder::new(limit);
    let mut payload = Vec::new();
    let mut consumed = 0;
    let mut error = None;
    while consumed < input.len() {
        let size = pieces.next().unwrap_or(input.len()).max(1);
        let piece = &input[consumed..input.len().min(consumed + size)];
        let before = payload.len();
        let out = decode.then_some(&mut payload);
        let result = if via_progress {
            progress.advance(piece, out)
        } else {
            decoder.decode(piece, out)
        };
        assert!(
            payload.len() - before <= piece.len(),
            "decoded more bytes than given"
        );
        match result {
            Ok(n) => {
                assert!(n <= piece.len(), "consumed more than given");
                consumed += n;
                let done = if via_progress {
                    progress.is_done()
                } else {
                    decoder.is_done()
                };
                if done {
                    break;
                }
                assert_eq!(n, piece.len(), "an unfinished body left bytes unconsumed");
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let done = if via_progress {
        progress.is_done()
    } else {
        decoder.is_done()
    };
    Decoded {
        consumed: error.is_none().then_some(consumed),
        payload,
        done,
        error,
    }
}

/// Fuzz target `chunked_body`: a chunked message body (RFC 9112 §7.1).
///
/// The first two bytes are control bytes: they pick the sizes of the pieces the body is
/// fed in and a small payload limit; the rest is the body. Fed whole, fed in pieces
/// (through `ChunkedDecoder` and through `BodyProgress::Chunked`, as the proxy does),
/// and only measured (`out = None`, the relay mode), the decoder must give the same
/// result: bytes consumed, payload, end reached, error. It never consumes more than it
/// was given, the payload is never longer than the input, bytes after the end are left
/// alone, and with the small limit it never decodes more than the limit and agrees with
/// the unlimited run whenever it accepts.
pub fn chunked_body(data: &[u8]) {
    let [a, b, body @ ..] = data else {
        return;
    };
    let seed = u16::from_le_bytes([*a, *b]);
    let small_limit = u64::from(*b);

    let whole = feed_chunked(body, u64::MAX, &mut std::iter::empty(), false, true);
    assert!(whole.consumed.is_none_or(|n| n <= body.len()));
    assert!(
        whole.payload.len() <= body.len(),
        "payload longer than the input"
    );
    if whole.error.is_none() && !whole.done {
        assert_eq!(whole.consumed, Some(body.len()));
    }

    let in_pieces = feed_chunked(body, u64::MAX, &mut piece_sizes(seed), false, true);
    assert_eq!(in_pieces, whole, "fed in pieces differs from fed whole");
    let progress = feed_chunked(body, u64::MAX, &mut piece_sizes(seed ^ 0x5a5a), true, true);
    assert_eq!(progress, whole, "BodyProgress differs from the decoder");
    let measured = feed_chunked(
        body,
        u64::MAX,
        &mut piece_sizes(seed.rotate_left(3)),
        true,
        false,
    );
    assert!(measured.payload.is_empty());
    assert_eq!(
        (measured.consumed, measured.done, &measured.error),
        (whole.consumed, whole.done, &whole.error),
        "measuring differs from decoding"
    );

    if let (true, Some(end)) = (whole.done, whole.consumed) {
        // The message ends where the decoder said: its bytes alone decode the same.
        let again = feed_chunked(&body[..end], u64::MAX, &mut std::iter::empty(), false, true);
        assert_eq!(again, whole);
    }

    for (limit, pieces) in [
        (
            small_limit,
            &mut piece_sizes(seed) as &mut dyn Iterator<Item = usize>,
        ),
        (small_limit, &mut std::iter::empty()),
    ] {
        let limited = feed_chunked(body, limit, pieces, true, true);
        assert!(
            limited.payload.len() as u64 <= limit,
            "decoded {} bytes past the limit of {limit}",
            limited.payload.len()
        );
        assert!(whole.payload.starts_with(&limited.payload));
        match &limited.error {
            None => assert_eq!(limited, whole, "the limit changed an accepted body"),
            Some(ChunkError::TooLarge) => {}
            Some(e) => assert_eq!(whole.error.as_ref(), Some(e)),
        }
    }
}

/// A backend for rendezvous placement.
struct Backend(u64);

impl Candidate for Backend {
    fn load(&self) -> u64 {
        0
    }
    fn priority(&self) -> u32 {
        100
    }
    fn id(&self) -> u64 {
        self.0
    }
}

/// Fuzz target `body_keys`: a JSON request body, read for routing.
///
/// Runs `api::inspect` (with the configured prompt prefix and with a small one) and
/// checks: the same body gives the same facts; `api::model` alone finds the same model
/// in valid JSON; the `model` is a sub-slice of the body
/// between two quotes (the proxy turns it into a byte range to rewrite); a continued
/// conversation is a chat; bytes after a recognised object change nothing. Then derives
/// a session key from every source (session header and authorization taken from the
/// body, or absent) and checks that a list of sources yields the key of its first source
/// that yields one, that each source yields exactly when its input is there, and that
/// rendezvous placement of the key is stable.
pub fn body_keys(data: &[u8]) {
    let defaults = defaults();
    let facts = api::inspect(data, defaults.prompt_prefix, 64);
    assert_eq!(facts, api::inspect(data, defaults.prompt_prefix, 64));
    // Reading the model alone (sticky sessions off) finds the same model in any valid
    // JSON. (Malformed bodies may be cut up differently by the two readings: the
    // backend rejects them either way.)
    if serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok() {
        assert_eq!(api::model(data), facts.model, "the model alone differs");
    }
    check_facts(data, &facts);
    let small = api::inspect(data, 8, 0);
    check_facts(data, &small);
    // The prompt prefix only changes how much of a prompt is hashed.
    assert_eq!(
        (small.model, small.chat, small.continues),
        (facts.model, facts.chat, facts.continues)
    );
    assert_eq!(small.opening.is_some(), facts.opening.is_some());

    if facts != RequestFacts::default() {
        // A recognised object ends at its closing brace: what follows is not read.
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"}\"x\\");
        let again = api::inspect(&longer, defaults.prompt_prefix, 64);
        assert_eq!(
            (again.model, again.opening, again.chat, again.continues),
            (facts.model, facts.opening, facts.chat, facts.continues),
            "bytes after the body changed its facts"
        );
    }

    // Session header and authorization: absent, empty, or taken from the body.
    let cut = derived_split(data);
    let (first, second) = data.split_at(cut);
    for (session_id, authorization) in [
        (None, None),
        (Some(first), Some(second)),
        (Some(&b""[..]), Some(data)),
        (None, Some(first)),
    ] {
        let inputs = KeyInputs {
            session_id,
            facts: &facts,
            authorization,
            client_ip: "192.0.2.7",
        };
        check_keys(&inputs, &defaults.key_sources);
    }
}

fn check_facts(data: &[u8], facts: &RequestFacts<'_>) {
    if let Some(model) = facts.model {
        let start = (model.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
        assert!(
            start <= data.len() && model.len() <= data.len() - start,
            "the model is not inside the body"
        );
        assert!(
            start > 0 && data[start - 1] == b'"',
            "no quote before the model"
        );
        assert_eq!(
            data.get(start + model.len()),
            Some(&b'"'),
            "no quote after the model"
        );
    }
    if facts.continues {
        assert!(facts.chat, "a continued conversation that is not a chat");
    }
    if *facts == RequestFacts::default() {
        return;
    }
    // Facts come from an object: the body starts with `{` after whitespace.
    assert_eq!(data.trim_ascii_start().first(), Some(&b'{'));
}

fn check_keys(inputs: &KeyInputs<'_>, configured: &[KeySource]) {
    let single = |source: KeySource| sticky::derive_key(&[source], inputs);
    for source in KeySource::ALL {
        let key = single(source);
        let expected = match source {
            KeySource::SessionHeader => inputs.session_id.is_some_and(|v| !v.is_empty()),
            KeySource::PrefixHash => inputs.facts.opening.is_some(),
            KeySource::AuthHeader => inputs.authorization.is_some_and(|v| !v.is_empty()),
            KeySource::Ip => true,
        };
        assert_eq!(key.is_some(), expected, "{source:?} yielded {key:?}");
        if let Some(key) = key {
            assert_eq!(key.source, source);
        }
        if let (KeySource::PrefixHash, Some(key)) = (source, key) {
            assert_eq!(Some(key.hash), inputs.facts.opening);
        }
    }
    let first_of =
        |sources: &[KeySource]| -> Option<SessionKey> { sources.iter().find_map(|&s| single(s)) };
    let mut reversed = KeySource::ALL;
    reversed.reverse();
    for sources in [&KeySource::ALL[..], &reversed[..], configured, &[]] {
        let key = sticky::derive_key(sources, inputs);
        assert_eq!(key, first_of(sources));
        assert_eq!(key, sticky::derive_key(sources, inputs));
    }
    let key = sticky::derive_key(&KeySource::ALL, inputs).expect("the client IP always yields");

    let fleet: Vec<Backend> = (0..5)
        .map(|i| Backend(sticky::endpoint_id(&format!("gpu-{i}"))))
        .collect();
    let home = sticky::rendezvous(key.hash, &fleet, |_| true, 0.0).expect("a backend");
    assert!(home < fleet.len());
    assert_eq!(
        sticky::rendezvous(key.hash, &fleet, |_| true, 1.5),
        Some(home)
    );
    // When another backend leaves, the key stays home; when its home leaves, it moves.
    let other = (home + 1) % fleet.len();
    assert_eq!(
        sticky::rendezvous(key.hash, &fleet, |i| i != other, 0.0),
        Some(home)
    );
    let moved = sticky::rendezvous(key.hash, &fleet, |i| i != home, 0.0).expect("a backend");
    assert_ne!(moved, home);
    assert_eq!(sticky::rendezvous(key.hash, &fleet, |_| false, 0.0), None);
}

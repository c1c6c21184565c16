//! The small JSON pieces the translators share: a string that borrows from the body when
//! it can, a "first element only" array reader, and writers for the values the
//! translators emit by hand (strings escaped, numbers).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};

/// A JSON string, borrowed from the body unless it had escapes to decode. (serde's own
/// `Cow<str>` always copies, and `#[serde(borrow)]` only borrows a bare `Cow` field, not
/// one inside an `Option`.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Str<'a>(pub(super) Cow<'a, str>);

impl Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// The first element of an array, the rest skipped unread into a tree (`choices`: the
/// translators answer with one message, as Olla does). `null` or absent: none.
#[derive(Debug)]
pub(super) struct First<T>(pub(super) Option<T>);

impl<T> Default for First<T> {
    fn default() -> Self {
        First(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_unit<E: de::Error>(self) -> Result<First<T>, E> {
                Ok(First(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<First<T>, E> {
                Ok(First(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<First<T>, D::Error> {
                d.deserialize_seq(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First<T>, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        d.deserialize_option(V(PhantomData))
    }
}

/// Appends `s` as a JSON string (quoted, escaped).
pub(super) fn push_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    push_str_contents(out, s);
    out.push(b'"');
}

/// Appends `s` escaped for the inside of a JSON string (so that several pieces can make
/// one string): `"`, `\` and control characters escaped, everything else as it is.
pub(super) fn push_str_contents(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let (mut run, mut unicode) = (0, *b"\\u0000");
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 => {
                unicode[4] = HEX[usize::from(b >> 4)];
                unicode[5] = HEX[usize::from(b & 15)];
                &unicode
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        out.extend_from_slice(escape);
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

/// Appends `s` as a JSON string, or `null`.
pub(super) fn push_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends a number.
pub(super) fn push_u64(out: &mut Vec<u8>, n: u64) {
    crate::http1::push_decimal(out, n);
}

/// Appends a JSON number for a float read from a request (always finite: JSON has no
/// NaN or infinities).
pub(super) fn push_f64(out: &mut Vec<u8>, x: f64) {
    let _ = serde_json::to_writer(&mut *out, &x);
}

/// The length of a JSON text without the whitespace between its tokens: how long it is
/// as Go's `json.Marshal` writes it, which is what Olla's token estimate measures
/// (within Go's escaping of `<`, `>`, `&`, which adds 5 bytes each).
pub(super) fn compact_len(raw: &str) -> usize {
    let (mut n, mut in_string, mut escaped) = (0, false, false);
    for &b in raw.as_bytes() {
        if in_string {
            n += 1;
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            n += 1;
            in_string = b == b'"';
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_borrow_unless_escaped() {
        let s: Str<'_> = serde_json::from_str(r#""plain""#).unwrap();
        assert!(matches!(s.0, Cow::Borrowed("plain")));
        let s: Str<'_> = serde_json::from_str(r#""a\nb""#).unwrap();
        assert!(matches!(&s.0, Cow::Owned(o) if o == "a\nb"));
        let s: Option<Str<'_>> = serde_json::from_str("null").unwrap();
        assert!(s.is_none());
        assert!(serde_json::from_str::<Str<'_>>("5").is_err());
    }

    #[test]
    fn first_keeps_the_first_element() {
        let f: First<u32> = serde_json::from_str("[7, 8, {\"x\": [1]}]").unwrap();
        assert_eq!(f.0, Some(7));
        let f: First<u32> = serde_json::from_str("[]").unwrap();
        assert_eq!(f.0, None);
        let f: First<u32> = serde_json::from_str("null").unwrap();
        assert_eq!(f.0, None);
    }

    #[test]
    fn writers() {
        let mut out = Vec::new();
        push_str(&mut out, "a\"b\\c\n\u{1}é\u{1f}\t\r");
        out.push(b' ');
        push_u64(&mut out, 18_446_744_073_709_551_615);
        out.push(b' ');
        push_f64(&mut out, 0.7);
        out.push(b' ');
        push_opt_str(&mut out, None);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\n\\u0001é\\u001f\\t\\r\" 18446744073709551615 0.7 null"
        );
    }

    #[test]
    fn compact_length_ignores_whitespace_between_tokens_only() {
        assert_eq!(
            compact_len(r#"{ "a b" : [ 1, "\" x" ] }"#),
            r#"{"a b":[1,"\" x"]}"#.len()
        );
        assert_eq!(compact_len(r#""\\" "#), 4);
    }
}

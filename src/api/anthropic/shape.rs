//! The Anthropic Messages request as the translators read it (`request`, `count`, and
//! `response` for OpenAI's content parts): typed, borrowed from the body (strings are
//! copied only when they had escapes; tool schemas and inputs stay raw JSON), with every
//! field not listed skipped unread.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::json::{self, Str};

/// The Anthropic request, as far as it is translated; everything else is skipped unread.
#[derive(Deserialize)]
pub(super) struct Request<'a> {
    #[serde(borrow)]
    pub(super) model: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) messages: Option<Vec<Message<'a>>>,
    #[serde(borrow)]
    pub(super) system: Option<Content<'a>>,
    pub(super) max_tokens: Option<i64>,
    pub(super) temperature: Option<f64>,
    pub(super) top_p: Option<f64>,
    pub(super) top_k: Option<i64>,
    #[serde(borrow)]
    pub(super) stop_sequences: Option<Vec<Str<'a>>>,
    pub(super) stream: Option<bool>,
    #[serde(borrow)]
    pub(super) tools: Option<Vec<Tool<'a>>>,
    #[serde(borrow)]
    pub(super) tool_choice: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) metadata: Option<Metadata<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Message<'a> {
    #[serde(borrow)]
    pub(super) role: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) content: Option<Content<'a>>,
}

/// A message's (or a tool result's, or a system prompt's) content: a string or blocks
/// (a lone block object is taken as one block, as Olla does).
pub(super) enum Content<'a> {
    Text(Str<'a>),
    Blocks(Vec<Block<'a>>),
}

/// A content block; which fields mean something depends on `type`.
#[derive(Deserialize)]
pub(super) struct Block<'a> {
    #[serde(borrow, rename = "type")]
    pub(super) kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) text: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) source: Option<Source<'a>>,
    #[serde(borrow)]
    pub(super) id: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) name: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) input: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) tool_use_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) content: Option<Content<'a>>,
    pub(super) is_error: Option<bool>,
}

#[derive(Deserialize)]
pub(super) struct Source<'a> {
    #[serde(borrow, rename = "type")]
    pub(super) kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) media_type: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) data: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) url: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(super) struct Tool<'a> {
    #[serde(borrow, rename = "type")]
    pub(super) kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) name: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) description: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) input_schema: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct Metadata<'a> {
    #[serde(borrow)]
    pub(super) user_id: Option<Str<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Content<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content blocks")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Content<'a>, E> {
                Ok(Content::Text(Str(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content<'a>, E> {
                Ok(Content::Text(Str(Cow::Owned(v.to_owned()))))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content<'a>, A::Error> {
                let mut blocks = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(block) = seq.next_element()? {
                    blocks.push(block);
                }
                Ok(Content::Blocks(blocks))
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Content<'a>, M::Error> {
                let block = Block::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Content::Blocks(vec![block]))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'a> Block<'a> {
    pub(super) fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("")
    }

    /// The text of a `text` block.
    pub(super) fn text(&self) -> Option<&str> {
        self.text.as_deref().filter(|_| self.kind() == "text")
    }

    /// The URL an `image` block's source is sent as: a `data:` URL for base64 data.
    pub(super) fn image_url(&self) -> Option<Cow<'_, str>> {
        let source = self.source.as_ref().filter(|_| self.kind() == "image")?;
        match source.kind.as_deref()? {
            "base64" => {
                let media = source.media_type.as_deref().unwrap_or("image/png");
                let data = source.data.as_deref()?;
                Some(Cow::Owned(format!("data:{media};base64,{data}")))
            }
            "url" => source.url.as_deref().map(Cow::Borrowed),
            _ => None,
        }
    }
}

impl Content<'_> {
    pub(super) fn blocks(&self) -> &[Block<'_>] {
        match self {
            Content::Text(_) => &[],
            Content::Blocks(b) => b,
        }
    }

    /// The text pieces: the string, or each text block's text.
    pub(super) fn texts(&self) -> impl Iterator<Item = &str> {
        let string = match self {
            Content::Text(s) => Some(&**s),
            Content::Blocks(_) => None,
        };
        string
            .into_iter()
            .chain(self.blocks().iter().filter_map(Block::text))
    }

    pub(super) fn has_text(&self) -> bool {
        self.texts().any(|t| !t.is_empty())
    }

    /// Writes the text pieces joined without a separator, as one JSON string.
    pub(super) fn push_joined_text(&self, out: &mut Vec<u8>) {
        out.push(b'"');
        for text in self.texts() {
            json::push_str_contents(out, text);
        }
        out.push(b'"');
    }
}

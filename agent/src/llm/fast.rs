//! Typed request decoding: the request bodies of the APIs that carry the
//! longest histories (OpenAI chat, Anthropic messages), read straight into the fields the call
//! keeps, borrowing the strings that need no unescaping, instead of being
//! built as a `serde_json::Value` tree and walked.
//!
//! The result must be the one the `Value` walk gives, byte for byte, and
//! malformed input must give the same errors. So:
//! - the body is first checked to be JSON that a `Value` parse accepts
//!   ([`Valid`]: the same parser, UTF-8, escapes, number ranges and depth
//!   checked, nothing kept), because the typed parse skips the fields it
//!   does not use without checking them; invalid JSON goes the `Value` way,
//!   which reports it as before;
//! - the typed structs are strict: a known field of an unexpected type
//!   (where the walk would leave it empty or read it differently), an object
//!   where an array is due, a duplicated key: the typed parse fails and the
//!   body goes the `Value` way. Only bodies every field of which has the
//!   expected type are decoded here, and for those both ways agree (the
//!   llm tests decode every fixture both ways and compare).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, value::MapAccessDeserializer, Deserializer, IgnoredAny, MapAccess};
use serde::Deserialize;

use super::route::Api;
use crate::event::LlmCall;

/// A request body read the typed way.
pub(super) enum Request<'b> {
    OpenAiChat(super::openai::ChatRequest<'b>),
    Anthropic(super::anthropic::MessagesRequest<'b>),
}

impl Request<'_> {
    pub(super) fn fill(self, call: &mut LlmCall) {
        match self {
            Request::OpenAiChat(r) => super::openai::fill_typed_request(r, call),
            Request::Anthropic(r) => super::anthropic::fill_typed_request(r, call),
        }
    }
}

/// The typed request of `api`, when the body is valid JSON of the shape
/// the typed structs take; None otherwise (decode it the `Value` way).
pub(super) fn request(api: Api, body: &[u8]) -> Option<Request<'_>> {
    if !matches!(api, Api::OpenAiChat | Api::Anthropic) {
        return None;
    }
    serde_json::from_slice::<Valid>(body).ok()?;
    if api == Api::OpenAiChat {
        let Obj(r) = serde_json::from_slice(body).ok()?;
        Some(Request::OpenAiChat(r))
    } else {
        let Obj(r) = serde_json::from_slice(body).ok()?;
        Some(Request::Anthropic(r))
    }
}

/// Accepts exactly the JSON a `Value` parse accepts, keeping nothing.
pub(super) struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValidVisitor)
    }
}

struct ValidVisitor;

impl<'de> de::Visitor<'de> for ValidVisitor {
    type Value = Valid;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_unit<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_none<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Valid, D::Error> {
        Valid::deserialize(d)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
        while map.next_entry::<Valid, Valid>()?.is_some() {}
        Ok(Valid)
    }
}

/// A `T` that must be a JSON object: derived structs also take an array
/// of their fields in order, which the `Value` walk does not.
pub(crate) struct Obj<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// A JSON string, borrowed from the body when it holds no escape (serde's
/// own `Cow<str>` always copies).
pub(crate) struct S<'b>(pub(crate) Cow<'b, str>);

/// An optional string: null and absent are None.
pub(crate) type Str<'b> = Option<S<'b>>;

impl S<'_> {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
    /// The owned text (no copy when it had to be unescaped).
    pub(super) fn into_string(self) -> String {
        self.0.into_owned()
    }
}

impl<'de: 'b, 'b> Deserialize<'de> for S<'b> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'b>(PhantomData<&'b ()>);
        impl<'de: 'b, 'b> de::Visitor<'de> for V<'b> {
            type Value = S<'b>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<S<'b>, E> {
                Ok(S(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<S<'b>, E> {
                Ok(S(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<S<'b>, E> {
                Ok(S(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// A string, or a list of `T`: message content and the like. Anything
/// else fails the typed parse.
pub(super) enum StrOr<'b, T> {
    Text(S<'b>),
    List(Vec<T>),
}

impl<'de: 'b, 'b, T: Deserialize<'de>> Deserialize<'de> for StrOr<'b, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrOrVisitor(PhantomData))
    }
}

struct StrOrVisitor<'b, T>(PhantomData<(&'b (), T)>);

impl<'de: 'b, 'b, T: Deserialize<'de>> de::Visitor<'de> for StrOrVisitor<'b, T> {
    type Value = StrOr<'b, T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(StrOr::Text(S(Cow::Borrowed(s))))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(StrOr::Text(S(Cow::Owned(s.to_owned()))))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(StrOr::Text(S(Cow::Owned(s))))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(x) = seq.next_element::<T>()? {
            items.push(x);
        }
        Ok(StrOr::List(items))
    }
}

/// OpenAI message content: a string, or parts of which the strings and
/// the objects' `text` (else `refusal`) are kept.
pub(super) type Content<'b> = StrOr<'b, Part<'b>>;

/// A field whose value is kept as a `Value` when present, null included
/// (serde's `Option` reads null as absent).
#[derive(Default)]
pub(super) struct Present(pub(super) Option<serde_json::Value>);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(|v| Present(Some(v)))
    }
}

/// `{"name"}` (tool declarations).
#[derive(Deserialize)]
pub(super) struct Named<'a> {
    #[serde(default, borrow)]
    pub(super) name: Str<'a>,
}

/// One content part: a string, or an object whose `text` (else
/// `refusal`) string is kept; None for an object with neither.
pub(super) struct Part<'b>(pub(super) Str<'b>);

impl<'de: 'b, 'b> Deserialize<'de> for Part<'b> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PartVisitor(PhantomData))
    }
}

struct PartVisitor<'b>(PhantomData<&'b ()>);

impl<'de: 'b, 'b> de::Visitor<'de> for PartVisitor<'b> {
    type Value = Part<'b>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an object")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Part<'b>, E> {
        Ok(Part(Some(S(Cow::Borrowed(s)))))
    }
    fn visit_str<E>(self, s: &str) -> Result<Part<'b>, E> {
        Ok(Part(Some(S(Cow::Owned(s.to_owned())))))
    }
    fn visit_string<E>(self, s: String) -> Result<Part<'b>, E> {
        Ok(Part(Some(S(Cow::Owned(s)))))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Part<'b>, A::Error> {
        let mut text: Str<'b> = None;
        let mut refusal: Str<'b> = None;
        while let Some(key) = map.next_key::<S<'de>>()? {
            // A duplicated key: the `Value` walk keeps the last, so does
            // this (only strings and null are taken).
            match key.0.as_ref() {
                "text" => text = map.next_value()?,
                "refusal" => refusal = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Part(text.or(refusal)))
    }
}

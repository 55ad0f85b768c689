//! AWS event-stream (`application/vnd.amazon.eventstream`): the binary
//! framing of Bedrock's streamed responses (`ConverseStream`,
//! `InvokeModelWithResponseStream`).
//!
//! A message is
//!
//! ```text
//! total length  u32 BE   (whole message, these 4 bytes and the CRC included)
//! headers length u32 BE
//! prelude CRC   u32 BE   (CRC-32 of the 8 bytes above)
//! headers       name length u8, name, value type u8, value
//! payload       total − headers − 16 bytes
//! message CRC   u32 BE   (CRC-32 of everything before it)
//! ```
//!
//! Header value types: 0 true, 1 false, 2 byte, 3 i16, 4 i32, 5 i64, 6 bytes
//! (u16 length), 7 string (u16 length), 8 timestamp (i64 ms), 9 UUID (16).
//! The headers that matter are `:message-type` (`event`, `exception`,
//! `error`), `:event-type`, `:exception-type`, `:error-code` and
//! `:content-type`.
//!
//! Total and bounded: a message is refused when its prelude CRC is wrong,
//! its lengths do not fit (a message may not exceed [`MAX_MESSAGE`], as in
//! the AWS SDKs), its headers do not parse, or its message CRC is wrong. A
//! bad prelude loses the framing: decoding stops there and the rest is
//! reported as unreadable. A last message cut short is reported as cut.

/// The largest message the AWS SDKs accept (16 MiB).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Prelude (12 bytes) and message CRC (4).
const OVERHEAD: usize = 16;
/// Most messages decoded from one body; the rest is counted as dropped.
pub const MAX_MESSAGES: usize = 100_000;

/// One decoded message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// `:message-type` (`event` when absent).
    pub message_type: String,
    /// `:event-type`, `:exception-type` or `:error-code`, by message type.
    pub event_type: String,
    /// `:error-message` of an `error` message.
    pub error_message: Option<String>,
    pub payload: Vec<u8>,
}

/// What stopped the decoding early, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The prelude's CRC or lengths are wrong: the framing is lost.
    BadPrelude,
    /// The headers of a message do not parse.
    BadHeaders,
    /// The message CRC does not match.
    BadCrc,
    /// More than [`MAX_MESSAGES`] messages.
    TooMany,
}

/// A whole body, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub messages: Vec<Message>,
    /// The first problem met; messages after a bad message CRC or bad
    /// headers are still decoded (the framing holds), after a bad prelude
    /// they are not.
    pub problem: Option<Problem>,
    /// Bad messages skipped (bad headers or CRC).
    pub skipped: usize,
    /// The body ends inside a message.
    pub cut: bool,
    /// Bytes left unread (after a bad prelude, or the cut tail).
    pub unread: usize,
}

/// Does this body start like an event-stream message (a prelude whose CRC
/// matches)? For responses whose content type was lost.
pub fn looks_like(body: &[u8]) -> bool {
    prelude(body).is_some()
}

/// (total length, headers length) of a valid prelude at the start of `b`.
fn prelude(b: &[u8]) -> Option<(usize, usize)> {
    let total = be32(b, 0)? as usize;
    let headers = be32(b, 4)? as usize;
    let crc = be32(b, 8)?;
    if crc32fast::hash(&b[..8]) != crc {
        return None;
    }
    if !(OVERHEAD..=MAX_MESSAGE).contains(&total) || headers > total - OVERHEAD {
        return None;
    }
    Some((total, headers))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Decodes every message of `body`.
pub fn decode(body: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    let mut at = 0;
    while at < body.len() {
        let rest = &body[at..];
        if rest.len() < 12 {
            out.cut = true;
            out.unread = rest.len();
            break;
        }
        let Some((total, headers_len)) = prelude(rest) else {
            out.problem.get_or_insert(Problem::BadPrelude);
            out.unread = rest.len();
            break;
        };
        if rest.len() < total {
            out.cut = true;
            out.unread = rest.len();
            break;
        }
        if out.messages.len() >= MAX_MESSAGES {
            out.problem.get_or_insert(Problem::TooMany);
            out.unread = rest.len();
            break;
        }
        let msg = &rest[..total];
        at += total;
        let want_crc = be32(msg, total - 4).unwrap_or_default();
        if crc32fast::hash(&msg[..total - 4]) != want_crc {
            out.problem.get_or_insert(Problem::BadCrc);
            out.skipped += 1;
            continue;
        }
        let Some(headers) = parse_headers(&msg[12..12 + headers_len]) else {
            out.problem.get_or_insert(Problem::BadHeaders);
            out.skipped += 1;
            continue;
        };
        let mut m = Message {
            message_type: "event".to_owned(),
            payload: msg[12 + headers_len..total - 4].to_vec(),
            ..Message::default()
        };
        let mut event_type = None;
        let mut exception_type = None;
        let mut error_code = None;
        for (name, value) in headers {
            match name {
                b":message-type" => m.message_type = value,
                b":event-type" => event_type = Some(value),
                b":exception-type" => exception_type = Some(value),
                b":error-code" => error_code = Some(value),
                b":error-message" => m.error_message = Some(value),
                _ => {}
            }
        }
        m.event_type = match m.message_type.as_str() {
            "exception" => exception_type.or(event_type),
            "error" => error_code.or(event_type),
            _ => event_type,
        }
        .unwrap_or_default();
        out.messages.push(m);
    }
    out
}

/// The string-valued headers (other types are skipped); `None` when the
/// header block does not parse exactly.
fn parse_headers(mut b: &[u8]) -> Option<Vec<(&[u8], String)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let name_len = usize::from(*b.first()?);
        let name = b.get(1..1 + name_len)?;
        let kind = *b.get(1 + name_len)?;
        b = &b[2 + name_len..];
        let size = match kind {
            0 | 1 => 0,
            2 => 1,
            3 => 2,
            4 => 4,
            5 | 8 => 8,
            9 => 16,
            6 | 7 => {
                let len = u16::from_be_bytes(b.get(..2)?.try_into().ok()?);
                2 + usize::from(len)
            }
            _ => return None,
        };
        let value = b.get(..size)?;
        if kind == 7 {
            out.push((name, String::from_utf8_lossy(&value[2..]).into_owned()));
        }
        b = &b[size..];
    }
    Some(out)
}

/// Encodes one message with string headers (for tests and fixtures).
#[cfg(test)]
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(u8::try_from(name.len()).unwrap());
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = u32::try_from(OVERHEAD + h.len() + payload.len()).unwrap();
    let mut m = Vec::new();
    m.extend_from_slice(&total.to_be_bytes());
    m.extend_from_slice(&u32::try_from(h.len()).unwrap().to_be_bytes());
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    #[test]
    fn decodes_events_and_exceptions() {
        let mut body = event("messageStart", r#"{"role":"assistant"}"#);
        body.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
        ));
        body.extend(encode(
            &[
                (":exception-type", "throttlingException"),
                (":message-type", "exception"),
            ],
            br#"{"message":"slow down"}"#,
        ));
        let d = decode(&body);
        assert_eq!(d.problem, None);
        assert!(!d.cut);
        let kinds: Vec<_> = d
            .messages
            .iter()
            .map(|m| (m.message_type.as_str(), m.event_type.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("event", "messageStart"),
                ("event", "contentBlockDelta"),
                ("exception", "throttlingException")
            ]
        );
        assert_eq!(d.messages[0].payload, br#"{"role":"assistant"}"#);
        assert!(looks_like(&body));
        assert!(!looks_like(b"data: {}\n\n"));
    }

    /// A message from the AWS event-stream test suite (aws-c-event-stream
    /// `encoded/positive/all_headers`' simpler sibling: one string header,
    /// payload `{'foo':'bar'}`), bytes as published.
    #[test]
    fn decodes_a_published_test_vector() {
        let vector: &[u8] = &[
            0x00, 0x00, 0x00, 0x3D, 0x00, 0x00, 0x00, 0x20, 0x07, 0xFD, 0x83, 0x96, 0x0C, b'c',
            b'o', b'n', b't', b'e', b'n', b't', b'-', b't', b'y', b'p', b'e', 0x07, 0x00, 0x10,
            b'a', b'p', b'p', b'l', b'i', b'c', b'a', b't', b'i', b'o', b'n', b'/', b'j', b's',
            b'o', b'n', b'{', b'\'', b'f', b'o', b'o', b'\'', b':', b'\'', b'b', b'a', b'r', b'\'',
            b'}', 0x8D, 0x9C, 0x08, 0xB1,
        ];
        let d = decode(vector);
        assert_eq!(d.problem, None, "{d:?}");
        assert_eq!(d.messages.len(), 1);
        assert_eq!(d.messages[0].payload, b"{'foo':'bar'}");
    }

    #[test]
    fn a_bad_crc_skips_one_message_and_a_bad_prelude_stops() {
        let a = event("a", "{}");
        let mut b = event("b", "{}");
        let last = b.len() - 1;
        b[last] ^= 1;
        let c = event("c", "{}");
        let body = [a.clone(), b, c.clone()].concat();
        let d = decode(&body);
        assert_eq!(d.problem, Some(Problem::BadCrc));
        assert_eq!(d.skipped, 1);
        assert_eq!(d.messages.len(), 2);

        let mut bad = c;
        bad[8] ^= 1;
        let d = decode(&[a, bad].concat());
        assert_eq!(d.problem, Some(Problem::BadPrelude));
        assert_eq!(d.messages.len(), 1);
        assert!(d.unread > 0);
    }

    #[test]
    fn a_cut_tail_is_reported() {
        let first = event("a", "{}");
        let body = [first.clone(), event("b", r#"{"x":1}"#)].concat();
        for cut in 1..body.len() {
            let d = decode(&body[..cut]);
            assert_eq!(d.problem, None);
            // A cut between two messages leaves whole messages only.
            assert_eq!(d.cut, cut != first.len(), "cut at {cut}");
            assert_eq!(d.messages.len(), usize::from(cut >= first.len()));
        }
    }

    #[test]
    fn lengths_beyond_the_limits_are_refused() {
        let mut m = Vec::new();
        m.extend_from_slice(&(u32::MAX).to_be_bytes());
        m.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32fast::hash(&m);
        m.extend_from_slice(&crc.to_be_bytes());
        m.extend_from_slice(&[0; 32]);
        assert_eq!(decode(&m).problem, Some(Problem::BadPrelude));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let d = decode(&body);
            prop_assert!(d.unread <= body.len());
        }

        #[test]
        fn messages_round_trip(payloads in proptest::collection::vec(".{0,40}", 0..8)) {
            let body: Vec<u8> = payloads.iter().flat_map(|p| event("e", p)).collect();
            let d = decode(&body);
            prop_assert_eq!(d.problem, None);
            let got: Vec<String> = d.messages.iter().map(|m| String::from_utf8(m.payload.clone()).unwrap()).collect();
            prop_assert_eq!(got, payloads);
        }
    }
}

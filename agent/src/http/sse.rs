//! Server-sent events (the `text/event-stream` format LLM APIs stream in).
//!
//! Follows the WHATWG parsing rules: lines end in CRLF, LF or CR; a line
//! starting with `:` is a comment; `field: value` loses one space after the
//! colon; `data` lines accumulate joined by `\n`; an empty line dispatches
//! the event. Unlike a browser, a last event without its closing empty line
//! is still returned: a stream cut by a close or a gap should keep what it
//! had, and the caller decides from its end marker whether it finished.

use std::borrow::Cow;

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any (the spec's default type is "message").
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// Parses a whole SSE body. Total: any bytes give a (possibly empty) list;
/// invalid UTF-8 is replaced.
pub fn parse_sse(body: &[u8]) -> Vec<SseEvent> {
    // Valid UTF-8 (nearly always) is checked by the fast validator and
    // borrowed; only invalid bytes pay for the replacing copy.
    let text =
        std::str::from_utf8(body).map_or_else(|_| String::from_utf8_lossy(body), Cow::Borrowed);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut events = Vec::new();
    let mut event: Option<String> = None;
    let mut data = String::new();
    let mut has_data = false;
    for line in lines(text) {
        if line.is_empty() {
            dispatch(&mut events, &mut event, &mut data, &mut has_data);
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => {
                if has_data {
                    data.push('\n');
                }
                data.push_str(value);
                has_data = true;
            }
            // `id` and `retry` matter to reconnecting browsers, not to us.
            _ => {}
        }
    }
    dispatch(&mut events, &mut event, &mut data, &mut has_data);
    events
}

/// Per the spec an event without data lines is not dispatched, and the
/// event type does not carry over to the next event either way.
fn dispatch(
    events: &mut Vec<SseEvent>,
    event: &mut Option<String>,
    data: &mut String,
    has_data: &mut bool,
) {
    if *has_data {
        events.push(SseEvent {
            event: event.take(),
            data: std::mem::take(data),
        });
    }
    *event = None;
    data.clear();
    *has_data = false;
}

/// Splits on CRLF, LF or lone CR.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(i) = memchr::memchr2(b'\r', b'\n', rest.as_bytes()) else {
            let line = rest;
            rest = "";
            return Some(line);
        };
        let line = &rest[..i];
        let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
        Some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn crlf_lf_and_cr_line_ends() {
        let want = vec![ev(Some("a"), "1"), ev(None, "2")];
        assert_eq!(
            parse_sse(b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n"),
            want
        );
        assert_eq!(parse_sse(b"event: a\ndata: 1\n\ndata: 2\n\n"), want);
        assert_eq!(parse_sse(b"event: a\rdata: 1\r\rdata: 2\r\r"), want);
    }

    #[test]
    fn multi_line_data_and_comments() {
        let body = b": keep-alive\ndata: first\ndata:second\n: mid comment\ndata:  third\n\n";
        assert_eq!(parse_sse(body), vec![ev(None, "first\nsecond\n third")]);
    }

    #[test]
    fn no_trailing_blank_line_keeps_last_event() {
        assert_eq!(
            parse_sse(b"data: 1\n\ndata: 2"),
            vec![ev(None, "1"), ev(None, "2")]
        );
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_does_not_leak() {
        assert_eq!(
            parse_sse(b"event: ping\n\ndata: x\n\n"),
            vec![ev(None, "x")]
        );
    }

    #[test]
    fn field_without_colon_and_unknown_fields() {
        assert_eq!(parse_sse(b"data\nid: 7\nretry: 10\n\n"), vec![ev(None, "")]);
    }

    #[test]
    fn bom_and_invalid_utf8() {
        let events = parse_sse(b"\xef\xbb\xbfdata: a\xff\n\n");
        assert_eq!(events, vec![ev(None, "a\u{fffd}")]);
    }

    #[test]
    fn empty_and_blank_bodies() {
        assert!(parse_sse(b"").is_empty());
        assert!(parse_sse(b"\n\n\r\n").is_empty());
    }
}

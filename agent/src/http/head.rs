//! Message heads: recognising where one starts, parsing it, and redacting
//! its secrets before anything else sees it.

use super::HttpError;
use crate::redact;

/// Which kind of message a direction carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Request,
    Response,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Response => "response",
        }
    }
}

/// What the first bytes of a would-be message say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    Request,
    Response,
    /// Consistent so far; more bytes are needed to decide.
    NeedMore,
    /// Not the start of an HTTP/1.x message.
    No,
}

/// Longest method token we accept. Real methods are short; a bound keeps
/// random upper-case text from looking like a request for long.
const MAX_METHOD_LEN: usize = 20;
const HTTP1: &[u8] = b"HTTP/1.";

/// Classifies the bytes at a possible message start. Strict on purpose:
/// this decides whether a connection carries HTTP/1.x at all and where to
/// resynchronise after a gap, so text inside a body must rarely pass.
/// `max_line` bounds how long a request line may be before we give up.
pub(crate) fn classify(buf: &[u8], max_line: usize) -> Start {
    if buf.is_empty() {
        return Start::NeedMore;
    }
    // `HEAD` also starts with `H`: decide on the first bytes of `HTTP/`.
    let n = buf.len().min(5);
    if buf[..n] == b"HTTP/"[..n] {
        return classify_status_line(buf);
    }
    classify_request_line(buf, max_line)
}

/// `HTTP/1.x SP 3DIGIT`.
fn classify_status_line(buf: &[u8]) -> Start {
    let want: &[u8] = b"HTTP/1.d ddd";
    for (i, &w) in want.iter().enumerate() {
        let Some(&b) = buf.get(i) else {
            return Start::NeedMore;
        };
        let ok = if w == b'd' {
            b.is_ascii_digit()
        } else {
            b == w
        };
        if !ok {
            return Start::No;
        }
    }
    Start::Response
}

/// `METHOD SP target SP HTTP/1.x (CR)LF`.
fn classify_request_line(buf: &[u8], max_line: usize) -> Start {
    let mut i = 0;
    while i < buf.len() && is_method_byte(buf[i]) {
        i += 1;
        if i > MAX_METHOD_LEN {
            return Start::No;
        }
    }
    if i == buf.len() {
        return Start::NeedMore;
    }
    if i == 0 || buf[i] != b' ' {
        return Start::No;
    }
    i += 1;
    let target_start = i;
    while i < buf.len() && (buf[i] > b' ' && buf[i] != 0x7f) {
        i += 1;
        if i > max_line {
            return Start::No;
        }
    }
    if i == buf.len() {
        return Start::NeedMore;
    }
    if i == target_start || buf[i] != b' ' {
        return Start::No;
    }
    i += 1;
    for (k, &w) in HTTP1.iter().chain(b"d").enumerate() {
        let Some(&b) = buf.get(i + k) else {
            return Start::NeedMore;
        };
        let ok = if w == b'd' && k == HTTP1.len() {
            b.is_ascii_digit()
        } else {
            b == w
        };
        if !ok {
            return Start::No;
        }
    }
    i += HTTP1.len() + 1;
    match buf.get(i) {
        None => Start::NeedMore,
        Some(b'\n') => Start::Request,
        Some(b'\r') => match buf.get(i + 1) {
            None => Start::NeedMore,
            Some(b'\n') => Start::Request,
            Some(_) => Start::No,
        },
        Some(_) => Start::No,
    }
}

/// Methods recognised when garbage letters are glued before a method (a
/// body ending in capitals, then a request line).
const KNOWN_METHODS: &[&[u8]] = &[
    b"OPTIONS", b"CONNECT", b"DELETE", b"PATCH", b"TRACE", b"POST", b"HEAD", b"GET", b"PUT",
];

/// Where a start line begins in `line`, a complete line (ending in `\n`)
/// that may have other bytes before the start line: the tail of a body
/// whose end we lost. A request line must end the line; a status line may
/// follow anything. `expected` restricts the kind.
pub(crate) fn find_start_in_line(
    line: &[u8],
    expected: Option<Kind>,
    max_line: usize,
) -> Option<(usize, Kind)> {
    if expected != Some(Kind::Response) {
        if let Some(start) = request_line_start(line) {
            if classify(&line[start..], max_line) == Start::Request {
                return Some((start, Kind::Request));
            }
        }
    }
    if expected != Some(Kind::Request) {
        for i in memchr::memmem::find_iter(line, HTTP1) {
            if classify(&line[i..], max_line) == Start::Response {
                return Some((i, Kind::Response));
            }
        }
    }
    None
}

/// The start of `METHOD SP target SP HTTP/1.x` at the end of `line`.
fn request_line_start(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"\n")?;
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    // ` HTTP/1.x` at the very end.
    let version_at = body.len().checked_sub(HTTP1.len() + 2)?;
    if body[version_at] != b' ' || &body[version_at + 1..body.len() - 1] != HTTP1 {
        return None;
    }
    let mut i = version_at;
    while i > 0 && body[i - 1] > b' ' && body[i - 1] != 0x7f {
        i -= 1;
    }
    if i == version_at || i == 0 || body[i - 1] != b' ' {
        return None;
    }
    let method_end = i - 1;
    let mut m = method_end;
    while m > 0 && is_method_byte(body[m - 1]) {
        m -= 1;
    }
    let run = &body[m..method_end];
    if run.is_empty() {
        return None;
    }
    if m == 0 || run.len() <= MAX_METHOD_LEN {
        // Prefer a known method that ends the run when the run does not
        // start the line: `JSONPOST` after a lost body is `POST`.
        if m > 0 {
            if let Some(k) = KNOWN_METHODS.iter().find(|k| run.ends_with(k)) {
                return Some(method_end - k.len());
            }
        }
        return Some(m);
    }
    KNOWN_METHODS
        .iter()
        .find(|k| run.ends_with(k))
        .map(|k| method_end - k.len())
}

fn is_method_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

/// A parsed head, secrets already replaced.
#[derive(Debug)]
pub(crate) struct Head {
    pub line: StartLine,
    pub headers: Vec<(String, String)>,
    /// Fingerprint of the API key the head carried, if any.
    pub api_key_id: Option<String>,
}

#[derive(Debug)]
pub(crate) enum StartLine {
    Request { method: String, path: String },
    Response { status: u16 },
}

/// Upper bound on header fields; httparse needs a fixed slice.
const MAX_HEADERS: usize = 256;

/// Parses a complete head (`buf` ends with the empty line).
pub(crate) fn parse_head(buf: &[u8], kind: Kind) -> Result<Head, HttpError> {
    // On the stack (8 KiB): a heap array per head was a malloc and a free
    // for every request and response.
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let malformed = |source| HttpError::MalformedHead {
        kind: kind.name(),
        source,
    };
    let (line, raw_headers) = match kind {
        Kind::Request => {
            let mut req = httparse::Request::new(&mut slots);
            let status = httparse::ParserConfig::default()
                .allow_multiple_spaces_in_request_line_delimiters(true)
                .parse_request(&mut req, buf)
                .map_err(malformed)?;
            if status.is_partial() {
                // find_head_end saw an empty line httparse does not accept
                // as the end (e.g. inside an obsolete folded header).
                return Err(malformed(httparse::Error::Token));
            }
            let method = req.method.unwrap_or_default().to_owned();
            let path = req.path.unwrap_or_default();
            (
                StartLine::Request {
                    method,
                    path: path.to_owned(),
                },
                req.headers,
            )
        }
        Kind::Response => {
            let mut resp = httparse::Response::new(&mut slots);
            let status = httparse::ParserConfig::default()
                .allow_spaces_after_header_name_in_responses(true)
                .allow_obsolete_multiline_headers_in_responses(true)
                .allow_multiple_spaces_in_response_status_delimiters(true)
                .parse_response(&mut resp, buf)
                .map_err(malformed)?;
            if status.is_partial() {
                return Err(malformed(httparse::Error::Token));
            }
            (
                StartLine::Response {
                    status: resp.code.unwrap_or_default(),
                },
                resp.headers,
            )
        }
    };
    let mut api_key_id = None;
    let mut proxy_key_id = None;
    let mut headers = Vec::with_capacity(raw_headers.len());
    for h in raw_headers.iter() {
        let name = h.name.to_owned();
        let value = if redact::is_secret_header(&name) {
            let raw = String::from_utf8_lossy(h.value);
            let fp = redact::fingerprint_key(redact::credential_of(&raw));
            // The proxy's credential and an AWS session token are not the
            // API key; use them only when nothing else identifies the caller.
            if name.eq_ignore_ascii_case("proxy-authorization")
                || name.eq_ignore_ascii_case("x-amz-security-token")
            {
                proxy_key_id.get_or_insert_with(|| fp.clone());
            } else {
                api_key_id.get_or_insert_with(|| fp.clone());
            }
            fp
        } else if redact::is_cookie_header(&name) {
            redact::REDACTED.to_owned()
        } else {
            String::from_utf8_lossy(h.value).into_owned()
        };
        headers.push((name, value));
    }
    let line = match line {
        StartLine::Request { method, path } => {
            let (path, query_key) = redact::redact_target(&path);
            if api_key_id.is_none() {
                api_key_id = query_key;
            }
            StartLine::Request {
                method,
                path: path.into_owned(),
            }
        }
        other @ StartLine::Response { .. } => other,
    };
    Ok(Head {
        line,
        headers,
        api_key_id: api_key_id.or(proxy_key_id),
    })
}

/// Case-insensitive header lookup (first match).
pub(crate) fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// All values of a header, comma lists split, trimmed, lower-cased.
pub(crate) fn header_tokens(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// How a body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyLength {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The framing of a request body (RFC 9112 §6.3: a request without
/// Content-Length or chunked has no body).
pub(crate) fn request_body_length(headers: &[(String, String)]) -> Result<BodyLength, HttpError> {
    let te = header_tokens(headers, "transfer-encoding");
    if !te.is_empty() {
        return if te.last().is_some_and(|t| t == "chunked") {
            Ok(BodyLength::Chunked)
        } else {
            Err(HttpError::BadTransferEncoding)
        };
    }
    Ok(match content_length(headers)? {
        Some(0) | None => BodyLength::None,
        Some(n) => BodyLength::Length(n),
    })
}

/// The framing of a response body, given what the request was.
pub(crate) fn response_body_length(
    status: u16,
    headers: &[(String, String)],
    request_was_head: bool,
) -> Result<BodyLength, HttpError> {
    if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(BodyLength::None);
    }
    let te = header_tokens(headers, "transfer-encoding");
    if !te.is_empty() {
        // A response whose last coding is not chunked runs until close.
        return Ok(if te.last().is_some_and(|t| t == "chunked") {
            BodyLength::Chunked
        } else {
            BodyLength::UntilClose
        });
    }
    Ok(match content_length(headers)? {
        Some(0) => BodyLength::None,
        Some(n) => BodyLength::Length(n),
        None => BodyLength::UntilClose,
    })
}

/// Content-Length, accepting repeats of one value (`5, 5`) and rejecting
/// anything else that is not a plain decimal number.
fn content_length(headers: &[(String, String)]) -> Result<Option<u64>, HttpError> {
    let mut found: Option<u64> = None;
    for token in header_tokens(headers, "content-length") {
        if !token.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HttpError::BadContentLength);
        }
        let n: u64 = token.parse().map_err(|_| HttpError::BadContentLength)?;
        match found {
            Some(prev) if prev != n => return Err(HttpError::BadContentLength),
            _ => found = Some(n),
        }
    }
    Ok(found)
}

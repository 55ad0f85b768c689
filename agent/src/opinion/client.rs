//! A minimal HTTP/1.1 JSON client for the loopback classifier: one request
//! per connection, bounded in time and size.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use serde::Deserialize;

use super::Endpoint;

/// Most bytes read of an answer.
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
pub(crate) struct Answer {
    pub label: String,
    #[serde(default)]
    pub score: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("i/o")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("answer larger than {MAX_ANSWER} bytes")]
    TooLarge,
    #[error("bad HTTP answer")]
    BadHttp,
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("bad JSON answer")]
    BadJson(#[from] serde_json::Error),
}

pub(crate) fn post_json(
    endpoint: &Endpoint,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<Answer, ClientError> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(ClientError::Timeout)
    };
    let mut s = TcpStream::connect_timeout(&endpoint.addr, left()?)?;
    s.set_nodelay(true)?;
    let body = serde_json::to_vec(body)?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.host,
        body.len()
    );
    s.set_write_timeout(Some(left()?))?;
    s.write_all(head.as_bytes())?;
    s.write_all(&body)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        s.set_read_timeout(Some(left()?))?;
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ClientError::Timeout)
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_ANSWER {
            return Err(ClientError::TooLarge);
        }
        if let Some(answer) = complete(&buf)? {
            return Ok(answer);
        }
    }
    complete(&buf)?.ok_or(ClientError::BadHttp)
}

/// The answer, once the head and a body of its Content-Length are in.
fn complete(buf: &[u8]) -> Result<Option<Answer>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf).map_err(|_| ClientError::BadHttp)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.ok_or(ClientError::BadHttp)?;
    if status != 200 {
        return Err(ClientError::Status(status));
    }
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or(ClientError::BadHttp)?;
    let body = &buf[head_len..];
    if body.len() < len {
        return Ok(None);
    }
    Ok(Some(serde_json::from_slice(&body[..len])?))
}

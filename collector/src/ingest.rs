//! Turning a request body into rows: bounded zstd decompression and NDJSON
//! parsing. Pure and synchronous; the server calls it off the async
//! threads.
//!
//! Bad lines: a line that is not a JSON object with a string `id`, `kind`
//! and an RFC 3339 `time` is skipped and counted (`invalid` in the ack),
//! and the good lines of the batch are stored. Refusing the whole batch
//! would make the agent drop the good events with the bad (a 400 is final)
//! or resend it forever; a count in the ack keeps the loss visible on both
//! sides.

use std::io::Read as _;

use serde_json::Value;

use crate::store::Row;

/// Largest zstd window accepted (2^24 = 16 MiB). The agent's level-3 frames
/// use at most 2 MiB; a frame that asks for more is refused before the
/// decoder allocates it.
const MAX_WINDOW_LOG: u32 = 24;
/// Longest accepted `id`.
const MAX_ID_LEN: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("decompressed batch larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("not a valid zstd frame")]
    Decompress(#[source] std::io::Error),
}

/// Decompresses `body` (one or more zstd frames), refusing to produce more
/// than `max` bytes: the work done on a zstd bomb is bounded by `max`.
pub fn decompress_bounded(body: &[u8], max: u64) -> Result<Vec<u8>, IngestError> {
    let mut decoder =
        zstd::stream::read::Decoder::with_buffer(body).map_err(IngestError::Decompress)?;
    decoder
        .window_log_max(MAX_WINDOW_LOG)
        .map_err(IngestError::Decompress)?;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(16 << 20));
    decoder
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(IngestError::Decompress)?;
    if out.len() as u64 > max {
        return Err(IngestError::TooLarge { limit: max });
    }
    Ok(out)
}

/// The rows of a batch and how many lines were unusable.
#[derive(Debug, Default)]
pub struct Parsed {
    pub rows: Vec<Row>,
    pub invalid: u64,
}

pub fn parse_batch(ndjson: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    for line in ndjson.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(line) {
            Some(row) => out.rows.push(row),
            None => out.invalid += 1,
        }
    }
    out
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// One event line to a row; `None` when it is not a usable event.
pub fn parse_line(line: &[u8]) -> Option<Row> {
    let body = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let v: Value = serde_json::from_str(body).ok()?;
    let id = str_at(&v, &["id"]).filter(|s| !s.is_empty() && s.len() <= MAX_ID_LEN)?;
    let kind = str_at(&v, &["kind"])?;
    let ts = chrono::DateTime::parse_from_rfc3339(str_at(&v, &["time"])?)
        .ok()?
        .timestamp_nanos_opt()?;
    let severity = match str_at(&v, &["severity"]).unwrap_or("info") {
        "low" => 1,
        "medium" => 2,
        "high" => 3,
        "critical" => 4,
        _ => 0,
    };
    let owned = |path: &[&str]| str_at(&v, path).map(str::to_owned);
    let evidence = v
        .pointer("/finding/evidence")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Some(Row {
        id: id.to_owned(),
        ts,
        kind: kind.to_owned(),
        host: owned(&["host", "name"]),
        user: owned(&["process", "user"]),
        trace_id: owned(&["trace_id"]),
        severity,
        rule: owned(&["finding", "rule"]),
        evidence,
        text: search_text(&v),
        body: body.to_owned(),
    })
}

/// The `process.user` of an event line, as [`parse_line`] reads it (the
/// archive's forget matches lines by it).
pub fn user_of_line(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Event {
        process: Option<Process>,
    }
    #[derive(serde::Deserialize)]
    struct Process {
        user: Option<Value>,
    }
    let e: Event = serde_json::from_slice(line).ok()?;
    match e.process?.user? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// The text full-text search sees: what was said (prompts, outputs, tool
/// calls and results) and what was done (command lines, paths, addresses).
fn search_text(v: &Value) -> String {
    fn push<'a>(parts: &mut Vec<&'a str>, v: Option<&'a Value>) {
        if let Some(s) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) {
            parts.push(s);
        }
    }
    let mut parts: Vec<&str> = Vec::new();
    for p in [
        "/llm/system/text",
        "/llm/output/text",
        "/llm/output/reasoning",
        "/llm/output/refusal",
        "/tool/name",
        "/tool/arguments",
        "/tool/result",
        "/exec/filename",
        "/file/path",
        "/net/address",
        "/finding/title",
        "/finding/detail",
    ] {
        push(&mut parts, v.pointer(p));
    }
    let each = |p: &str| v.pointer(p).and_then(Value::as_array).into_iter().flatten();
    for m in each("/llm/messages") {
        push(&mut parts, m.get("content"));
    }
    for c in each("/llm/output/tool_calls") {
        push(&mut parts, c.get("name"));
        push(&mut parts, c.get("arguments"));
    }
    for a in each("/exec/args") {
        push(&mut parts, Some(a));
    }
    parts.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zstd_bomb_stops_at_the_limit() {
        // 1 GiB of zeros as 1024 frames of 1 MiB, ~100 KiB in all;
        // decompression must stop at the limit, not produce the gigabyte.
        let frame = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap();
        let bomb = frame.repeat(1024);
        assert!(bomb.len() < 200_000, "bomb is {} bytes", bomb.len());
        let start = std::time::Instant::now();
        assert!(matches!(
            decompress_bounded(&bomb, 8 << 20),
            Err(IngestError::TooLarge { .. })
        ));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        assert!(decompress_bounded(b"not zstd", 100).is_err());
        let ok = zstd::bulk::compress(b"{}\n", 3).unwrap();
        assert_eq!(decompress_bounded(&ok, 3).unwrap(), b"{}\n");
    }

    #[test]
    fn lines_become_rows_and_bad_lines_are_counted() {
        let batch = concat!(
            r#"{"v":1,"id":"a","time":"2026-11-27T12:00:00.000000001Z","kind":"llm.call","host":{"name":"h1","id":"x"},"trace_id":"t1","severity":"info","process":{"user":"alice"},"llm":{"messages":[{"role":"user","content":"list the files"}],"output":{"text":"here they are","tool_calls":[{"id":"c","name":"bash","arguments":"ls -la"}]}}}"#,
            "\n",
            r#"{"v":1,"id":"f","time":"2026-11-27T12:00:01Z","kind":"finding","severity":"high","trace_id":"t1","finding":{"rule":"inj.override","title":"Injection","evidence":["a"]}}"#,
            "\n\n",
            "not json\n",
            r#"{"id":"","time":"2026-11-27T12:00:01Z","kind":"x"}"#,
            "\n",
            r#"{"id":"b","time":"yesterday","kind":"x"}"#,
            "\n",
            r#"["id"]"#,
        );
        let p = parse_batch(batch.as_bytes());
        assert_eq!(p.invalid, 4);
        assert_eq!(p.rows.len(), 2);
        let a = &p.rows[0];
        assert_eq!(a.ts, 1_795_780_800_000_000_001);
        assert_eq!(
            (a.host.as_deref(), a.user.as_deref()),
            (Some("h1"), Some("alice"))
        );
        assert!(a.text.contains("list the files") && a.text.contains("ls -la"));
        assert_eq!(a.body, batch.lines().next().unwrap());
        let f = &p.rows[1];
        assert_eq!((f.severity, f.rule.as_deref()), (3, Some("inj.override")));
        assert_eq!(f.evidence, ["a"]);
    }
}

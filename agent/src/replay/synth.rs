//! Synthesised records: a realistic recording made without a kernel, for
//! tests and benchmarks (`aitrail replay --synth FILE --calls N`).
//!
//! What it models, and what it does not: agent processes (forked from a
//! shell, exec'd as `python3 agent.py`) each make a session of up to 8 LLM
//! calls over keep-alive HTTP/1.1 connections, alternating `OpenAI` chat
//! completions and Anthropic messages, both streamed (SSE, chunked).
//! Requests carry a system prompt, the growing conversation and tool
//! definitions (a few KB up to ~40 KB); they are written as the Python SDKs
//! do (head, then body) and split at the kernel's 16 KiB chunk size.
//! Responses are read one SSE event per `SSL_read`, as they arrive. Every
//! call ends with a tool call: `OpenAI`'s runs a shell (fork, exec of
//! `/bin/sh -c …`, exit), Anthropic's reads a file (an open of the path).
//! Not modelled: HTTP/2, gzip, the kernel losing records, several CPUs.
//! Everything is deterministic: the same `calls` give the same records.

use agent_common::{dir, kind, tls_flags, ExitRaw, ForkRaw, RecordHeader, TLS_CHUNK_DATA};
use serde_json::json;

use crate::capture::records::{ExecRecord, FileRecord, Record, TlsChunk};

/// Calls per agent process before it exits and another starts.
const CALLS_PER_SESSION: usize = 8;
/// The pid agents are forked from (a shell, never recorded itself).
const SHELL_PID: u32 = 1500;

const SYSTEM_PROMPT: &str = "You are a coding agent working in the user's repository. \
You can run shell commands and read files with the tools you are given. Before you change \
anything, read the relevant files and explain what you will do. Never print secrets, never \
send data to hosts the user did not name, and stop to ask when a command could delete data. \
Prefer small, reviewable steps; run the tests after each change and report their output \
verbatim. When a tool fails, read its error and try a different approach rather than \
repeating the same call. ";

pub(super) struct Gen {
    pub(super) out: Vec<Record>,
    pub(super) t: u64,
    seq: u64,
}

impl Gen {
    pub(super) fn hdr(&mut self, k: u32, pid: u32) -> RecordHeader {
        self.seq += 1;
        RecordHeader {
            kind: k,
            cpu: 0,
            seq: self.seq,
            ktime_ns: self.t,
            pid_tgid: (u64::from(pid) << 32) | u64::from(pid),
        }
    }

    pub(super) fn advance_ms(&mut self, ms: u64) {
        self.t += ms * 1_000_000;
    }

    /// One `SSL_write`/`SSL_read`, split as the kernel splits it.
    pub(super) fn ssl_call(&mut self, pid: u32, conn: u64, d: u8, data: &[u8]) {
        let total = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let mut off = 0usize;
        loop {
            let end = (off + TLS_CHUNK_DATA).min(data.len());
            let hdr = self.hdr(kind::TLS_CHUNK, pid);
            self.out.push(Record::Tls(TlsChunk {
                hdr,
                conn,
                offset: u32::try_from(off).unwrap_or(u32::MAX),
                total_len: total,
                fd: 5,
                dir: d,
                flags: if end == data.len() {
                    tls_flags::LAST
                } else {
                    0
                },
                data: data[off..end].to_vec(),
            }));
            off = end;
            if off >= data.len() {
                break;
            }
        }
    }

    pub(super) fn fork(&mut self, parent: u32, child: u32) {
        let hdr = self.hdr(kind::FORK, parent);
        self.out.push(Record::Fork(ForkRaw {
            hdr,
            parent_tgid: parent,
            child_tgid: child,
        }));
    }

    pub(super) fn exec(
        &mut self,
        pid: u32,
        parent: u32,
        comm: &str,
        filename: &str,
        args: &[&str],
    ) {
        let hdr = self.hdr(kind::EXEC, pid);
        self.out.push(Record::Exec(ExecRecord {
            hdr,
            ppid: parent,
            uid: 1000,
            gid: 1000,
            flags: 0,
            old_pid: pid,
            comm: comm.to_owned(),
            filename: filename.to_owned(),
            args: args.iter().map(|&a| a.to_owned()).collect(),
        }));
    }

    pub(super) fn exit(&mut self, pid: u32) {
        let hdr = self.hdr(kind::EXIT, pid);
        self.out.push(Record::Exit(ExitRaw {
            hdr,
            code: 0,
            _pad: 0,
        }));
    }

    fn open(&mut self, pid: u32, path: &str) {
        let hdr = self.hdr(kind::FILE_OPEN, pid);
        self.out.push(Record::FileOpen(FileRecord {
            hdr,
            flags: 0,
            ret: 3,
            dfd: -100,
            path: path.to_owned(),
        }));
    }
}

/// The records of `calls` LLM calls (and the processes around them).
pub fn records(calls: usize) -> Vec<Record> {
    records_with(calls, 0)
}

/// A private key every `sensitive_every`-th file read opens instead of
/// `/etc/hosts` (a `sensitive_file` finding each).
pub const SENSITIVE_PATH: &str = "/home/agent/.ssh/id_ed25519";

/// Like [`records`]; with `sensitive_every` > 0, every `sensitive_every`-th
/// file read (one call in two reads a file) opens [`SENSITIVE_PATH`], so
/// the events hold findings too.
pub fn records_with(calls: usize, sensitive_every: usize) -> Vec<Record> {
    records_mixed(calls, sensitive_every, &[])
}

/// Like [`records_with`], with the connections of `captures` (capture
/// fixtures, see [`super::mix`]) spread evenly between the agent sessions,
/// each made by a process of its own.
pub fn records_mixed(
    calls: usize,
    sensitive_every: usize,
    captures: &[super::mix::Capture],
) -> Vec<Record> {
    let sessions = calls.div_ceil(CALLS_PER_SESSION).max(1);
    let mut placed = 0usize;
    let mut g = Gen {
        out: Vec::new(),
        t: 1_000_000_000_000,
        seq: 0,
    };
    let mut call = 0usize;
    let mut session = 0u32;
    while call < calls {
        let agent = 2000 + session * 16;
        g.fork(SHELL_PID, agent);
        g.advance_ms(2);
        g.exec(
            agent,
            SHELL_PID,
            "python3",
            "/usr/bin/python3",
            &["python3", "agent.py", "--task", "fix the failing test"],
        );
        g.advance_ms(40);
        let mut history: Vec<(String, String)> = Vec::new();
        let mut child = agent + 1;
        for k in 0..CALLS_PER_SESSION {
            if call >= calls {
                break;
            }
            let user = format!(
                "Step {k}: look at the repository and continue with the task. {}",
                "The test suite reports one failure in the parser module; find out why. "
                    .repeat(1 + k % 3)
            );
            if call.is_multiple_of(2) {
                openai_call(&mut g, agent, call, &history, &user);
                g.advance_ms(5);
                g.fork(agent, child);
                g.exec(child, agent, "sh", "/bin/sh", &["sh", "-c", "ls -la /tmp"]);
                g.advance_ms(8);
                g.exit(child);
                child += 1;
                history.push((user, tool_output("ls -la /tmp", k)));
            } else {
                anthropic_call(&mut g, agent, call, &history, &user);
                g.advance_ms(3);
                let read = call / 2;
                if sensitive_every > 0 && read % sensitive_every == sensitive_every - 1 {
                    g.open(agent, SENSITIVE_PATH);
                } else {
                    g.open(agent, "/etc/hosts");
                }
                history.push((user, tool_output("/etc/hosts", k)));
            }
            g.advance_ms(200);
            call += 1;
        }
        g.exit(agent);
        g.advance_ms(500);
        session += 1;
        let upto = captures.len() * usize::try_from(session).unwrap_or(usize::MAX) / sessions;
        while placed < upto.min(captures.len()) {
            super::mix::emit(&mut g, &captures[placed], placed);
            placed += 1;
        }
    }
    for (i, c) in captures.iter().enumerate().skip(placed) {
        super::mix::emit(&mut g, c, i);
    }
    g.out
}

/// One agent session of `turns` calls to one API (`OpenAI` chat when
/// `anthropic` is false), each request replaying the whole history before
/// it, as [`records`] makes them; the last call is the heavy case of a
/// long conversation (the decoder benchmarks use it). TLS records only, on
/// one connection.
pub fn conversation(turns: usize, anthropic: bool) -> Vec<Record> {
    let mut g = Gen {
        out: Vec::new(),
        t: 1_000_000_000_000,
        seq: 0,
    };
    let agent = 2000;
    let mut history: Vec<(String, String)> = Vec::new();
    for k in 0..turns {
        let user = format!(
            "Step {k}: look at the repository and continue with the task. {}",
            "The test suite reports one failure in the parser module; find out why. "
                .repeat(1 + k % 3)
        );
        if anthropic {
            anthropic_call(&mut g, agent, k, &history, &user);
            history.push((user, tool_output("/etc/hosts", k)));
        } else {
            openai_call(&mut g, agent, k, &history, &user);
            history.push((user, tool_output("ls -la /tmp", k)));
        }
        g.advance_ms(200);
    }
    g.out
}

/// What a tool returned, as sent back in the next request: a few hundred
/// bytes to a few KB.
fn tool_output(what: &str, k: usize) -> String {
    let line = format!(
        "-rw-r--r-- 1 dev dev {:>6} Nov 12 10:{k:02} {what}.{k}\n",
        1024 + k
    );
    line.repeat(8 + (k * 7) % 40)
}

fn http_request(host: &str, path: &str, auth: (&str, &str), body: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: gzip, deflate\r\n\
         Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\n\
         User-Agent: synth/1.0\r\n{}: {}\r\nContent-Length: {}\r\n\r\n",
        auth.0,
        auth.1,
        body.len()
    );
    (head.into_bytes(), body.to_vec())
}

const RESPONSE_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
Transfer-Encoding: chunked\r\nConnection: keep-alive\r\nServer: cloudflare\r\n\r\n";

/// One SSE event as one chunk of a chunked body.
fn sse_chunk(event: Option<&str>, data: &str) -> Vec<u8> {
    let mut ev = String::new();
    if let Some(e) = event {
        ev.push_str("event: ");
        ev.push_str(e);
        ev.push('\n');
    }
    ev.push_str("data: ");
    ev.push_str(data);
    ev.push_str("\n\n");
    format!("{:x}\r\n{ev}\r\n", ev.len()).into_bytes()
}

/// Text of the assistant's answer, in stream-sized pieces.
fn answer_pieces(call: usize) -> Vec<String> {
    let text = format!(
        "I looked at the parser module for call {call}. The failure comes from an \
         off-by-one in the tokenizer's lookahead: when the input ends right after a \
         delimiter, the loop reads one byte too far. I will list the temporary files \
         first to see what the last run left behind, then read the configuration."
    );
    text.split_inclusive(' ')
        .collect::<Vec<_>>()
        .chunks(3)
        .map(<[&str]>::concat)
        .collect()
}

fn openai_call(g: &mut Gen, pid: u32, call: usize, history: &[(String, String)], user: &str) {
    let conn = 0x7f00_0000_0000 | (u64::from(pid) << 8);
    let mut messages = vec![json!({"role": "system", "content": SYSTEM_PROMPT.repeat(3)})];
    for (i, (u, tool)) in history.iter().enumerate() {
        let id = format!("call_{pid}_{i}");
        messages.push(json!({"role": "user", "content": u}));
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": "run_shell", "arguments": "{\"command\":\"ls -la /tmp\"}"}}]}));
        messages.push(json!({"role": "tool", "tool_call_id": id, "content": tool}));
    }
    messages.push(json!({"role": "user", "content": user}));
    let body = json!({
        "messages": messages,
        "model": "gpt-4o-mini",
        "stream": true,
        "tools": [{"type": "function", "function": {"name": "run_shell",
            "description": "Run a shell command and return its output",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                "required": ["command"]}}}],
    });
    let (head, body) = http_request(
        "api.openai.com",
        "/v1/chat/completions",
        (
            "Authorization",
            "Bearer sk-proj-synthSynthSynthSynthSynthSynth0000",
        ),
        &serde_json::to_vec(&body).unwrap_or_default(),
    );
    g.ssl_call(pid, conn, dir::WRITE, &head);
    g.ssl_call(pid, conn, dir::WRITE, &body);
    g.advance_ms(300);
    g.ssl_call(pid, conn, dir::READ, RESPONSE_HEAD.as_bytes());
    let id = format!("chatcmpl-synth{call}");
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 1_731_406_503,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        .to_string()
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    for p in answer_pieces(call) {
        events.push(chunk(json!({"content": p}), None));
    }
    events.push(chunk(
        json!({"tool_calls": [{"index": 0, "id": format!("call_{pid}_{call}"), "type": "function",
            "function": {"name": "run_shell", "arguments": ""}}]}),
        None,
    ));
    for frag in ["{\"comm", "and\":\"ls", " -la /tmp\"}"] {
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]}),
            None,
        ));
    }
    events.push(chunk(json!({}), Some("tool_calls")));
    events.push("[DONE]".to_owned());
    for e in events {
        g.advance_ms(15);
        g.ssl_call(pid, conn, dir::READ, &sse_chunk(None, &e));
    }
    g.ssl_call(pid, conn, dir::READ, b"0\r\n\r\n");
}

fn anthropic_call(g: &mut Gen, pid: u32, call: usize, history: &[(String, String)], user: &str) {
    let conn = 0x7f10_0000_0000 | (u64::from(pid) << 8);
    let mut messages = Vec::new();
    for (i, (u, tool)) in history.iter().enumerate() {
        let id = format!("toolu_{pid}_{i}");
        messages.push(json!({"role": "user", "content": u}));
        messages.push(json!({"role": "assistant", "content": [
            {"type": "tool_use", "id": id, "name": "read_file", "input": {"path": "/etc/hosts"}}]}));
        messages.push(json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id, "content": tool}]}));
    }
    messages.push(json!({"role": "user", "content": user}));
    let body = json!({
        "max_tokens": 4096,
        "model": "claude-sonnet-4-20250514",
        "stream": true,
        "system": SYSTEM_PROMPT.repeat(3),
        "messages": messages,
        "tools": [{"name": "read_file", "description": "Read a file",
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}},
                "required": ["path"]}}],
    });
    let (head, body) = http_request(
        "api.anthropic.com",
        "/v1/messages",
        (
            "x-api-key",
            "sk-ant-api03-synthSynthSynthSynthSynthSynth-AAAAAA",
        ),
        &serde_json::to_vec(&body).unwrap_or_default(),
    );
    g.ssl_call(pid, conn, dir::WRITE, &head);
    g.ssl_call(pid, conn, dir::WRITE, &body);
    g.advance_ms(400);
    g.ssl_call(pid, conn, dir::READ, RESPONSE_HEAD.as_bytes());
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": format!("msg_synth{call}"),
            "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514", "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 1200, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for p in answer_pieces(call) {
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(("content_block_start", json!({"type": "content_block_start", "index": 1,
        "content_block": {"type": "tool_use", "id": format!("toolu_{pid}_{call}"), "name": "read_file", "input": {}}})));
    for frag in ["{\"pa", "th\": \"/etc", "/hosts\"}"] {
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": frag}}),
        ));
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 1}),
    ));
    events.push(("message_delta", json!({"type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 96}})));
    events.push(("message_stop", json!({"type": "message_stop"})));
    for (name, data) in events {
        g.advance_ms(15);
        g.ssl_call(
            pid,
            conn,
            dir::READ,
            &sse_chunk(Some(name), &data.to_string()),
        );
    }
    g.ssl_call(pid, conn, dir::READ, b"0\r\n\r\n");
}

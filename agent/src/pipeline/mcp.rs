//! MCP exchanges into `tool.call` events, and calls of the HTTP+SSE
//! transport held for their answer on the session's `GET` stream.

use super::{Pipeline, Stage};
use crate::{
    capture::Command,
    correlate::McpObservation,
    event::ToolCall,
    mcp::{JoinKey, Transport},
};

impl Pipeline {
    /// One MCP exchange: a `tool.call` per `tools/call`, the rest counted.
    pub(super) fn on_mcp(
        &mut self,
        tgid: u32,
        ex: &crate::http::Exchange,
        mut m: crate::mcp::McpExchange,
    ) {
        self.count("mcp_exchanges");
        for p in &m.problems {
            self.drop_one(p.name());
        }
        *self
            .counters
            .entry("mcp_messages_other".to_owned())
            .or_default() += (m.other.len() + m.answers.len()) as u64;
        // A process that calls tools through MCP, or serves them, is an
        // agent's: its effects are watched like an LLM caller's.
        if !m.calls.is_empty() && self.watched.insert(tgid) {
            let _ = self.commands.send(Command::Watch(tgid));
        }
        // The older transport: calls posted here are answered on the
        // session's `GET` stream, another exchange (see `mcp::SseJoin`).
        let join_key = match (&m.session, m.transport) {
            (Some(session), Transport::Sse) => Some(JoinKey {
                tgid,
                host: m.server.host.clone(),
                port: m.server.port,
                session: session.clone(),
            }),
            _ => None,
        };
        for call in std::mem::take(&mut m.calls) {
            self.count("mcp_calls");
            let process = self.procs.get(tgid).map(|p| p.info.clone());
            let unanswered = call.result.is_none() && call.error.is_none();
            let tool = ToolCall {
                mcp: Some(m.info(&call)),
                call_id: call.id.clone(),
                name: call.name,
                arguments: call.arguments,
                result: call.result,
                is_error: call.is_error,
                truncated: call.truncated,
                ..ToolCall::default()
            };
            let obs = McpObservation {
                tool,
                process,
                tgid,
                start_ns: ex.t_request_start,
                end_ns: ex.t_response_end.unwrap_or(ex.t_request_end),
            };
            self.clock.enter(Stage::Correlate);
            let ev = self.corr.on_mcp_call(obs);
            self.clock.leave();
            match &join_key {
                Some(key) if unanswered => {
                    let now = self.now();
                    for ev in self.mcp_join.hold(key.clone(), call.id, ev, now) {
                        self.emit(ev);
                    }
                }
                _ => self.emit(ev),
            }
        }
        if let Some(key) = &join_key {
            let stream_ended = ex.request.method.eq_ignore_ascii_case("GET");
            if stream_ended || !m.answers.is_empty() {
                let now = self.now();
                for ev in self.mcp_join.answer(key, &m.answers, stream_ended, now) {
                    self.emit(ev);
                }
            }
        }
    }
}

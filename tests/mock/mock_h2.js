#!/usr/bin/env node
// A local HTTP/2-only HTTPS mock of OpenAI's chat completions and Responses
// APIs for aitrail's end-to-end tests (node standard library only).
//
// The HTTP/2 sibling of mock_llm.py: same CLI, same certificate arguments,
// same `PORT <n>` line on stdout, and the same scripted answers for
//   POST /v1/chat/completions   plain JSON (gzip when the client accepts it),
//                               or `"stream": true` SSE (chat.completion.chunk
//                               deltas, tool-call arguments in fragments, usage
//                               chunk when stream_options.include_usage,
//                               data: [DONE])
//   POST /v1/responses          OpenAI Responses API, `"stream": true` only:
//                               SSE `event:`/`data:` pairs (response.created,
//                               response.in_progress, output_item.added,
//                               function_call_arguments.delta/.done or
//                               output_text.delta/.done, output_item.done,
//                               response.completed with usage), as Codex CLI
//                               reads them
//   GET  /v1/responses          426: the Responses WebSocket is refused, so
//                               a client that tries it first falls back to
//                               POST (HTTP/2 has no Upgrade)
//   GET  /health                {"status": "ok"}
// The script (see mock_llm.py): the first user message names a file after
// `FILE:` and a command after `CMD:`; step = number of `tool` messages.
//   step 0 and FILE given -> tool call read_file   {"path": FILE}
//   step 1 and CMD given  -> tool call run_command {"command": CMD}
//   otherwise             -> text "done: <step> tools used"
// Usage: prompt_tokens = 120 + 100*step, completion_tokens = 20 + 5*step.
// Tool call ids: call_ + 24 hex of sha256("openai\x1f<prompt>\x1f<step>").
// Change both mocks together.
// The Responses script: the prompt is every user message's text (Codex
// sends its environment context as a user message of its own), step =
// number of function_call_output items. When the request declares Codex's
// `exec_command` tool, CMD becomes exec_command {"cmd": CMD} at step 0;
// otherwise the read_file / run_command script above. Tool call ids:
// call_ + 24 hex of sha256("responses\x1f<prompt>\x1f<step>"). Usage as
// above (input_tokens / output_tokens).
//
// ALPN offers h2 only: a client that cannot speak HTTP/2 fails the handshake
// instead of silently falling back to HTTP/1.1.
//
// Usage:
//   mock_h2.js --port 0 --cert server.pem --key server.key [--no-gzip]
//              [--record requests.jsonl] [--sse-delay-ms 5] [--host 127.0.0.1]
//              [--tls-max 1.2|1.3]
// Logs one line per request on stderr; never logs header values.

'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http2 = require('node:http2');
const zlib = require('node:zlib');

const MAX_BODY = 64 * 1024 * 1024;
const SECRET_HEADERS = new Set(['authorization', 'x-api-key', 'api-key', 'proxy-authorization', 'cookie']);

function parseArgs(argv) {
  const args = { host: '127.0.0.1', port: 0, gzip: true, record: null, sseDelayMs: 5, tlsMax: '1.3' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--host') args.host = next();
    else if (a === '--port') args.port = Number(next());
    else if (a === '--cert') args.cert = next();
    else if (a === '--key') args.key = next();
    else if (a === '--gzip') args.gzip = true;
    else if (a === '--no-gzip') args.gzip = false;
    else if (a === '--record') args.record = next();
    else if (a === '--sse-delay-ms') args.sseDelayMs = Number(next());
    else if (a === '--tls-max') args.tlsMax = next();
    else usage(`unknown argument ${a}`);
  }
  if (!args.cert || !args.key) usage('--cert and --key are required');
  if (!Number.isInteger(args.port) || args.port < 0) usage('bad --port');
  if (args.tlsMax !== '1.2' && args.tlsMax !== '1.3') usage('bad --tls-max');
  return args;
}

function usage(msg) {
  process.stderr.write(`mock_h2: ${msg}\nusage: mock_h2.js --port 0 --cert server.pem --key server.key ` +
    '[--no-gzip] [--record FILE] [--sse-delay-ms N] [--host ADDR] [--tls-max 1.2|1.3]\n');
  process.exit(2);
}

function log(msg) {
  const t = new Date().toTimeString().slice(0, 8);
  process.stderr.write(`[mock_h2 ${t}] ${msg}\n`);
}

// ------------------------------------------------------------- the script

function stableHex(...parts) {
  return crypto.createHash('sha256').update(parts.map(String).join('\x1f')).digest('hex').slice(0, 24);
}

function textOf(content) {
  if (content == null) return '';
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((p) => {
      if (typeof p === 'string') return p;
      if (p && typeof p.text === 'string') return p.text;
      if (p && 'content' in p) return textOf(p.content);
      return null;
    }).filter((p) => p !== null).join('\n');
  }
  return '';
}

// Mirrors mock_llm.py's Decision for the openai provider. Its arguments are
// serialised the way Python's json.dumps does (", " and ": " separators) so
// both mocks send the same bytes.
function decide(req) {
  const messages = Array.isArray(req.messages) ? req.messages : [];
  const user = messages.find((m) => m && m.role === 'user');
  const prompt = user ? textOf(user.content) : '';
  const step = messages.filter((m) => m && m.role === 'tool').length;
  const script = [];
  const file = /^\s*FILE:\s*(\S+)\s*$/m.exec(prompt);
  const cmd = /^\s*CMD:\s*(.+?)\s*$/m.exec(prompt);
  if (file) script.push(['read_file', { path: file[1] }]);
  if (cmd) script.push(['run_command', { command: cmd[1] }]);
  const tools = Array.isArray(req.tools) && req.tools.length > 0;
  const tool = tools && step < script.length ? script[step] : null;
  const d = {
    step,
    tool,
    inputTokens: 120 + 100 * step,
    outputTokens: 20 + 5 * step,
    finalText: `done: ${step} tools used`,
    msgId: stableHex('openai', 'msg', prompt, step),
  };
  if (tool) {
    d.callId = 'call_' + stableHex('openai', prompt, step);
    const [k, v] = Object.entries(tool[1])[0];
    d.arguments = `{${JSON.stringify(k)}: ${JSON.stringify(v)}}`;
  }
  return d;
}

function usageOf(d) {
  return { prompt_tokens: d.inputTokens, completion_tokens: d.outputTokens,
    total_tokens: d.inputTokens + d.outputTokens };
}

function reply(req, d) {
  const message = d.tool
    ? { role: 'assistant', content: null, refusal: null, annotations: [],
      tool_calls: [{ id: d.callId, type: 'function', function: { name: d.tool[0], arguments: d.arguments } }] }
    : { role: 'assistant', content: d.finalText, refusal: null, annotations: [] };
  return {
    id: 'chatcmpl-' + d.msgId, object: 'chat.completion', created: 1764000000, model: req.model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: d.tool ? 'tool_calls' : 'stop' }],
    usage: usageOf(d), service_tier: 'default', system_fingerprint: 'fp_aitrail_mock',
  };
}

function chunksOf(s, n) {
  const out = [];
  for (let i = 0; i < s.length; i += n) out.push(s.slice(i, i + n));
  return out.length ? out : [''];
}

function streamEvents(req, d) {
  const includeUsage = Boolean(req.stream_options && req.stream_options.include_usage);
  const base = { id: 'chatcmpl-' + d.msgId, object: 'chat.completion.chunk', created: 1764000000,
    model: req.model, service_tier: 'default', system_fingerprint: 'fp_aitrail_mock' };
  const ev = (obj) => `data: ${JSON.stringify(obj)}\n\n`;
  const chunk = (delta, finish = null) => {
    const obj = { ...base, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] };
    if (includeUsage) obj.usage = null;
    return ev(obj);
  };
  const out = [];
  if (d.tool) {
    out.push(chunk({ role: 'assistant', content: null, refusal: null, tool_calls: [{
      index: 0, id: d.callId, type: 'function', function: { name: d.tool[0], arguments: '' } }] }));
    for (const frag of chunksOf(d.arguments, 7)) {
      out.push(chunk({ tool_calls: [{ index: 0, function: { arguments: frag } }] }));
    }
    out.push(chunk({}, 'tool_calls'));
  } else {
    out.push(chunk({ role: 'assistant', content: '', refusal: null }));
    for (const frag of chunksOf(d.finalText, 4)) out.push(chunk({ content: frag }));
    out.push(chunk({}, 'stop'));
  }
  if (includeUsage) out.push(ev({ ...base, choices: [], usage: usageOf(d) }));
  out.push('data: [DONE]\n\n');
  return out;
}


// ------------------------------------------------------- Responses API

function decideResponses(req) {
  const items = typeof req.input === 'string' ? [{ role: 'user', content: req.input }]
    : (Array.isArray(req.input) ? req.input : []);
  const prompt = items.filter((it) => it && (it.type || 'message') === 'message' && it.role === 'user')
    .map((it) => textOf(it.content)).join('\n');
  const step = items.filter((it) => it && it.type === 'function_call_output').length;
  const tools = Array.isArray(req.tools) ? req.tools : [];
  const codex = tools.some((t) => t && t.name === 'exec_command');
  const file = /^\s*FILE:\s*(\S+)\s*$/m.exec(prompt);
  const cmd = /^\s*CMD:\s*(.+?)\s*$/m.exec(prompt);
  const script = [];
  if (codex) {
    if (cmd) script.push(['exec_command', { cmd: cmd[1] }]);
  } else {
    if (file) script.push(['read_file', { path: file[1] }]);
    if (cmd) script.push(['run_command', { command: cmd[1] }]);
  }
  const tool = tools.length > 0 && step < script.length ? script[step] : null;
  const d = {
    step,
    tool,
    inputTokens: 120 + 100 * step,
    outputTokens: 20 + 5 * step,
    finalText: `done: ${step} tools used`,
    msgId: stableHex('responses', 'msg', prompt, step),
  };
  if (tool) {
    d.callId = 'call_' + stableHex('responses', prompt, step);
    const [k, v] = Object.entries(tool[1])[0];
    d.arguments = `{${JSON.stringify(k)}: ${JSON.stringify(v)}}`;
  }
  return d;
}

function responseObject(req, d, status, output, usage) {
  return {
    id: 'resp_' + d.msgId, object: 'response', created_at: 1764000000, status,
    background: false, error: null, incomplete_details: null,
    instructions: req.instructions ?? null, max_output_tokens: req.max_output_tokens ?? null,
    model: req.model, output, parallel_tool_calls: true,
    previous_response_id: req.previous_response_id ?? null, reasoning: { effort: null, summary: null },
    store: req.store ?? true, temperature: 1.0, text: { format: { type: 'text' } },
    tool_choice: 'auto', tools: Array.isArray(req.tools) ? req.tools : [], top_p: 1.0,
    truncation: 'disabled', usage, user: req.user ?? null, metadata: {},
  };
}

function responsesEvents(req, d) {
  let seq = 0;
  const ev = (type, fields) => `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq++, ...fields })}\n\n`;
  const usage = { input_tokens: d.inputTokens, input_tokens_details: { cached_tokens: 0 },
    output_tokens: d.outputTokens, output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: d.inputTokens + d.outputTokens };
  const item = d.tool
    ? { id: 'fc_' + d.msgId, type: 'function_call', status: 'completed', arguments: d.arguments,
      call_id: d.callId, name: d.tool[0] }
    : { id: 'msg_' + d.msgId, type: 'message', status: 'completed', role: 'assistant',
      content: [{ type: 'output_text', annotations: [], logprobs: [], text: d.finalText }] };
  const started = responseObject(req, d, 'in_progress', [], null);
  const out = [ev('response.created', { response: started }), ev('response.in_progress', { response: started })];
  if (d.tool) {
    out.push(ev('response.output_item.added', { output_index: 0, item: { ...item, status: 'in_progress', arguments: '' } }));
    for (const frag of chunksOf(d.arguments, 7)) {
      out.push(ev('response.function_call_arguments.delta', { item_id: item.id, output_index: 0, delta: frag }));
    }
    out.push(ev('response.function_call_arguments.done', { item_id: item.id, output_index: 0, arguments: d.arguments }));
  } else {
    out.push(ev('response.output_item.added', { output_index: 0, item: { ...item, status: 'in_progress', content: [] } }));
    const part = { type: 'output_text', annotations: [], logprobs: [], text: '' };
    out.push(ev('response.content_part.added', { item_id: item.id, output_index: 0, content_index: 0, part }));
    for (const frag of chunksOf(d.finalText, 4)) {
      out.push(ev('response.output_text.delta', { item_id: item.id, output_index: 0, content_index: 0, delta: frag, logprobs: [] }));
    }
    out.push(ev('response.output_text.done', { item_id: item.id, output_index: 0, content_index: 0, text: d.finalText, logprobs: [] }));
    out.push(ev('response.content_part.done', { item_id: item.id, output_index: 0, content_index: 0, part: { ...part, text: d.finalText } }));
  }
  out.push(ev('response.output_item.done', { output_index: 0, item }));
  out.push(ev('response.completed', { response: responseObject(req, d, 'completed', [item], usage) }));
  return out;
}

// ------------------------------------------------------------------ HTTP/2

function main() {
  const args = parseArgs(process.argv.slice(2));
  const server = http2.createSecureServer({
    cert: fs.readFileSync(args.cert),
    key: fs.readFileSync(args.key),
    minVersion: 'TLSv1.2',
    maxVersion: `TLSv${args.tlsMax}`,
    allowHTTP1: false,
  });
  const record = (entry) => {
    if (!args.record) return;
    fs.appendFileSync(args.record, JSON.stringify({ time: Date.now() / 1000, ...entry }) + '\n');
  };

  server.on('stream', (stream, headers) => {
    const method = headers[':method'];
    const path = String(headers[':path'] || '').split('?')[0];
    const who = `${stream.session.socket.remoteAddress}:${stream.session.socket.remotePort} #${stream.id}`;
    const safeHeaders = Object.fromEntries(Object.entries(headers)
      .filter(([k]) => !k.startsWith(':'))
      .map(([k, v]) => [k, SECRET_HEADERS.has(k) ? '<redacted>' : v]));
    const sendJson = (status, obj, extra = {}) => {
      let body = Buffer.from(JSON.stringify(obj));
      const h = { ':status': status, 'content-type': 'application/json', ...extra };
      if (args.gzip && /(^|,)\s*gzip\s*(;|,|$)/.test(String(headers['accept-encoding'] || ''))) {
        body = zlib.gzipSync(body);
        h['content-encoding'] = 'gzip';
      }
      stream.respond(h);
      stream.end(body);
    };
    stream.on('error', (e) => log(`${who} stream error: ${e.message}`));

    if (method === 'GET' && path === '/health') {
      log(`${who} GET /health 200`);
      sendJson(200, { status: 'ok' });
      return;
    }
    if (method === 'GET' && path === '/v1/responses') {
      log(`${who} GET ${path} 426 websocket refused`);
      sendJson(426, { error: { message: 'WebSocket is not offered here: use POST /v1/responses',
        type: 'invalid_request_error' } });
      return;
    }
    const responses = path === '/v1/responses';
    if (method !== 'POST' || (path !== '/v1/chat/completions' && !responses)) {
      log(`${who} ${method} ${path} 404`);
      sendJson(404, { error: { message: `unknown path ${path}` } });
      return;
    }
    const parts = [];
    let size = 0;
    stream.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      } else {
        parts.push(c);
      }
    });
    stream.on('end', () => {
      if (size > MAX_BODY) return;
      if (!headers.authorization) {
        log(`${who} POST ${path} 401 no api key`);
        sendJson(401, { error: { message: 'missing Authorization', type: 'invalid_request_error' } });
        return;
      }
      let req;
      try {
        req = JSON.parse(Buffer.concat(parts).toString('utf8'));
        if (typeof req !== 'object' || req === null || Array.isArray(req)) throw new Error('body is not a JSON object');
        if (typeof req.model !== 'string') throw new Error('model is required');
        if (responses && !req.stream) throw new Error('this mock streams Responses only');
        if (!responses && !Array.isArray(req.messages)) throw new Error('messages are required');
      } catch (e) {
        log(`${who} POST ${path} 400 invalid json`);
        sendJson(400, { error: { message: `invalid request body: ${e.message}`.slice(0, 200), type: 'invalid_request_error' } });
        return;
      }
      const d = responses ? decideResponses(req) : decide(req);
      const streamed = Boolean(req.stream);
      const extra = { 'x-request-id': 'req_' + d.msgId, 'openai-processing-ms': '7' };
      log(`${who} POST ${path} body=${size}B 200 model=${req.model} stream=${streamed} step=${d.step} -> ` +
        (d.tool ? `tool_call ${d.tool[0]}` : 'text'));
      record({ method, path, headers: safeHeaders, status: 200, provider: responses ? 'responses' : 'openai',
        tls: stream.session.socket.getProtocol(),
        model: req.model, stream: streamed,
        step: d.step, tool: d.tool ? d.tool[0] : null, call_id: d.callId || null,
        arguments: d.arguments || null, usage: [d.inputTokens, d.outputTokens], body: req });
      if (!streamed) {
        sendJson(200, reply(req, d), extra);
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache', ...extra });
      const events = responses ? responsesEvents(req, d) : streamEvents(req, d);
      // One DATA frame per event, paced like the HTTP/1 mock.
      const send = (i) => {
        if (stream.destroyed) return;
        if (i === events.length) {
          stream.end();
          return;
        }
        stream.write(events[i]);
        setTimeout(() => send(i + 1), args.sseDelayMs);
      };
      send(0);
    });
  });

  server.on('sessionError', (e) => log(`session error: ${e.message}`));
  server.on('tlsClientError', (e) => log(`TLS handshake failed: ${e.message}`));
  server.listen(args.port, args.host, () => {
    const { port } = server.address();
    process.stdout.write(`PORT ${port}\n`);
    log(`listening on https://${args.host}:${port} (h2 only, TLS <= ${args.tlsMax}) gzip=${args.gzip}`);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main();

#!/usr/bin/env node
// A real tool-using agent loop in node, with only the built-in `https` module
// (no npm dependencies), against the OpenAI chat completions endpoint.
//
//   node agent_node.js --base-url https://127.0.0.1:PORT --ca ca.pem \
//        --file /path/to/file --command 'ls -l /tmp' [--stream]
//
// The API key comes from $OPENAI_API_KEY (never from argv). Plain replies may
// be gzip-encoded (we send Accept-Encoding: gzip and decode with zlib);
// --stream parses the SSE stream (chat.completion.chunk deltas, tool call
// fragments, the usage chunk, data: [DONE]). The tools are real: read_file
// uses fs.readFileSync, run_command runs `/bin/sh -c` via child_process.
// Prints `FINAL: <text>` on stdout; exit 0 on a final answer, 1 otherwise.
'use strict';

const fs = require('fs');
const https = require('https');
const zlib = require('zlib');
const { spawnSync } = require('child_process');

const SYSTEM_PROMPT = 'You are the aitrail test agent. Use the tools you are given.';
const MAX_TURNS = 8;

function parseArgs(argv) {
  const a = { model: 'gpt-4o-mini', stream: false, ca: process.env.SSL_CERT_FILE };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${k} needs a value`);
      return argv[++i];
    };
    if (k === '--base-url') a.baseUrl = next();
    else if (k === '--ca') a.ca = next();
    else if (k === '--file') a.file = next();
    else if (k === '--command') a.command = next();
    else if (k === '--model') a.model = next();
    else if (k === '--stream') a.stream = true;
    else throw new Error(`unknown argument ${k}`);
  }
  for (const req of ['baseUrl', 'file', 'command']) {
    if (!a[req]) throw new Error(`missing --${req.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}`);
  }
  return a;
}

function log(msg) {
  process.stderr.write(`[agent_node] ${msg}\n`);
}

const TOOLS = [
  {
    type: 'function',
    function: {
      name: 'read_file',
      description: 'Read a text file and return its content.',
      parameters: {
        type: 'object',
        properties: { path: { type: 'string', description: 'absolute path' } },
        required: ['path'],
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'run_command',
      description: 'Run a shell command and return its output.',
      parameters: {
        type: 'object',
        properties: { command: { type: 'string' } },
        required: ['command'],
      },
    },
  },
];

function runTool(name, argsText) {
  let args = {};
  try {
    args = JSON.parse(argsText || '{}');
  } catch (e) {
    return `error: bad arguments: ${e.message}`;
  }
  try {
    if (name === 'read_file') {
      return fs.readFileSync(args.path, 'utf8');
    }
    if (name === 'run_command') {
      const p = spawnSync('/bin/sh', ['-c', args.command], { encoding: 'utf8', timeout: 60000 });
      if (p.error) return `error: ${p.error.message}`;
      return `exit_code=${p.status}\n${p.stdout}${p.stderr ? '\n[stderr]\n' + p.stderr : ''}`;
    }
    return `unknown tool ${name}`;
  } catch (e) {
    return `error: ${e.message}`;
  }
}

// One POST; resolves with { status, headers, body } (plain) or consumes the SSE
// stream and resolves with the accumulated answer (stream).
function post(agent, url, apiKey, payload, stream) {
  const body = Buffer.from(JSON.stringify(payload));
  const u = new URL(url);
  const opts = {
    method: 'POST',
    hostname: u.hostname,
    port: u.port,
    path: u.pathname,
    agent,
    headers: {
      'content-type': 'application/json',
      'content-length': body.length,
      authorization: `Bearer ${apiKey}`,
      accept: stream ? 'text/event-stream' : 'application/json',
      'accept-encoding': 'gzip',
      'user-agent': 'aitrail-test-agent-node/1.0',
    },
  };
  return new Promise((resolve, reject) => {
    const req = https.request(opts, (res) => {
      const parts = [];
      let src = res;
      const enc = (res.headers['content-encoding'] || '').toLowerCase();
      if (enc === 'gzip') src = res.pipe(zlib.createGunzip());
      else if (enc === 'deflate') src = res.pipe(zlib.createInflate());
      if (!stream || res.statusCode !== 200) {
        src.on('data', (d) => parts.push(d));
        src.on('end', () => {
          const text = Buffer.concat(parts).toString('utf8');
          if (res.statusCode !== 200) {
            reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 300)}`));
            return;
          }
          try {
            resolve(JSON.parse(text));
          } catch (e) {
            reject(new Error(`bad JSON reply: ${e.message}`));
          }
        });
        src.on('error', reject);
        return;
      }
      // SSE: events are separated by a blank line; we only need `data:` lines.
      const acc = { text: '', calls: new Map(), finish: null, usage: null, done: false };
      let buf = '';
      const handleEvent = (raw) => {
        const data = raw
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, ''))
          .join('\n');
        if (!data) return;
        if (data === '[DONE]') {
          acc.done = true;
          return;
        }
        const chunk = JSON.parse(data);
        if (chunk.usage) acc.usage = chunk.usage;
        for (const ch of chunk.choices || []) {
          const d = ch.delta || {};
          if (d.content) acc.text += d.content;
          for (const tc of d.tool_calls || []) {
            if (!acc.calls.has(tc.index)) acc.calls.set(tc.index, { id: null, name: '', arguments: '' });
            const slot = acc.calls.get(tc.index);
            if (tc.id) slot.id = tc.id;
            if (tc.function && tc.function.name) slot.name += tc.function.name;
            if (tc.function && tc.function.arguments) slot.arguments += tc.function.arguments;
          }
          if (ch.finish_reason) acc.finish = ch.finish_reason;
        }
      };
      src.setEncoding('utf8');
      src.on('data', (d) => {
        buf += d.replace(/\r\n/g, '\n');
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          try {
            handleEvent(ev);
          } catch (e) {
            reject(e);
          }
        }
      });
      src.on('end', () => {
        if (!acc.done) {
          reject(new Error('stream ended without data: [DONE]'));
          return;
        }
        const calls = [...acc.calls.keys()].sort((a, b) => a - b).map((k) => acc.calls.get(k));
        resolve({
          choices: [{
            message: {
              role: 'assistant',
              content: acc.text || null,
              tool_calls: calls.length
                ? calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } }))
                : undefined,
            },
            finish_reason: acc.finish,
          }],
          usage: acc.usage,
        });
      });
      src.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const apiKey = process.env.OPENAI_API_KEY;
  if (!apiKey) throw new Error('OPENAI_API_KEY is not set');
  const agent = new https.Agent({
    keepAlive: true,
    maxSockets: 1,
    ca: args.ca ? fs.readFileSync(args.ca) : undefined,
  });
  const url = args.baseUrl.replace(/\/+$/, '') + '/v1/chat/completions';
  const messages = [
    { role: 'system', content: SYSTEM_PROMPT },
    {
      role: 'user',
      content: `Read the file, then run the command, then say done.\nFILE: ${args.file}\nCMD: ${args.command}\n`,
    },
  ];
  try {
    for (let turn = 0; turn < MAX_TURNS; turn++) {
      const payload = { model: args.model, messages, tools: TOOLS };
      if (args.stream) {
        payload.stream = true;
        payload.stream_options = { include_usage: true };
      }
      const r = await post(agent, url, apiKey, payload, args.stream);
      const choice = r.choices[0];
      const calls = choice.message.tool_calls || [];
      if (!r.usage) throw new Error('reply without usage');
      log(`turn ${turn}: finish=${choice.finish_reason} usage=${r.usage.prompt_tokens}/${r.usage.completion_tokens} ` +
          `tool_calls=${JSON.stringify(calls.map((c) => c.function.name))}`);
      if (calls.length === 0) {
        process.stdout.write(`FINAL: ${choice.message.content}\n`);
        return 0;
      }
      messages.push({ role: 'assistant', content: choice.message.content, tool_calls: calls });
      for (const c of calls) {
        const result = runTool(c.function.name, c.function.arguments);
        log(`tool ${c.function.name} -> ${result.length} chars`);
        messages.push({ role: 'tool', tool_call_id: c.id, content: result });
      }
    }
    process.stdout.write('FINAL: <no final answer>\n');
    return 1;
  } finally {
    agent.destroy();
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    log(`error: ${e.stack || e}`);
    process.exit(1);
  },
);

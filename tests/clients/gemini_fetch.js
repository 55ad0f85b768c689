#!/usr/bin/env node
// One Gemini streamGenerateContent?alt=sse call with node's built-in fetch
// (undici over node's bundled OpenSSL), as Gemini CLI does.
//
//   gemini_fetch.js --base-url https://127.0.0.1:PORT --file PATH
// Trusts the CA in NODE_EXTRA_CA_CERTS; the key comes from GEMINI_API_KEY.

"use strict";

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`missing ${name}`);
  return process.argv[i + 1];
}

async function main() {
  const base = arg("--base-url");
  const file = arg("--file");
  const url = `${base}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`;
  const body = {
    systemInstruction: { parts: [{ text: "You are the aitrail gemini test." }] },
    contents: [{ role: "user", parts: [{ text: `Read the file.\nFILE: ${file}\n` }] }],
    tools: [{ functionDeclarations: [{ name: "read_file", description: "Read a file.",
      parameters: { type: "OBJECT", properties: { path: { type: "STRING" } } } }] }],
  };
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", "x-goog-api-key": process.env.GEMINI_API_KEY },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const text = await res.text();
  const calls = [];
  for (const line of text.split(/\r?\n/)) {
    if (!line.startsWith("data:")) continue;
    const chunk = JSON.parse(line.slice(5));
    for (const c of chunk.candidates || []) {
      for (const p of (c.content && c.content.parts) || []) {
        if (p.functionCall) calls.push(p.functionCall);
      }
    }
  }
  console.log(JSON.stringify({ calls }));
}

main().catch((e) => { console.error(e); process.exit(1); });

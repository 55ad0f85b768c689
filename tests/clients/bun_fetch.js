// Two Anthropic Messages calls with Bun's built-in fetch (Bun's HTTP client
// over its statically linked, stripped BoringSSL), on one keep-alive
// connection: a plain call whose reply (gzip JSON) asks for read_file, then
// a streamed call with the tool's result that ends the conversation.
//
//   bun bun_fetch.js --base-url https://127.0.0.1:PORT --file PATH
// Trusts the CA in NODE_EXTRA_CA_CERTS; the key comes from ANTHROPIC_API_KEY.
// Prints `FINAL: <text>` and exits 0 when both calls succeeded.
//
// It waits 300 ms before its first call: the daemon attaches a program's own
// probes at its exec, and Bun sends a request within 40 ms of it — before the
// uprobes on its 100 MB binary are registered (docs/coverage.md, limits).

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`missing ${name}`);
  return process.argv[i + 1];
}

const base = arg("--base-url");
const file = arg("--file");
const model = "claude-sonnet-4-6";
const system = "You are the aitrail bun test. Use the tools you are given.";
const tools = [{
  name: "read_file",
  description: "Read a file.",
  input_schema: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
}];
const prompt = `Read the file, then say done.\nFILE: ${file}\n`;

async function call(messages, stream) {
  const res = await fetch(`${base}/v1/messages`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-api-key": process.env.ANTHROPIC_API_KEY,
      "anthropic-version": "2023-06-01",
      "accept-encoding": "gzip",
    },
    body: JSON.stringify({ model, max_tokens: 256, system, tools, messages, stream }),
  });
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  if (!stream) return await res.json();
  // Rebuild the message from the SSE events.
  const text = await res.text();
  let out = "";
  for (const line of text.split(/\r?\n/)) {
    if (!line.startsWith("data:")) continue;
    const ev = JSON.parse(line.slice(5));
    if (ev.type === "content_block_delta" && ev.delta.type === "text_delta") out += ev.delta.text;
  }
  return { content: [{ type: "text", text: out }] };
}

await Bun.sleep(300);
const messages = [{ role: "user", content: prompt }];
const first = await call(messages, false);
const use = first.content.find((b) => b.type === "tool_use");
if (!use || use.name !== "read_file") throw new Error(`no read_file call: ${JSON.stringify(first)}`);
const content = await Bun.file(use.input.path).text();
messages.push({ role: "assistant", content: first.content });
messages.push({ role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content }] });
const second = await call(messages, true);
console.log(`FINAL: ${second.content[0].text}`);

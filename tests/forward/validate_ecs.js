#!/usr/bin/env node
// Validates ECS documents (NDJSON on a file) against the ECS field
// definitions of @elastic/ecs (pinned in tests/setup-test-deps.sh).
//
//   node validate_ecs.js FILE
//
// Every field must be an ECS field of that ECS version, or sit under
// `aitrail.` (the custom namespace); values must fit the field's type
// (keyword/text: string, long/integer: integer, float/double: number,
// date: RFC 3339, ip: an IP address, boolean, object/flattened: object,
// nested: array of objects); `normalize: array` fields must be arrays;
// event.kind/category/type/outcome must be allowed values, and each
// event.type must be one the event.category expects. ecs.version must be
// the package's version and @timestamp is required.
//
// Prints one line per problem and "validated N documents, M invalid";
// exits 1 when any is invalid.
'use strict';
const fs = require('fs');
const net = require('net');

let EcsFlat, EcsVersion;
try {
  ({ EcsFlat } = require('@elastic/ecs/build/commonjs/ecs_flat.js'));
  ({ EcsVersion } = require('@elastic/ecs/build/commonjs/index.js'));
} catch (e) {
  console.error(`validate_ecs: ${e.message} (tests/setup-test-deps.sh installs @elastic/ecs)`);
  process.exit(2);
}

const STOP = new Set(['object', 'flattened', 'nested', 'geo_point']);
const isInt = (v) => Number.isInteger(v);
const checks = {
  keyword: (v) => typeof v === 'string',
  constant_keyword: (v) => typeof v === 'string',
  wildcard: (v) => typeof v === 'string',
  text: (v) => typeof v === 'string',
  match_only_text: (v) => typeof v === 'string',
  long: isInt, integer: isInt, short: isInt, byte: isInt, unsigned_long: isInt,
  float: (v) => typeof v === 'number', double: (v) => typeof v === 'number',
  scaled_float: (v) => typeof v === 'number', half_float: (v) => typeof v === 'number',
  boolean: (v) => typeof v === 'boolean',
  date: (v) => (typeof v === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$/.test(v)) || isInt(v),
  ip: (v) => typeof v === 'string' && net.isIP(v) !== 0,
  object: (v) => v !== null && typeof v === 'object' && !Array.isArray(v),
  flattened: (v) => v !== null && typeof v === 'object' && !Array.isArray(v),
  nested: (v) => Array.isArray(v) && v.every((x) => x !== null && typeof x === 'object'),
};

function leaves(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj)) {
    const path = prefix ? `${prefix}.${k}` : k;
    const def = EcsFlat[path];
    if (def && STOP.has(def.type)) { out.push([path, v]); continue; }
    if (path.startsWith('aitrail.') || path === 'aitrail') { continue; }
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) { leaves(v, path, out); continue; }
    out.push([path, v]);
  }
}

function allowed(field) {
  return new Map((EcsFlat[field].allowed_values || []).map((a) => [a.name, a]));
}

function validate(doc) {
  const problems = [];
  if (doc['@timestamp'] === undefined) problems.push('@timestamp missing');
  if (!doc.ecs || doc.ecs.version !== EcsVersion) problems.push(`ecs.version is not ${EcsVersion}`);
  const fields = [];
  leaves(doc, '', fields);
  for (const [path, v] of fields) {
    const def = EcsFlat[path];
    if (!def) { problems.push(`${path}: not an ECS ${EcsVersion} field (custom fields go under aitrail.)`); continue; }
    const check = checks[def.type];
    if (!check) { problems.push(`${path}: no check for ECS type ${def.type}`); continue; }
    const isArrayField = (def.normalize || []).includes('array');
    if (isArrayField && !Array.isArray(v)) problems.push(`${path}: must be an array`);
    const values = Array.isArray(v) && def.type !== 'nested' ? v : [v];
    for (const x of values) {
      if (!check(x)) problems.push(`${path}: ${JSON.stringify(x).slice(0, 80)} is not a valid ${def.type}`);
    }
  }
  const ev = doc.event || {};
  for (const f of ['kind', 'outcome']) {
    if (ev[f] !== undefined && !allowed(`event.${f}`).has(ev[f])) problems.push(`event.${f}: ${ev[f]} not allowed`);
  }
  const cats = allowed('event.category');
  const types = allowed('event.type');
  for (const t of ev.type || []) if (!types.has(t)) problems.push(`event.type: ${t} not allowed`);
  for (const c of ev.category || []) {
    const a = cats.get(c);
    if (!a) { problems.push(`event.category: ${c} not allowed`); continue; }
    for (const t of ev.type || []) {
      if (a.expected_event_types && !a.expected_event_types.includes(t)) {
        problems.push(`event.type ${t} is not expected for event.category ${c} (${a.expected_event_types.join(', ')})`);
      }
    }
  }
  if (!ev.kind) problems.push('event.kind missing');
  if (ev.kind === 'event' && !(ev.category || []).length) problems.push('event.category missing');
  return problems;
}

const file = process.argv[2];
if (!file) { console.error('usage: validate_ecs.js FILE'); process.exit(2); }
let count = 0, invalid = 0;
for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
  if (!line.trim()) continue;
  count++;
  const doc = JSON.parse(line);
  const problems = validate(doc);
  if (problems.length) {
    invalid++;
    for (const p of problems) console.log(`${(doc.event || {}).id || `document ${count}`}: ${p}`);
  }
}
console.log(`validated ${count} documents, ${invalid} invalid (ECS ${EcsVersion})`);
process.exit(invalid ? 1 : 0);

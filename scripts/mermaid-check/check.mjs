// Validate Mermaid diagram files with the real Mermaid parser (no browser).
// Usage: node check.mjs [--split] FILE.mmd [FILE.mmd ...]   ("-" reads stdin)
//   --split: a file may hold several diagrams back to back (e.g. `rivulet explain
//            --format mermaid` with the default `--graph all`); check each one, cut
//            before every `flowchart`/`graph` header line and the `%%` lines above it.
// Exit 0 if every file parses, 1 if any has a syntax error, 2 on usage/setup errors.
import { readFileSync } from 'node:fs';
import { JSDOM } from 'jsdom';

let files = process.argv.slice(2);
const split = files[0] === '--split';
if (split) files = files.slice(1);
if (files.length === 0) {
  console.error('usage: node check.mjs [--split] FILE.mmd [FILE.mmd ...]');
  process.exit(2);
}

// Mermaid sanitises labels with DOMPurify, which needs a DOM: give it jsdom's
// window *before* mermaid is loaded (hence the dynamic import below).
const { window } = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = window;
globalThis.document = window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false });

function diagrams(f, text) {
  if (!split) return [[f, text]];
  const out = [];
  let cur = [], pending = [];
  for (const line of text.split('\n')) {
    if (/^\s*%%/.test(line)) { pending.push(line); continue; }
    if (/^\s*(flowchart|graph)\b/.test(line) && cur.some((l) => l.trim() && !/^\s*%%/.test(l))) {
      out.push(cur); cur = [];
    }
    cur.push(...pending, line); pending = [];
  }
  cur.push(...pending);
  out.push(cur);
  return out.map((lines, i) => [out.length > 1 ? `${f}#${i + 1}` : f, lines.join('\n')]);
}

let bad = 0, total = 0;
for (const [f, text] of files.flatMap((f) => diagrams(f, readFileSync(f === '-' ? 0 : f, 'utf8')))) {
  total++;
  try {
    const r = await mermaid.parse(text); // throws on a syntax error
    console.log(`ok    ${f} (${r.diagramType})`);
  } catch (e) {
    bad++;
    console.log(`FAIL  ${f}\n${String(e?.message ?? e).replace(/^/gm, '      ')}`);
  }
}
console.log(`${total - bad} passed, ${bad} failed`);
process.exit(bad ? 1 : 0);

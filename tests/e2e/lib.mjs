// Shared helpers of the browser end-to-end tests: a static file server on 127.0.0.1, and
// Debian's Chromium driven by playwright-core (never a downloaded browser).
import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { chromium } from 'playwright-core';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
};

/** Serves `root` on 127.0.0.1 (an ephemeral port). Resolves to `{ url, close }`. */
export async function serve(root, { cacheable = false } = {}) {
  // `cacheable`: everything but HTML may be kept by the browser's HTTP cache (which is what lets
  // V8 cache compiled wasm for the next visit), as a site with hashed file names serves it.
  const server = createServer(async (req, res) => {
    try {
      const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
      let file = join(root, path);
      if ((await stat(file)).isDirectory()) file = join(file, 'index.html');
      const body = await readFile(file);
      const cache = cacheable && extname(file) !== '.html' ? 'public, max-age=3600' : 'no-store';
      res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': cache });
      res.end(body);
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) };
}

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-dev-shm-usage',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

/** Launches Debian's Chromium headless with a persistent profile in `profileDir` (through
 *  `executablePath`, e.g. a wrapper that starts it inside a network namespace). */
export async function browser(profileDir, extraArgs = [], executablePath = '/usr/bin/chromium') {
  return chromium.launchPersistentContext(profileDir, {
    executablePath,
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
  });
}

/** Fails loudly on page errors and console errors. */
export function watch(page, label) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(`${label}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`${label} console: ${m.text()}`);
  });
  return errors;
}

export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

let passed = 0;
export async function test(name, body) {
  // KATHON_E2E_ONLY=<words>: run only the tests whose name holds them (while working on one).
  const only = process.env.KATHON_E2E_ONLY;
  if (only && !name.includes(only)) {
    console.log(`test ${name} ... skipped (KATHON_E2E_ONLY)`);
    return;
  }
  const started = Date.now();
  process.stdout.write(`test ${name} ... `);
  await body();
  passed += 1;
  console.log(`ok (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

export function summary() {
  // A filter that matches nothing must not look like a green run.
  if (passed === 0) throw new Error(`no test ran (KATHON_E2E_ONLY=${process.env.KATHON_E2E_ONLY ?? ''})`);
  console.log(`\ntest result: ok. ${passed} passed; 0 failed`);
}

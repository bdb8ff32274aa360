// Where a write's time goes: a CPU profile (Chrome DevTools Protocol `Profiler`) of the write
// bench's workload in the bench page, printed as microseconds per edit.
//
//   cargo xtask build-pkg --keep-names      # function names in the .wasm (a larger build)
//   node benches/browser/run.mjs --only write --rounds 1   # builds the bench page once
//   node benches/browser/profile.mjs [kathon|yjs|automerge|hop] [N] [--under FRAME[,FRAME...]] [--callers FRAME[,...]] [--depth D]
//   node benches/browser/profile.mjs open [--under FRAME[,FRAME...]] [--depth D]
//
// `open` profiles Kathon's cold open of the realistic profile instead (the bench page's
// `profile.json` loaded into a store, the browser closed, a new one started on the same profile
// directory, then `KathonStore.open` until the first query), printed in ms.
// `hop` profiles the bench's empty task hop alone (a MessageChannel round trip, no work): what
// every library pays per edit for "edits arriving one at a time". `--under` prints the inclusive
// time of what runs under each frame whose name starts with FRAME (`--depth` levels, default 3),
// e.g. `--under kathon_wasm::KathonStore::add_bookmark`; `--callers` prints the self time of each
// frame whose name starts with FRAME by the `--depth` frames that called it. Read shares, not absolute times: the
// profiler slows the page (~15 %). Nothing here is asserted; it is a tool for looking.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { browser, serve } from '../../tests/e2e/lib.mjs';

const args = process.argv.slice(2);
const option = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const positional = args.filter((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--'));
const lib = positional[0] ?? 'kathon';
const n = Number(positional[1] ?? 4000);
const under = option('--under')?.split(',') ?? [];
const callers = option('--callers')?.split(',') ?? [];
const depth = Number(option('--depth') ?? 3);

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const server = await serve(join(root, 'target/bench-browser'));
const profileDir = mkdtempSync(join(tmpdir(), 'kathon-profile-'));
const browserArgs = ['--js-flags=--expose-gc', '--enable-precise-memory-info'];
if (lib === 'open') {
  const loading = await browser(profileDir, browserArgs);
  try {
    const page = await loading.newPage();
    await page.goto(server.url);
    await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 });
    await page.evaluate(async () => bench.load.kathon('p', await (await fetch('profile.json')).json()));
  } finally {
    await loading.close();
  }
}
const context = await browser(profileDir, browserArgs);
try {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
  await page.goto(server.url);
  await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 });
  const cdp = await context.newCDPSession(page);
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 50 });
  const hop = (n) =>
    new Promise((done) => {
      const channel = new MessageChannel();
      let i = 0;
      const t0 = performance.now();
      channel.port1.onmessage = () => {
        i += 1;
        if (i < n) channel.port2.postMessage(0);
        else done({ ms: performance.now() - t0, cpuMs: 0 });
      };
      channel.port2.postMessage(0);
    });
  // Warm up (compilation, the database's creation) before the profiled run.
  if (lib !== 'hop' && lib !== 'open') await page.evaluate((lib) => bench.write[lib]('warm-up', 200), lib);
  await cdp.send('Profiler.start');
  const result =
    lib === 'hop'
      ? await page.evaluate(`(${hop.toString()})(${n})`)
      : lib === 'open'
        ? await page.evaluate(() => bench.open.kathon('p'))
        : await page.evaluate(([lib, n]) => bench.write[lib]('profiled', n), [lib, n]);
  const { profile } = await cdp.send('Profiler.stop');
  report(profile, result);
} finally {
  await context.close();
  server.close?.();
  rmSync(profileDir, { recursive: true, force: true });
}

function report(profile, result) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const name = (id) => {
    const f = byId.get(id).callFrame;
    // Rust symbols carry a hash suffix that differs between builds.
    return (f.functionName || '(anonymous)').replace(/::h[0-9a-f]{16}/g, '');
  };
  const stack = (id) => {
    const frames = [];
    for (let at = id; at !== undefined; at = parent.get(at)) frames.push(name(at));
    return frames; // leaf first
  };
  // Per edit in µs; for the cold open, the whole in ms.
  const unit = lib === 'open' ? 'ms in all' : 'µs per edit';
  const per = (us) => (lib === 'open' ? us / 1000 : us / n).toFixed(1).padStart(7);
  const self = new Map();
  const inclusive = new Map();
  const below = under.map(() => new Map());
  const above = callers.map(() => new Map());
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    const frames = stack(id);
    self.set(frames[0], (self.get(frames[0]) ?? 0) + dt);
    for (const f of new Set(frames)) inclusive.set(f, (inclusive.get(f) ?? 0) + dt);
    under.forEach((prefix, k) => {
      const at = frames.findIndex((f) => f.startsWith(prefix));
      const seen = new Set();
      for (let d = at - 1; at > 0 && d >= Math.max(0, at - depth); d -= 1) {
        const key = `${'  '.repeat(at - 1 - d)}${frames[d]}`;
        if (!seen.has(key)) below[k].set(key, (below[k].get(key) ?? 0) + dt);
        seen.add(key);
      }
    });
    callers.forEach((prefix, k) => {
      if (!frames[0].startsWith(prefix)) return;
      const key = frames.slice(1, 1 + depth).join(' <- ');
      above[k].set(key, (above[k].get(key) ?? 0) + dt);
    });
  });
  const top = (map, count) => [...map].sort((a, b) => b[1] - a[1]).slice(0, count);
  const total = profile.endTime - profile.startTime;
  if (lib === 'open') console.log(`cold open: ${result.ms.toFixed(0)} ms to the first query under the profiler (wasm init ${result.initMs.toFixed(0)} ms)`);
  else console.log(`${lib}: ${n} edits in ${result.ms.toFixed(0)} ms (${((n * 1000) / result.ms).toFixed(0)}/s under the profiler)`);
  if (result.envelopes !== undefined) console.log(`envelopes signed: ${result.envelopes}`);
  console.log(`${unit}: ${per(total).trim()} profiled in all`);
  console.log(`\nself time, ${unit}`);
  for (const [f, us] of top(self, 30)) console.log(`${per(us)}  ${f}`);
  console.log(`\ninclusive time, ${unit}`);
  for (const [f, us] of top(inclusive, 40)) console.log(`${per(us)}  ${f}`);
  under.forEach((prefix, k) => {
    console.log(`\nunder ${prefix}, ${unit}`);
    for (const [f, us] of top(below[k], 40)) console.log(`${per(us)}  ${f.slice(0, 160)}`);
  });
  callers.forEach((prefix, k) => {
    console.log(`\nself time of ${prefix} by its callers (${depth} frames), ${unit}`);
    for (const [f, us] of top(above[k], 20)) console.log(`${per(us)}  ${f.slice(0, 240)}`);
  });
}

// When V8 optimises the store's wasm during the write bench: for each of PAGES fresh browsers, the
// bench page's Kathon write run (2,000 bookmark adds) four times — cold, then three warm passes,
// each into a fresh store, as `run.mjs` does — under a trace (CDP `Tracing`, categories
// `v8.wasm` and `devtools.timeline`), and per pass: edits/s, the functions compiled by the
// optimising compiler (`wasm.TopTierCompilation`), the functions compiled lazily by the baseline
// one (`wasm.CompileLazy`) and the memory grows. Tracing slows the page: read the counts, and
// the rates only against each other.
//
//   node benches/browser/run.mjs --only write --rounds 1   # builds the bench page once
//   node benches/browser/tierup.mjs [PAGES]                 # default 4
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { browser, serve } from '../../tests/e2e/lib.mjs';
const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const server = await serve(join(root, 'target/bench-browser'));
const pages = Number(process.argv[2] ?? 4);
console.log('per pass (cold, then three warm): edits/s; optimising-compiler units; lazy baseline compiles; memory grows');
for (let p = 0; p < pages; p += 1) {
  const dir = mkdtempSync(join(tmpdir(), 'kathon-tr-'));
  const ctx = await browser(dir);
  try {
    const page = await ctx.newPage();
    await page.goto(server.url);
    await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 });
    const cdp = await ctx.newCDPSession(page);
    const events = [];
    cdp.on('Tracing.dataCollected', (e) => events.push(...e.value));
    const done = new Promise((r) => cdp.once('Tracing.tracingComplete', r));
    await cdp.send('Tracing.start', { traceConfig: { includedCategories: ['devtools.timeline', 'v8.wasm', 'disabled-by-default-v8.wasm.detailed', 'disabled-by-default-v8.wasm.turbofan'] }, transferMode: 'ReportEvents' });
    const rates = [];
    for (const name of ['c', 'w1', 'w2', 'w3']) {
      const r = await page.evaluate((name) => { console.timeStamp('pass-' + name); return bench.write.kathon(name, 2000); }, name);
      rates.push(Math.round(2000000 / r.ms));
    }
    await cdp.send('Tracing.end');
    await done;
    const marks = events.filter((e) => e.name === 'TimeStamp').map((e) => ({ ts: e.ts, label: e.args?.data?.message }));
    marks.sort((a, b) => a.ts - b.ts);
    const bucket = (name) => {
      const out = marks.map(() => 0);
      let before = 0;
      for (const e of events.filter((e) => e.name === name && e.ph !== 'E')) {
        let k = -1;
        for (let i = 0; i < marks.length; i += 1) if (e.ts >= marks[i].ts) k = i;
        if (k < 0) before += 1; else out[k] += 1;
      }
      return `${before} before, ${out.join('/')}`;
    };
    const ms = (name) => events.filter((e) => e.name === name && e.dur).reduce((a, e) => a + e.dur, 0) / 1000;
    // Lazy baseline compiles run on the main thread, inside the edit that first calls the function.
    console.log(`page ${p}: edits/s ${rates.join(' ')}; top-tier ${bucket('wasm.TopTierCompilation')} (${ms('wasm.TopTierCompilation').toFixed(0)} ms); lazy ${bucket('wasm.CompileLazy')} (${ms('wasm.CompileLazy').toFixed(1)} ms); grow ${bucket('wasm.GrowMemory')}`);
  } finally {
    await ctx.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
await server.close();
process.exit(0);

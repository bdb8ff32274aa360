// Kathon Sync side by side with Yjs + y-indexeddb and Automerge in Debian's headless Chromium:
// the same workloads in the same page build and the same run, each measurement in a fresh
// browser, the libraries' order rotated between rounds. Prints medians and Kathon/peer ratios
// and writes them to artifacts/bench/browser.json. No assertions on time.
//
// Usage: node benches/browser/run.mjs [--small] [--rounds N] [--writes N]
// (`cargo xtask bench` builds pkg/ and runs it.)
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { browser, serve } from '../../tests/e2e/lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');
const args = process.argv.slice(2);
const flag = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
const small = args.includes('--small');
const ROUNDS = flag('--rounds', 3);
const WRITES = flag('--writes', 2000);
const LIBS = ['kathon', 'yjs', 'automerge'];
const dist = join(root, 'target/bench-browser');
const work = mkdtempSync(join(tmpdir(), 'kathon-bench-'));
const ARGS = ['--js-flags=--expose-gc', '--enable-precise-memory-info'];

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const log = (line) => process.stdout.write(`${line}\n`);

async function inBrowser(profileDir, url, body) {
  const context = await browser(profileDir, ARGS);
  try {
    const page = await context.newPage();
    page.on('pageerror', (e) => log(`  page error: ${e.message}`));
    await page.goto(url);
    await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 });
    return await body(page);
  } finally {
    await context.close();
  }
}

log('==> building the bench page (Vite) and exporting the realistic profile');
execFileSync(process.execPath, [join(root, 'tests/e2e/node_modules/vite/bin/vite.js'), 'build'], { cwd: here, stdio: 'inherit' });
// The small profile comes from a debug build (CI has it compiled already); the full one from release.
const cargoProfile = small ? [] : ['--release'];
execFileSync('cargo', ['run', '-q', '--locked', '-p', 'kathon-benches', ...cargoProfile, '--bin', 'export_profile', '--', join(dist, 'profile.json'), ...(small ? ['small'] : [])], { cwd: root, stdio: 'inherit' });
const server = await serve(dist);
const results = { date: new Date().toISOString(), profile: small ? 'small' : 'realistic', rounds: ROUNDS, writes: WRITES, write: {}, load: {}, open: {} };
for (const lib of LIBS) {
  results.write[lib] = [];
  results.open[lib] = [];
}

try {
  const chromium = execFileSync('/usr/bin/chromium', ['--version']).toString().trim();
  results.browser = chromium;
  log(`==> ${chromium}; ${ROUNDS} rounds; libraries rotate order each round`);

  log(`==> local write throughput: ${WRITES} bookmark adds, one per task, until durable in IndexedDB`);
  for (let round = 0; round < ROUNDS; round += 1) {
    for (let k = 0; k < LIBS.length; k += 1) {
      const lib = LIBS[(k + round) % LIBS.length];
      const dir = join(work, `write-${lib}-${round}`);
      const r = await inBrowser(dir, server.url, (page) => page.evaluate(([lib, n]) => bench.write[lib]('w', n), [lib, WRITES]));
      rmSync(dir, { recursive: true, force: true });
      if (r.check !== WRITES) throw new Error(`${lib} wrote ${r.check} of ${WRITES}`);
      results.write[lib].push(r);
      log(`  round ${round + 1} ${lib.padEnd(9)} ${r.ms.toFixed(0).padStart(6)} ms  ${((WRITES * 1000) / r.ms).toFixed(0).padStart(6)} edits/s  (${((r.cpuMs * 1000) / WRITES).toFixed(0)} µs CPU per edit in the call)`);
    }
  }

  log('==> the stored profile: load it, then open it cold (a fresh browser on the same profile directory)');
  for (const lib of LIBS) {
    const dir = join(work, `profile-${lib}`);
    const r = await inBrowser(dir, server.url, (page) =>
      page.evaluate(async (lib) => bench.load[lib]('p', await (await fetch('profile.json')).json()), lib),
    );
    results.load[lib] = r;
    log(`  ${lib.padEnd(9)} loaded in ${r.ms.toFixed(0)} ms; stored ${r.stored.bytes} bytes in ${r.stored.records} records; memory ${JSON.stringify(r.memory)}`);
  }
  for (let round = 0; round < ROUNDS; round += 1) {
    for (let k = 0; k < LIBS.length; k += 1) {
      const lib = LIBS[(k + round) % LIBS.length];
      const r = await inBrowser(join(work, `profile-${lib}`), server.url, (page) => page.evaluate((lib) => bench.open[lib]('p'), lib));
      results.open[lib].push(r);
      log(`  round ${round + 1} ${lib.padEnd(9)} cold open to first query ${r.ms.toFixed(0).padStart(6)} ms (+ ${r.initMs.toFixed(0)} ms wasm init); ${JSON.stringify(r.counts)}; memory ${JSON.stringify(r.memory ?? {})}`);
    }
  }
} finally {
  await server.close();
  rmSync(work, { recursive: true, force: true });
}

// ---- Summary ----
const writeRate = (lib) => (WRITES * 1000) / median(results.write[lib].map((r) => r.ms));
const cpu = (lib) => (median(results.write[lib].map((r) => r.cpuMs)) * 1000) / WRITES;
const openMs = (lib) => median(results.open[lib].map((r) => r.ms));
const initMs = (lib) => median(results.open[lib].map((r) => r.initMs));
const records = (() => {
  const c = results.load.kathon.counts;
  return c.bookmarks + c.history + c.passwords + 1;
})();
const kathonLoadMem = results.load.kathon.memory.jsHeap + results.load.kathon.memory.wasm;
const openMem = (lib) => median(results.open[lib].map((r) => r.memory.jsHeap + (r.memory.wasm ?? 0)));
const summary = {
  writesPerSecond: Object.fromEntries(LIBS.map((l) => [l, Math.round(writeRate(l))])),
  cpuMicrosPerEdit: Object.fromEntries(LIBS.map((l) => [l, Math.round(cpu(l))])),
  coldOpenMs: Object.fromEntries(LIBS.map((l) => [l, Math.round(openMs(l))])),
  wasmInitMs: Object.fromEntries(LIBS.map((l) => [l, Math.round(initMs(l))])),
  storedBytes: Object.fromEntries(LIBS.map((l) => [l, results.load[l].stored.bytes])),
  memoryBytesPerRecordAfterLoad: { kathon: Math.round(kathonLoadMem / records), yjs: Math.round(results.load.yjs.memory.jsHeap / records) },
  memoryBytesPerRecordAfterColdOpen: { kathon: Math.round(openMem('kathon') / records), yjs: Math.round(openMem('yjs') / records) },
  records,
};
const ratio = (a, b) => (a / b).toFixed(2);
summary.ratios = {
  writeThroughputVsYjs: ratio(summary.writesPerSecond.kathon, summary.writesPerSecond.yjs),
  writeThroughputVsAutomerge: ratio(summary.writesPerSecond.kathon, summary.writesPerSecond.automerge),
  coldOpenVsYjs: ratio(summary.coldOpenMs.kathon, summary.coldOpenMs.yjs),
  coldOpenWithInitVsYjs: ratio(summary.coldOpenMs.kathon + summary.wasmInitMs.kathon, summary.coldOpenMs.yjs),
  coldOpenVsAutomerge: ratio(summary.coldOpenMs.kathon, summary.coldOpenMs.automerge),
  storedBytesVsYjs: ratio(summary.storedBytes.kathon, summary.storedBytes.yjs),
  storedBytesVsAutomerge: ratio(summary.storedBytes.kathon, summary.storedBytes.automerge),
  memoryPerRecordAfterLoadVsYjs: ratio(summary.memoryBytesPerRecordAfterLoad.kathon, summary.memoryBytesPerRecordAfterLoad.yjs),
  memoryPerRecordAfterColdOpenVsYjs: ratio(summary.memoryBytesPerRecordAfterColdOpen.kathon, summary.memoryBytesPerRecordAfterColdOpen.yjs),
};
results.summary = summary;
log('\n==> medians');
log(JSON.stringify(summary, null, 2));
mkdirSync(join(root, 'artifacts/bench'), { recursive: true });
writeFileSync(join(root, 'artifacts/bench/browser.json'), JSON.stringify(results, null, 2));
log('written to artifacts/bench/browser.json');

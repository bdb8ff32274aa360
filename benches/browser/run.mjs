// Kathon Sync side by side with Yjs + y-indexeddb and Automerge in Debian's headless Chromium:
// the same workloads in the same page build and the same run, each measurement in a fresh
// browser, the libraries' order rotated between rounds. Prints medians and Kathon/peer ratios
// and writes them to artifacts/bench/browser.json. No assertions on time.
//
// The WebRTC sections (full sync between two in-page peers, connect and throughput
// Chromium↔Chromium, native↔Chromium and native↔native) run inside a network namespace this
// script makes (Chromium's mDNS host candidates and every packet stay in it), with the native
// side from `cargo run --release -p kathon-bridge --example dc_throughput`.
//
// Usage: node benches/browser/run.mjs [--small] [--rounds N] [--writes N] [--warm-passes N] [--warm-up-edits N] [--idle-ms MS] [--no-rtc] [--only SECTIONS] [--trace]
// (`cargo xtask bench` builds pkg/ and runs it; needs root for the namespace.)
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { browser, serve } from '../../tests/e2e/lib.mjs';
import { Lan } from '../../tests/e2e/lan.mjs';

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
// How long the write page stays open, idle, after its runs and before the reload (V8 writes its
// wasm code cache 2 s after the last function it optimised; the write to disk comes after that).
const IDLE_MS = flag('--idle-ms', 3000);
// Warm passes of WRITES edits each, one after the other in the same page, each into a fresh store.
// Kathon's pass lasts ~100-160 ms, Yjs's ~1 s: one pass alone is a short window for the faster
// library (one GC or background compile in it moves the figure), and Kathon's first warm pass is
// nearly always slower than its later ones (likely code V8 is still optimising). The same rule for
// both: each library's fastest pass (`warmBest`); it depends on the number of passes. The first
// pass is kept as `warm`, the figure earlier runs reported. Every store stays in the profile,
// closed (y-indexeddb's `destroy()` closes its database; Kathon's `close()` likewise).
const WARM_PASSES = Math.max(1, flag('--warm-passes', 3));
// Kathon's first edits in a fresh page once `warmUp()` (that many edits in a worker) has run.
const WARM_UP_EDITS = flag('--warm-up-edits', 1000);
// Single edits timed until durable, each after an idle pause (the latency group commit adds).
const LATENCY_EDITS = small ? 5 : 30;
const ONLY = args.includes('--only') ? args[args.indexOf('--only') + 1].split(',') : null;
/** Sections: write, profile, signatures, sync (full sync, WebRTC), rtc (connect, throughput)
 *  (`--only write,rtc`; `--no-rtc` drops both WebRTC sections). */
const want = (section) =>
  (!ONLY || ONLY.includes(section)) && !(['rtc', 'sync'].includes(section) && args.includes('--no-rtc'));
// `--only pairing [--pairings N]`: N pairings of two in-page stores in a row (a soak for the
// connection lifecycle; not in the default set).
const PAIRING = ONLY?.includes('pairing') ?? false;
const PAIRINGS = flag('--pairings', 20);
const RTC = want('rtc') || want('sync') || PAIRING;
const RTC_BYTES = (small ? 8 : 64) << 20;
const TRIALS = small ? 3 : 10;
// Extra flags for the native side (e.g. `--native-args "--send-buffer 65536"`), for experiments.
const NATIVE_ARGS = args.includes('--native-args') ? args[args.indexOf('--native-args') + 1].split(' ') : [];
const LIBS = ['kathon', 'yjs', 'automerge'];
const dist = join(root, 'target/bench-browser');
// The page's warnings and errors are printed; its connection trace (console.debug) with
// --trace, and otherwise its last lines when a section fails.
const TRACE = args.includes('--trace');
let pageTrace = [];
const showConsole = (m) => {
  if (m.type() === 'debug') {
    pageTrace.push(m.text());
    if (pageTrace.length > 400) pageTrace = pageTrace.slice(-200);
  }
  if (['warning', 'error'].includes(m.type()) || (TRACE && m.type() === 'debug')) log(`  page ${m.type()}: ${m.text()}`);
};
// `--js-flags "<V8 flags>"` adds V8 flags, for experiments (e.g. `--no-liftoff`: compile wasm with
// the optimising compiler from the start).
const JS_FLAGS = args.includes('--js-flags') ? ` ${args[args.indexOf('--js-flags') + 1]}` : '';
const ARGS = [`--js-flags=--expose-gc${JS_FLAGS}`, '--enable-precise-memory-info'];

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const log = (line) => process.stdout.write(`${line}\n`);

/** `body(page)`, failing as soon as the page throws an uncaught error (a measurement whose page
 *  broke used to wait forever for an answer that never came). */
function failOnPageError(page, body) {
  return new Promise((resolve, reject) => {
    page.on('pageerror', (e) => reject(new Error(`the page threw: ${e.message}`)));
    body(page).then(resolve, reject);
  });
}

/** Total bytes of the files under `dir` (0 if it does not exist). */
function directoryBytes(dir) {
  if (!existsSync(dir)) return 0;
  let bytes = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    bytes += entry.isDirectory() ? directoryBytes(path) : statSync(path).size;
  }
  return bytes;
}

async function inBrowser(profileDir, url, body) {
  const context = await browser(profileDir, ARGS);
  try {
    const page = await context.newPage();
    page.on('pageerror', (e) => log(`  page error: ${e.message}`));
    page.on('console', showConsole);
    pageTrace = [];
    await page.goto(url);
    await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 });
    return await failOnPageError(page, body);
  } catch (e) {
    if (!TRACE) for (const line of pageTrace.slice(-200)) log(`  page trace: ${line}`);
    throw e;
  } finally {
    await context.close();
  }
}

log('==> building the wasm floor (kathon-bench-wasm, wasm-release like the package), the bench page (Vite), the realistic profile');
execFileSync('cargo', ['build', '-q', '--locked', '-p', 'kathon-bench-wasm', '--profile', 'wasm-release', '--target', 'wasm32-unknown-unknown'], { cwd: root, stdio: 'inherit' });
execFileSync('wasm-bindgen', ['--target', 'web', '--out-dir', join(root, 'target/bench-wasm-pkg'), join(root, 'target/wasm32-unknown-unknown/wasm-release/kathon_bench_wasm.wasm')], { cwd: root, stdio: 'inherit' });
// The smoke run (--small, in CI) uses a debug build: its figures are not read, and CI has the
// bridge's debug dependencies built already.
const nativeProfile = small ? 'debug' : 'release';
if (RTC) execFileSync('cargo', ['build', '-q', '--locked', ...(small ? [] : ['--release']), '-p', 'kathon-bridge', '--example', 'dc_throughput'], { cwd: root, stdio: 'inherit' });
execFileSync(process.execPath, [join(root, 'tests/e2e/node_modules/vite/bin/vite.js'), 'build'], { cwd: here, stdio: 'inherit' });
// The small profile comes from a debug build (CI has it compiled already); the full one from release.
const cargoProfile = small ? [] : ['--release'];
execFileSync('cargo', ['run', '-q', '--locked', '-p', 'kathon-benches', ...cargoProfile, '--bin', 'export_profile', '--', join(dist, 'profile.json'), ...(small ? ['small'] : [])], { cwd: root, stdio: 'inherit' });
const server = await serve(dist);
// The write rounds' own server lets the browser cache what it fetched, so the revisit run (a new
// browser on the same profile) starts as a returning visitor's page does: scripts and wasm from the HTTP cache, and
// V8's cached code where it made one.
const cachedServer = await serve(dist, { cacheable: true });
// Made after the builds, so a failed build leaves nothing behind in the temp directory.
const work = mkdtempSync(join(tmpdir(), 'kathon-bench-'));
const results = { date: new Date().toISOString(), profile: small ? 'small' : 'realistic', rounds: ROUNDS, writes: WRITES, write: {}, load: {}, open: {}, signatures: [], fullSync: {}, transport: {} };
for (const lib of LIBS) {
  results.write[lib] = [];
  results.open[lib] = [];
}

try {
  const chromium = execFileSync('/usr/bin/chromium', ['--version']).toString().trim();
  results.browser = chromium;
  log(`==> ${chromium}; ${ROUNDS} rounds; libraries rotate order each round`);

  if (want('write')) {
    log(`==> local write throughput: ${WRITES} bookmark adds, one per task, until durable in IndexedDB`);
    log('    cold: the page\'s first edits (its code not yet optimised: wasm starts on Chromium\'s baseline compiler);');
    log('    warm: the same again in the same page, into a fresh store (the code warmed by the cold run, the data new)');
    log('    reload: the page reloaded after that, in the same browser; revisit: the browser closed and started again on the same');
    log('    profile, as a returning visitor (files from the HTTP cache, compiled wasm from V8\'s code cache where it kept some);');
    log('    each into a fresh store; Kathon also: a fresh page\'s first edits after `await warmUp()` (its write path run in a');
    log(`    worker first, ${WARM_UP_EDITS} edits: V8 shares the compiled module with the page), against the others\' cold runs`);
  }
  for (let round = 0; want('write') && round < ROUNDS; round += 1) {
    for (let k = 0; k < LIBS.length; k += 1) {
      const lib = LIBS[(k + round) % LIBS.length];
      const dir = join(work, `write-${lib}-${round}`);
      const r = await inBrowser(dir, cachedServer.url, async (page) => {
        const r = await page.evaluate(([lib, n]) => bench.write[lib]('w', n), [lib, WRITES]);
        r.warmPasses = [];
        for (let pass = 0; pass < WARM_PASSES; pass += 1) {
          r.warmPasses.push(await page.evaluate(([lib, n, name]) => bench.write[lib](name, n), [lib, WRITES, `w2-${pass}`]));
        }
        r.warm = r.warmPasses[0];
        r.latency = await page.evaluate(([lib, n]) => bench.latency[lib]('l', n), [lib, LATENCY_EDITS]);
        // The page left open a moment, as a user's would be: V8 writes its code cache for a wasm
        // module once no new code has been optimised for 2 s (--wasm-caching-timeout-ms).
        await page.waitForTimeout(IDLE_MS);
        // The page reloaded in the same browser (the renderer keeps the compiled module).
        await page.reload();
        await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 });
        r.reload = await page.evaluate(([lib, n]) => bench.write[lib]('w3', n), [lib, WRITES]);
        return r;
      });
      // What V8 left in the profile's wasm code cache for the returning visitor.
      r.codeCacheBytes = directoryBytes(join(dir, 'Default', 'Code Cache', 'wasm'));
      // A returning visitor: the browser closed and started again on the same profile.
      r.revisit = await inBrowser(dir, cachedServer.url, (page) => page.evaluate(([lib, n]) => bench.write[lib]('w4', n), [lib, WRITES]));
      rmSync(dir, { recursive: true, force: true });
      let afterWarmUp = '';
      if (lib === 'kathon') {
        const fresh = join(work, `write-kathon-warm-up-${round}`);
        r.afterWarmUp = await inBrowser(fresh, cachedServer.url, (page) => page.evaluate(([n, w]) => bench.write.kathon('w5', n, w), [WRITES, WARM_UP_EDITS]));
        rmSync(fresh, { recursive: true, force: true });
        afterWarmUp = `; a fresh page after warmUp() (${r.afterWarmUp.warmUpMs.toFixed(0)} ms): ${((WRITES * 1000) / r.afterWarmUp.ms).toFixed(0)} edits/s (${((r.afterWarmUp.cpuMs * 1000) / WRITES).toFixed(0)} µs)`;
      }
      const wrote = [r, ...r.warmPasses, r.reload, r.revisit, ...(r.afterWarmUp ? [r.afterWarmUp] : [])].map((x) => x.check);
      if (wrote.some((c) => c !== WRITES)) throw new Error(`${lib} wrote ${wrote.join(', ')} of ${WRITES} (cold, warm passes, reload, revisit)`);
      r.warmBest = r.warmPasses.reduce((best, x) => (x.ms < best.ms ? x : best));
      results.write[lib].push(r);
      log(`  round ${round + 1} ${lib.padEnd(9)} ${r.ms.toFixed(0).padStart(6)} ms  ${((WRITES * 1000) / r.ms).toFixed(0).padStart(6)} edits/s  (${((r.cpuMs * 1000) / WRITES).toFixed(0)} µs CPU per edit in the call); warm ${((WRITES * 1000) / r.warm.ms).toFixed(0).padStart(6)} edits/s (${((r.warm.cpuMs * 1000) / WRITES).toFixed(0)} µs), passes ${r.warmPasses.map((x) => ((WRITES * 1000) / x.ms).toFixed(0)).join('/')}; reload ${((WRITES * 1000) / r.reload.ms).toFixed(0).padStart(6)}; revisit ${((WRITES * 1000) / r.revisit.ms).toFixed(0).padStart(6)} edits/s (${((r.revisit.cpuMs * 1000) / WRITES).toFixed(0)} µs, wasm code cache ${(r.codeCacheBytes / 1e6).toFixed(2)} MB); one edit alone until durable: median ${r.latency.medianMs.toFixed(1)} ms, max ${r.latency.maxMs.toFixed(1)} ms${afterWarmUp}`);
    }
  }

  if (want('profile')) log('==> the stored profile: load it, then open it cold (a fresh browser on the same profile directory)');
  for (const lib of want('profile') ? LIBS : []) {
    const dir = join(work, `profile-${lib}`);
    const r = await inBrowser(dir, server.url, (page) =>
      page.evaluate(async (lib) => bench.load[lib]('p', await (await fetch('profile.json')).json()), lib),
    );
    results.load[lib] = r;
    log(`  ${lib.padEnd(9)} loaded in ${r.ms.toFixed(0)} ms; stored ${r.stored.bytes} bytes in ${r.stored.records} records; memory ${JSON.stringify(r.memory)}`);
    if (r.phases) log(`            where: ${Object.entries(r.phases).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(', ')}`);
  }
  for (let round = 0; want('profile') && round < ROUNDS; round += 1) {
    for (let k = 0; k < LIBS.length; k += 1) {
      const lib = LIBS[(k + round) % LIBS.length];
      const r = await inBrowser(join(work, `profile-${lib}`), server.url, (page) => page.evaluate((lib) => bench.open[lib]('p'), lib));
      results.open[lib].push(r);
      log(`  round ${round + 1} ${lib.padEnd(9)} cold open to first query ${r.ms.toFixed(0).padStart(6)} ms (+ ${r.initMs.toFixed(0)} ms wasm init); ${JSON.stringify(r.counts)}; memory ${JSON.stringify(r.memory ?? {})}`);
    }
  }
  if (want('signatures')) log('==> signatures in the page: wasm (ed25519-dalek as the package builds it) and WebCrypto Ed25519; verified ingest in wasm');
  for (let round = 0; want('signatures') && round < ROUNDS; round += 1) {
    const dir = join(work, `signatures-${round}`);
    const r = await inBrowser(dir, server.url, (page) => page.evaluate(([n, small]) => bench.signatures.run(n, small), [small ? 256 : 2048, small]));
    rmSync(dir, { recursive: true, force: true });
    results.signatures.push(r);
    log(`  round ${round + 1}: wasm sign ${r.signUs.toFixed(1)} µs, verify_strict ${r.strictUs.toFixed(1)} µs, verify_batch ${Object.entries(r.batchUs).map(([k, v]) => `${k}: ${v.toFixed(1)} µs`).join(', ')}; WebCrypto verify ${r.webSerialUs.toFixed(1)} µs awaited one by one, ${r.webParallelUs.toFixed(1)} µs all in flight; ingest ${r.ingest.records} records in ${r.ingest.ms.toFixed(0)} ms`);
  }

  if (RTC) await rtcSections();
} finally {
  await server.close();
  await cachedServer.close();
  rmSync(work, { recursive: true, force: true });
}

/** The WebRTC sections, inside machine 1 of a one-machine namespaced LAN. */
async function rtcSections() {
  const lan = new Lan(1, work, join(root, `target/${nativeProfile}/kathon-bridge`));
  try {
    const served = spawn('ip', ['netns', 'exec', lan.ns(1), process.execPath, join(here, 'serve.mjs'), dist], { stdio: ['ignore', 'pipe', 'inherit'] });
    lan.children.push(served);
    const url = (await createInterface({ input: served.stdout })[Symbol.asyncIterator]().next()).value.trim();
    const inNs = (profileDir, body) => inBrowserWith(lan.chromium(1), profileDir, url, body);

    if (want('sync')) log(`==> full sync between two in-page peers (real WebRTC inside a namespace), the ${small ? 'small' : 'realistic'} profile`);
    for (const lib of want('sync') ? LIBS : []) {
      const dir = join(work, `sync-${lib}`);
      const r = await inNs(dir, (page) => page.evaluate(async (lib) => bench.fullSync[lib](await (await fetch('profile.json')).json()), lib));
      rmSync(dir, { recursive: true, force: true });
      results.fullSync[lib] = r;
      log(`  ${lib.padEnd(9)} ${r.ms.toFixed(0).padStart(6)} ms to a durable copy on B; ${JSON.stringify(r.counts)}`);
    }

    if (PAIRING) {
      log(`==> ${PAIRINGS} pairings of two in-page stores in a row`);
      const r = await inNs(join(work, 'pairing'), (page) => page.evaluate((n) => bench.transport.pairings(n), PAIRINGS));
      const sorted = [...r.ms].sort((x, y) => x - y);
      log(`  pairing: median ${median(r.ms).toFixed(0)} ms, max ${sorted[sorted.length - 1].toFixed(0)} ms over ${r.ms.length}`);
    }

    if (want('rtc')) log(`==> WebRTC connect and throughput (${TRIALS} connections each; ${RTC_BYTES >> 20} MiB each way)`);
    if (want('rtc')) {
      const dir = join(work, 'rtc-chromium');
      const r = await inNs(dir, (page) => page.evaluate(([t, b]) => bench.transport.chromium(t, b), [TRIALS, RTC_BYTES]));
      results.transport.chromium = r;
      log(`  Chromium↔Chromium in one page: channel open median ${median(r.connectMs).toFixed(1)} ms; ${(r.throughput.forward / 1e6).toFixed(1)} / ${(r.throughput.back / 1e6).toFixed(1)} MB/s`);
      const k = await inNs(join(work, 'rtc-kathon'), (page) => page.evaluate((t) => bench.transport.kathon(t), TRIALS));
      results.transport.kathonInPage = k;
      log(`  two Kathon stores in one page: connect to authenticated session median ${median(k.sessionMs).toFixed(1)} ms`);
    }
    if (want('rtc')) {
      const native = join(root, `target/${nativeProfile}/examples/dc_throughput`);
      const connectMs = [];
      let throughput = null;
      await inNs(join(work, 'rtc-native'), async (page) => {
        for (let trial = 0; trial < TRIALS; trial += 1) {
          const child = spawn('ip', ['netns', 'exec', lan.ns(1), native, '--answer', '--bind', lan.addr(1), ...NATIVE_ARGS], { stdio: ['pipe', 'pipe', 'ignore'] });
          lan.children.push(child);
          const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
          const offer = await page.evaluate(() => bench.transport.nativeOffer());
          child.stdin.write(`${JSON.stringify({ sdp: offer })}\n`);
          const answer = JSON.parse((await lines.next()).value).sdp;
          connectMs.push(await page.evaluate((sdp) => bench.transport.nativeAnswer(sdp), answer));
          if (trial === TRIALS - 1) throughput = await page.evaluate((b) => bench.transport.nativeThroughput(b), RTC_BYTES);
          else await page.evaluate(() => window.__native.pc.close());
          child.kill('SIGKILL');
        }
      });
      results.transport.nativeChromium = { connectMs, throughput };
      log(`  native↔Chromium: channel open median ${median(connectMs).toFixed(1)} ms; page→native ${(throughput.toNative / 1e6).toFixed(1)} MB/s, native→page ${(throughput.fromNative / 1e6).toFixed(1)} MB/s`);
      const out = execFileSync('ip', ['netns', 'exec', lan.ns(1), native, String(RTC_BYTES >> 20), '--bind', lan.addr(1)]).toString();
      const summaryLine = JSON.parse(out.trim().split('\n').pop());
      results.transport.nativeNative = summaryLine;
      log(`  native↔native: channel open median ${summaryLine.channelOpenMedianMs} ms, authenticated session ${summaryLine.authenticatedSessionMedianMs} ms; ${summaryLine.throughputMBps} MB/s`);
    }
  } finally {
    lan.down();
  }
}

async function inBrowserWith(executable, profileDir, url, body) {
  const context = await browser(profileDir, ARGS, executable);
  try {
    const page = await context.newPage();
    page.on('pageerror', (e) => log(`  page error: ${e.message}`));
    page.on('console', showConsole);
    pageTrace = [];
    await page.goto(url);
    await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 });
    return await failOnPageError(page, body);
  } catch (e) {
    if (!TRACE) for (const line of pageTrace.slice(-200)) log(`  page trace: ${line}`);
    throw e;
  } finally {
    await context.close();
  }
}

// ---- Summary ----
let summary = { ratios: {} };
const ratio = (a, b) => (a / b).toFixed(2);
if (want('write')) {
const writeRate = (lib, pick = (r) => r) => (WRITES * 1000) / median(results.write[lib].map((r) => pick(r).ms));
const cpu = (lib, pick = (r) => r) => (median(results.write[lib].map((r) => pick(r).cpuMs)) * 1000) / WRITES;
const warm = (r) => r.warm;
const warmBest = (r) => r.warmBest;
const revisit = (r) => r.revisit;
const reload = (r) => r.reload;
Object.assign(summary, {
  writesPerSecond: Object.fromEntries(LIBS.map((l) => [l, Math.round(writeRate(l))])),
  cpuMicrosPerEdit: Object.fromEntries(LIBS.map((l) => [l, Math.round(cpu(l))])),
  writesPerSecondWarm: Object.fromEntries(LIBS.map((l) => [l, Math.round(writeRate(l, warm))])),
  cpuMicrosPerEditWarm: Object.fromEntries(LIBS.map((l) => [l, Math.round(cpu(l, warm))])),
  writesPerSecondWarmBest: Object.fromEntries(LIBS.map((l) => [l, Math.round(writeRate(l, warmBest))])),
  cpuMicrosPerEditWarmBest: Object.fromEntries(LIBS.map((l) => [l, Math.round(cpu(l, warmBest))])),
  writesPerSecondReload: Object.fromEntries(LIBS.map((l) => [l, Math.round(writeRate(l, reload))])),
  writesPerSecondRevisit: Object.fromEntries(LIBS.map((l) => [l, Math.round(writeRate(l, revisit))])),
  cpuMicrosPerEditRevisit: Object.fromEntries(LIBS.map((l) => [l, Math.round(cpu(l, revisit))])),
  oneEditDurableMs: Object.fromEntries(LIBS.map((l) => [l, +median(results.write[l].map((r) => r.latency.medianMs)).toFixed(1)])),
});
const afterWarmUp = (r) => r.afterWarmUp;
Object.assign(summary, {
  kathonWritesPerSecondAfterWarmUp: Math.round(writeRate('kathon', afterWarmUp)),
  kathonCpuMicrosPerEditAfterWarmUp: Math.round(cpu('kathon', afterWarmUp)),
  kathonWarmUpMs: Math.round(median(results.write.kathon.map((r) => r.afterWarmUp.warmUpMs))),
});
Object.assign(summary.ratios, {
  writeThroughputVsYjs: ratio(summary.writesPerSecond.kathon, summary.writesPerSecond.yjs),
  writeThroughputVsAutomerge: ratio(summary.writesPerSecond.kathon, summary.writesPerSecond.automerge),
  writeThroughputWarmVsYjs: ratio(summary.writesPerSecondWarm.kathon, summary.writesPerSecondWarm.yjs),
  writeThroughputWarmVsAutomerge: ratio(summary.writesPerSecondWarm.kathon, summary.writesPerSecondWarm.automerge),
  writeThroughputWarmBestVsYjs: ratio(summary.writesPerSecondWarmBest.kathon, summary.writesPerSecondWarmBest.yjs),
  writeThroughputWarmBestVsAutomerge: ratio(summary.writesPerSecondWarmBest.kathon, summary.writesPerSecondWarmBest.automerge),
  writeThroughputReloadVsYjs: ratio(summary.writesPerSecondReload.kathon, summary.writesPerSecondReload.yjs),
  writeThroughputRevisitVsYjs: ratio(summary.writesPerSecondRevisit.kathon, summary.writesPerSecondRevisit.yjs),
  writeThroughputRevisitVsAutomerge: ratio(summary.writesPerSecondRevisit.kathon, summary.writesPerSecondRevisit.automerge),
  // Kathon's fresh page after warmUp() against Yjs's fresh page (Yjs has no compile step to warm).
  writeThroughputAfterWarmUpVsYjs: ratio(summary.kathonWritesPerSecondAfterWarmUp, summary.writesPerSecond.yjs),
});
// The same round's Kathon and Yjs runs are minutes apart at most (this host's speed drifts over
// the hour): each round's own ratio, and their median, beside the ratio of the medians above.
const perRound = (pick) => results.write.kathon.map((r, k) => pick(results.write.yjs[k]).ms / pick(r).ms);
summary.writeRatiosVsYjsPerRound = {
  warm: perRound(warm).map((x) => +x.toFixed(2)),
  warmBest: perRound(warmBest).map((x) => +x.toFixed(2)),
  reload: perRound(reload).map((x) => +x.toFixed(2)),
};
summary.ratios.writeThroughputWarmBestVsYjsMedianOfRounds = median(perRound(warmBest)).toFixed(2);
}
if (want('profile')) {
const openMs = (lib) => median(results.open[lib].map((r) => r.ms));
const initMs = (lib) => median(results.open[lib].map((r) => r.initMs));
const records = (() => {
  const c = results.load.kathon.counts;
  return c.bookmarks + c.history + c.passwords + 1;
})();
const kathonLoadMem = results.load.kathon.memory.jsHeap + results.load.kathon.memory.wasm + (results.load.kathon.memory.formatsWasm ?? 0);
const openMem = (lib) => median(results.open[lib].map((r) => r.memory.jsHeap + (r.memory.wasm ?? 0)));
Object.assign(summary, {
  coldOpenMs: Object.fromEntries(LIBS.map((l) => [l, Math.round(openMs(l))])),
  wasmInitMs: Object.fromEntries(LIBS.map((l) => [l, Math.round(initMs(l))])),
  storedBytes: Object.fromEntries(LIBS.map((l) => [l, results.load[l].stored.bytes])),
  // Kathon's wasm memory after the load is the load's peak (it never shrinks). No ratio: Yjs's
  // settled heap after the load is not comparable, its document holds the bench's own input
  // strings (JS strings are shared, not copied), so it counts almost nothing of the data.
  memoryBytesPerRecordAfterLoad: { kathon: Math.round(kathonLoadMem / records), yjsSharingItsInput: Math.round(results.load.yjs.memory.jsHeap / records) },
  memoryBytesPerRecordAfterColdOpen: { kathon: Math.round(openMem('kathon') / records), yjs: Math.round(openMem('yjs') / records) },
  records,
});
Object.assign(summary.ratios, {
  coldOpenVsYjs: ratio(summary.coldOpenMs.kathon, summary.coldOpenMs.yjs),
  coldOpenWithInitVsYjs: ratio(summary.coldOpenMs.kathon + summary.wasmInitMs.kathon, summary.coldOpenMs.yjs),
  coldOpenVsAutomerge: ratio(summary.coldOpenMs.kathon, summary.coldOpenMs.automerge),
  storedBytesVsYjs: ratio(summary.storedBytes.kathon, summary.storedBytes.yjs),
  storedBytesVsAutomerge: ratio(summary.storedBytes.kathon, summary.storedBytes.automerge),
  memoryPerRecordAfterColdOpenVsYjs: ratio(summary.memoryBytesPerRecordAfterColdOpen.kathon, summary.memoryBytesPerRecordAfterColdOpen.yjs),
});
}
if (want('signatures')) {
const sig = (key) => median(results.signatures.map((r) => (typeof key === 'function' ? key(r) : r[key])));
summary.signatures = {
  wasmSignMicros: sig('signUs'),
  wasmVerifyStrictMicros: sig('strictUs'),
  wasmVerifyBatch256Micros: sig((r) => r.batchUs[256]),
  wasmVerifyBatch1024Micros: sig((r) => r.batchUs[1024]),
  webCryptoVerifyMicrosSerial: sig('webSerialUs'),
  webCryptoVerifyMicrosInFlight: sig('webParallelUs'),
  wasmIngestRecordsPerSecond: sig((r) => (r.ingest.records * 1000) / r.ingest.ms),
};
summary.ratios.wasmBatchVerifyVsWebCrypto = ratio(summary.signatures.webCryptoVerifyMicrosInFlight, summary.signatures.wasmVerifyBatch256Micros);
summary.ratios.wasmBatchVerifyVsWebCryptoSerial = ratio(summary.signatures.webCryptoVerifyMicrosSerial, summary.signatures.wasmVerifyBatch256Micros);
summary.ratios.wasmBatch1024VerifyVsWebCrypto = ratio(summary.signatures.webCryptoVerifyMicrosInFlight, summary.signatures.wasmVerifyBatch1024Micros);
// What ingest pays: validity is decided by verify_strict, one per envelope (docs/protocol.md).
summary.ratios.wasmVerifyStrictVsWebCrypto = ratio(summary.signatures.webCryptoVerifyMicrosInFlight, summary.signatures.wasmVerifyStrictMicros);
summary.ratios.wasmIngestVsBatchFloor = ratio(summary.signatures.wasmIngestRecordsPerSecond, 1e6 / summary.signatures.wasmVerifyBatch256Micros);
}
if (want('sync')) {
  summary.fullSyncMs = Object.fromEntries(LIBS.map((l) => [l, Math.round(results.fullSync[l].ms)]));
  summary.ratios.fullSyncVsYjs = ratio(summary.fullSyncMs.kathon, summary.fullSyncMs.yjs);
  summary.ratios.fullSyncVsAutomerge = ratio(summary.fullSyncMs.kathon, summary.fullSyncMs.automerge);
}
if (want('rtc')) {
  const t = results.transport;
  summary.transport = {
    chromiumConnectMs: median(t.chromium.connectMs),
    kathonInPageSessionMs: median(t.kathonInPage.sessionMs),
    nativeChromiumConnectMs: median(t.nativeChromium.connectMs),
    nativeNativeConnectMs: t.nativeNative.channelOpenMedianMs,
    nativeNativeSessionMs: t.nativeNative.authenticatedSessionMedianMs,
    chromiumMBps: Math.min(t.chromium.throughput.forward, t.chromium.throughput.back) / 1e6,
    nativeToChromiumMBps: t.nativeChromium.throughput.fromNative / 1e6,
    chromiumToNativeMBps: t.nativeChromium.throughput.toNative / 1e6,
    nativeNativeMBps: t.nativeNative.throughputMBps,
  };
  summary.ratios.nativeSessionVsChromiumConnect = ratio(summary.transport.nativeNativeSessionMs, summary.transport.chromiumConnectMs);
  summary.ratios.nativeSessionVsKathonInPageSession = ratio(summary.transport.nativeNativeSessionMs, summary.transport.kathonInPageSessionMs);
  summary.ratios.browserNativeThroughputVsChromium = ratio(
    Math.min(summary.transport.nativeToChromiumMBps, summary.transport.chromiumToNativeMBps),
    summary.transport.chromiumMBps,
  );
}
results.summary = summary;
log('\n==> medians');
log(JSON.stringify(summary, null, 2));
mkdirSync(join(root, 'artifacts/bench'), { recursive: true });
writeFileSync(join(root, 'artifacts/bench/browser.json'), JSON.stringify(results, null, 2));
log('written to artifacts/bench/browser.json');

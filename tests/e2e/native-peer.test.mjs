// The native peer and headless Chromium pages sync over real WebRTC, through real bridges, on a
// private LAN of network namespaces:
//
// * machine 1 runs a bridge with the native peer, which serves the test page; a Chromium on
//   machine 1 pairs with it and syncs (same machine, over the bridge's loopback signaling);
// * machine 2 runs a signaling-only bridge; a Chromium there pairs with machine 1's native peer
//   across the LAN (discovery, the relay between bridges, host candidates);
// * changes made on any of them reach the others; figures are printed.
//
// Usage (as root): node native-peer.test.mjs <kathon-bridge binary> <pkg/ directory>
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { browser, check, summary, test, watch } from './lib.mjs';
import { Lan, until } from './lan.mjs';

const [bin, pkgArg] = process.argv.slice(2);
if (!bin) throw new Error('usage: node native-peer.test.mjs <kathon-bridge> <pkg dir>');
const pkg = resolve(pkgArg ?? 'pkg');
const work = mkdtempSync(join(tmpdir(), 'kathon-native-e2e-'));
const site = join(work, 'site');
mkdirSync(site);
// The package as a page serves it: the store module, the import/export module it loads on first
// use, and the snippet that loads it.
for (const file of ['kathon_wasm.js', 'kathon_wasm_bg.wasm', 'kathon_formats.js', 'kathon_formats_bg.wasm', 'snippets']) {
  cpSync(join(pkg, file), join(site, file), { recursive: true });
}
writeFileSync(
  join(site, 'index.html'),
  `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>native peer test</title>
<script type="module">
import init, { KathonStore } from './kathon_wasm.js';
await init();
window.KathonStore = KathonStore;
window.ready = true;
</script>`,
);

const lan = new Lan(2, work, resolve(bin));
const contexts = [];
const consoleLines = [];
let failed = false;

/** Opens the test page on machine `i` (served by that machine's bridge). */
async function page(i, label) {
  const context = await browser(join(work, `profile-${label}`), [], lan.chromium(i));
  contexts.push(context);
  const p = await context.newPage();
  const errors = watch(p, label);
  p.on('console', (m) => consoleLines.push(`${label} ${m.type()}: ${m.text()}`));
  await p.goto('http://127.0.0.1:7710/');
  await p.waitForFunction(() => window.ready === true, null, { timeout: 20_000 });
  return { p, errors };
}

/** Pairs a page's store into the native peer's identity, comparing the codes like a user. */
async function pairPage(p, name) {
  const { code } = lan.json(1, ['pair', 'code', '--no-wait']);
  await p.evaluate(
    async ({ code, name }) => {
      window.store = await KathonStore.open(name);
      window.pairing = [];
      store.on('pairing', (e) => pairing.push(e));
      store.connectBridge();
      store.joinWithCode(code, name);
    },
    { code, name },
  );
  const request = await until('the native peer to see the request', () =>
    lan.json(1, ['status']).peer.pairing.find((x) => x.role === 'request'),
  );
  const sas = await until('the page to show its code', () => p.evaluate(() => pairing.find((e) => e.sas)?.sas));
  check(sas === request.sas, `both screens show the same code: ${sas} vs ${request.sas}`);
  lan.cli(1, ['pair', 'confirm', String(request.peer)]);
  await until('the page to be enrolled', () => p.evaluate(() => store.status().enrolled));
}

const digest = (i) => lan.json(i, ['digest']);

try {
  const bridge1 = await lan.bridge(1, ['--site', site]);
  lan.json(1, ['identity', 'create']);
  // A profile on the native side: 5,000 bookmarks in folders, imported from a browser export.
  let html = '<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n';
  for (let f = 0; f < 50; f++) {
    html += `<DT><H3>folder ${f}</H3>\n<DL><p>\n`;
    for (let k = 0; k < 100; k++) html += `<DT><A HREF="https://site${f}.example/page/${k}?ref=bm">page ${k} of site ${f}</A>\n`;
    html += '</DL><p>\n';
  }
  html += '</DL><p>\n';
  writeFileSync(join(work, 'bookmarks.html'), html);
  lan.json(1, ['import', '--format', 'bookmarks-html', join(work, 'bookmarks.html')]);

  let first;
  await test('a Chromium page on the same machine pairs with the native peer and receives its data', async () => {
    first = await page(1, 'chromium-1');
    const started = Date.now();
    await pairPage(first.p, 'chromium on machine 1');
    const paired = Date.now() - started;
    const want = digest(1);
    await until('the page to hold the native peer\'s data', () => first.p.evaluate((want) => store.digest() === want, want), 120_000);
    const counts = await first.p.evaluate(() => store.counts());
    check(counts.bookmarks === 5000, `5000 bookmarks in the page: ${JSON.stringify(counts)}`);
    const took = Date.now() - started - paired;
    const sent = lan.json(1, ['status']).peer.bytes_sent;
    console.log(
      `\n  paired in ${paired} ms; 5,000 bookmarks synced native→Chromium ${took} ms after pairing ` +
        `(${sent} bytes sent by the native peer: ${(sent / took / 1000).toFixed(1)} MB/s end to end, incl. verify, apply and IndexedDB)`,
    );
  });

  await test('changes flow both ways between the page and the native peer', async () => {
    let started = Date.now();
    await first.p.evaluate(() => store.addBookmark({ title: 'from chromium', url: 'https://example.org/from-chromium' }));
    await until('the native peer to see the page\'s bookmark', () =>
      JSON.parse(lan.cli(1, ['--json', 'bookmarks', 'search', 'from-chromium'])).length === 1,
    );
    const toNative = Date.now() - started;
    started = Date.now();
    lan.cli(1, ['bookmarks', 'add', 'https://example.org/from-native', '--title', 'from native']);
    await until('the page to see the native bookmark', () =>
      first.p.evaluate(() => store.searchBookmarks('from-native').length === 1),
    );
    console.log(`\n  one change Chromium→native ${toNative} ms, native→Chromium ${Date.now() - started} ms (including CLI round trips)`);
  });

  await test('a Chromium page on another machine pairs across the LAN and converges', async () => {
    const bridge2 = await lan.bridge(2, ['--no-peer', '--site', site]);
    const second = await page(2, 'chromium-2');
    await pairPage(second.p, 'chromium on machine 2');
    await until('machine 2\'s page to converge with the native peer', async () => {
      const want = digest(1);
      return second.p.evaluate((want) => store.digest() === want, want);
    }, 120_000);
    await second.p.evaluate(() => store.addBookmark({ title: 'from machine 2', url: 'https://example.org/from-machine-2' }));
    await until('the native peer to see machine 2\'s bookmark', () =>
      JSON.parse(lan.cli(1, ['--json', 'bookmarks', 'search', 'from-machine-2'])).length === 1,
    30_000);
    await until('machine 1\'s page to see machine 2\'s bookmark', () =>
      first.p.evaluate(() => store.searchBookmarks('from-machine-2').length === 1),
    60_000);
    const devices = lan.json(1, ['devices', 'list']);
    check(devices.length === 3, `three devices: ${JSON.stringify(devices)}`);
    check(second.errors.length === 0, second.errors.join('\n'));
    await bridge2.stop();
  });

  check(first.errors.length === 0, first.errors.join('\n'));
  await bridge1.stop();
  summary();
} catch (e) {
  failed = true;
  console.error(`\nlogs kept in ${work}`);
  try {
    console.error(JSON.stringify(lan.json(1, ['status']).peer));
  } catch {}
  for (const c of contexts) {
    for (const p of c.pages()) console.error(await p.evaluate(() => JSON.stringify([store.syncStatus(), store.counts()])).catch((x) => String(x)));
  }
  for (const line of consoleLines) console.error(line);
  throw e;
} finally {
  for (const c of contexts) await c.close().catch(() => {});
  lan.down();
  if (!failed) rmSync(work, { recursive: true, force: true });
}

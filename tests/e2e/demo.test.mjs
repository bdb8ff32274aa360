// The end-to-end proof: the demo page in headless Chromium on three "machines" of a LAN that
// this test builds (network namespaces on a Linux bridge), each with its own bridge process
// (signaling only: the pages talk browser to browser) and its own Chromium profile.
//
// Pairing through the page with matching codes; edits of every data type both ways; edits made
// while the LAN is cut merge when it is joined (concurrent folder moves into each other,
// concurrent edits of different fields of one password); reloads and a bridge restart mid-sync
// lose nothing; a man-in-the-middle bridge gets no session and the page says why; a revoked
// device's changes are refused and it cannot read what is written after. Screenshots go to
// artifacts/e2e/.
//
// Usage (as root): node demo.test.mjs <kathon-bridge> <tampering_bridge> <site dir>
// KATHON_E2E_RECONNECTS=N sets how many fresh browser↔browser connections are checked (default 20).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { browser, check, summary, test } from './lib.mjs';
import { Lan, until } from './lan.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const [bin, tamperBin, siteArg] = process.argv.slice(2);
if (!bin || !tamperBin || !siteArg) throw new Error('usage: node demo.test.mjs <kathon-bridge> <tampering_bridge> <site dir>');
const site = resolve(siteArg);
const shots = resolve(here, '../../artifacts/e2e');
mkdirSync(shots, { recursive: true });
const work = mkdtempSync(join(tmpdir(), 'kathon-demo-e2e-'));
const lan = new Lan(4, work, resolve(bin));
const contexts = [];
const consoleLines = [];
const figures = [];
let failed = false;
const bridges = {};

const A = 1;
const B = 2;
const C = 3;
const M = 4;

async function startBridge(i, extra = []) {
  bridges[i] = await lan.bridge(i, ['--no-peer', '--site', site, ...extra]);
}

/** The demo page on machine `i`, in that machine's own Chromium profile. */
async function openPage(i, label) {
  const context = await browser(join(work, `profile-${label}`), [], lan.chromium(i));
  contexts.push(context);
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(`${label}: ${e.message}`));
  page.on('console', (m) => consoleLines.push(`${label} ${m.type()}: ${m.text()}`));
  page.on('dialog', (d) => d.accept());
  await page.goto('http://127.0.0.1:7710/');
  await page.waitForFunction(() => window.kathon !== undefined, null, { timeout: 30_000 });
  page.label = label;
  return page;
}

const shot = (page, name) => page.screenshot({ path: join(shots, `${name}.png`) });
const call = (page, f, arg) => page.evaluate(f, arg);
// Right after a reload the store may not be open yet: treat that as "not there yet".
const digest = (page) => call(page, () => window.kathon?.digest() ?? null).catch(() => null);
const connected = (page) => call(page, () => window.kathon?.syncStatus().connected ?? 0).catch(() => 0);

async function converged(pages, what, timeout = 60_000) {
  await until(what, async () => {
    const ds = await Promise.all(pages.map(digest));
    return ds[0] !== null && ds.every((d) => d === ds[0]);
  }, timeout);
}

async function view(page, name) {
  await page.click(`.tabs button[data-view=${name}]`);
}

/** Pairs `joiner` into `sponsor`'s identity through the pages, as a person would. */
async function pairThroughPages(sponsor, joiner, name) {
  await view(sponsor, 'devices');
  await sponsor.click('#add-device');
  const code = (await sponsor.textContent('#pairing-code')).trim();
  await joiner.fill('#join-form input[name=code]', code);
  await joiner.fill('#join-form input[name=name]', name);
  await joiner.click('#join-form button');
  await joiner.waitForSelector('#join-sas', { timeout: 60_000 });
  await sponsor.waitForSelector('#pairing-sas', { timeout: 60_000 });
  const [sas1, sas2] = [await sponsor.textContent('#pairing-sas'), await joiner.textContent('#join-sas')];
  check(sas1 === sas2, `both pages show the same code: ${sas1} / ${sas2}`);
  await shot(sponsor, `pairing-${name}-sponsor`);
  await shot(joiner, `pairing-${name}-joiner`);
  await sponsor.click('#confirm-pairing');
  await joiner.waitForSelector('#bookmarks-bar', { timeout: 60_000 });
}

let a;
let b;
let c;
try {
  for (const i of [A, B, C]) await startBridge(i);

  await test('device A creates an identity; device B pairs with its code, both showing the same code', async () => {
    a = await openPage(A, 'A');
    await shot(a, '01-welcome');
    await a.fill('#create-form input[name=name]', 'Machine A');
    await a.click('#create-form button');
    await a.waitForSelector('#bookmarks-bar');
    b = await openPage(B, 'B');
    await pairThroughPages(a, b, 'Machine B');
    await until('A and B to be connected', async () => (await connected(a)) > 0 && (await connected(b)) > 0, 60_000);
    await converged([a, b], 'A and B to converge');
    await shot(a, '02-paired-A-devices');
  });

  await test('edits of every data type on both sides appear on the other', async () => {
    const ids = await call(a, () => {
      const s = window.kathon;
      const folder = s.addBookmark({ parent: 'toolbar', kind: 'folder', title: 'Reading' });
      const rust = s.addBookmark({ parent: 'toolbar', title: 'Rust', url: 'https://www.rust-lang.org/' });
      s.addBookmark({ parent: folder, title: 'yrs', url: 'https://docs.rs/yrs' });
      s.recordVisit({ url: 'https://www.rust-lang.org/learn', title: 'Learn Rust' });
      s.recordVisit({ url: 'https://secret.example/private', title: 'Private' });
      const pw = s.addPassword({ origin: 'https://mail.example', username: 'ada', password: 'first-secret', notes: 'from A' });
      s.addKey({ name: 'SSH laptop', type: 'ssh', secret: 'ssh-ed25519 AAAA…' });
      s.saveWorkspace('Research', { windows: [{ tabs: [{ url: 'https://arxiv.org/', title: 'arXiv' }], activeTab: 0 }] });
      return { folder, rust, pw };
    }, null);
    await converged([a, b], 'A\'s edits on B');
    // Now B edits each kind: move, rename, delete a history address, a password field, tabs.
    await call(b, ({ folder, rust, pw }) => {
      const s = window.kathon;
      s.moveBookmark(rust, folder);
      s.editBookmark(folder, 'Reading list');
      s.deleteHistoryUrl('https://secret.example/private');
      s.updatePassword(pw, { password: 'changed-on-B' });
      s.setDeviceLayout({ windows: [{ tabs: [{ url: 'https://news.example/', title: 'News on B', pinned: true }], activeTab: 0 }] });
    }, ids);
    await converged([a, b], 'B\'s edits on A');
    const seen = await call(a, ({ folder, pw }) => {
      const s = window.kathon;
      return {
        children: s.bookmarkChildren(folder).map((n) => n.title),
        folder: s.searchBookmarks('Reading list').length,
        history: s.history().map((v) => v.url),
        password: s.revealPassword(pw, 'password'),
        keys: s.keys().map((k) => k.name),
        workspaces: s.savedWorkspaces().map((w) => w.name),
        tabsOfB: Object.values(s.deviceLayouts()).flatMap((l) => l.windows.flatMap((w) => w.tabs.map((t) => t.title))),
      };
    }, ids);
    check(seen.children.includes('Rust') && seen.children.includes('yrs'), `moved: ${JSON.stringify(seen)}`);
    check(seen.folder === 1, 'renamed');
    check(!seen.history.includes('https://secret.example/private') && seen.history.includes('https://www.rust-lang.org/learn'), 'history deletion');
    check(seen.password === 'changed-on-B', 'password field');
    check(seen.keys.includes('SSH laptop') && seen.workspaces.includes('Research'), 'keys and workspaces');
    check(seen.tabsOfB.includes('News on B'), 'B\'s tabs on A');
    await view(b, 'workspaces');
    await shot(b, '03-B-workspaces');
    await view(a, 'bookmarks');
    await shot(a, '04-A-bookmarks');
    // Edit-to-appearance latency, A → B.
    const times = [];
    for (let k = 0; k < 10; k++) {
      const url = `https://latency.example/${k}`;
      const started = Date.now();
      await call(a, (url) => window.kathon.addBookmark({ parent: 'other', title: 'latency', url }), url);
      await until('the edit on B', () => call(b, (url) => window.kathon.searchBookmarks(url).length === 1, url), 30_000);
      times.push(Date.now() - started);
    }
    times.sort((x, y) => x - y);
    figures.push(`edit on A → visible on B: median ${times[5]} ms, max ${times[9]} ms (10 edits, polled every 100 ms)`);
  });

  await test('edits made while the LAN is cut merge when it is joined: no cycle, no duplicate, both fields kept', async () => {
    const ids = await call(a, () => {
      const s = window.kathon;
      const x = s.addBookmark({ parent: 'menu', kind: 'folder', title: 'Folder X' });
      const y = s.addBookmark({ parent: 'menu', kind: 'folder', title: 'Folder Y' });
      const pw = s.addPassword({ origin: 'https://bank.example', username: 'old-user', password: 'old-pass' });
      return { x, y, pw };
    }, null);
    await converged([a, b], 'the folders and the entry on both');
    lan.link(A, false);
    await call(a, ({ x, y, pw }) => {
      window.kathon.moveBookmark(x, y); // X into Y on A
      window.kathon.updatePassword(pw, { username: 'new-user-from-A' });
      window.kathon.addBookmark({ parent: 'toolbar', title: 'made offline on A', url: 'https://offline-a.example/' });
    }, ids);
    await call(b, ({ x, y, pw }) => {
      window.kathon.moveBookmark(y, x); // Y into X on B, at the same time
      window.kathon.updatePassword(pw, { password: 'new-pass-from-B' });
      window.kathon.addBookmark({ parent: 'toolbar', title: 'made offline on B', url: 'https://offline-b.example/' });
    }, ids);
    await shot(b, '05-B-while-cut');
    await new Promise((r) => setTimeout(r, 3000));
    lan.link(A, true);
    await converged([a, b], 'the halves to merge after the LAN is joined', 120_000);
    const result = await call(a, ({ x, y, pw }) => {
      const s = window.kathon;
      const all = s.searchBookmarks('Folder ');
      const parentOf = (id) => all.find((n) => n.id === id)?.parent;
      return {
        folders: all.filter((n) => n.kind === 'folder').map((n) => n.title).sort(),
        xInY: parentOf(x) === y,
        yInX: parentOf(y) === x,
        entry: s.passwords().find((p) => p.id === pw),
        password: s.revealPassword(pw, 'password'),
        offline: s.searchBookmarks('made offline').length,
      };
    }, ids);
    check(JSON.stringify(result.folders) === JSON.stringify(['Folder X', 'Folder Y']), `nothing duplicated: ${JSON.stringify(result.folders)}`);
    check(!(result.xInY && result.yInX), 'no cycle');
    check(result.entry.username === 'new-user-from-A' && result.password === 'new-pass-from-B', `both fields kept: ${JSON.stringify(result)}`);
    check(result.offline === 2, 'both offline additions');
    await view(a, 'bookmarks');
    await shot(a, '06-A-after-merge');
  });

  await test('fresh browser↔browser connections across machines come up every time (reloads)', async () => {
    const n = Number(process.env.KATHON_E2E_RECONNECTS ?? 20);
    const times = [];
    for (let k = 0; k < n; k++) {
      const started = Date.now();
      await Promise.all([a.reload(), b.reload()]);
      await Promise.all([a, b].map((p) => p.waitForFunction(() => window.kathon !== undefined, null, { timeout: 30_000 })));
      await until(`connection ${k + 1} of ${n}`, async () => (await connected(a)) > 0 && (await connected(b)) > 0, 60_000);
      times.push(Date.now() - started);
    }
    await converged([a, b], 'A and B after the reloads (IndexedDB kept everything)');
    times.sort((x, y) => x - y);
    figures.push(`browser↔browser across namespaces: ${n}/${n} reloads reconnected; reload → connected median ${times[Math.floor(n / 2)]} ms, max ${times[n - 1]} ms`);
  });

  await test('restarting a bridge mid-sync loses nothing; time from a bridge start to the first change synced', async () => {
    let html = '<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n';
    for (let k = 0; k < 1500; k++) html += `<DT><A HREF="https://bulk.example/${k}">bulk ${k}</A>\n`;
    html += '</DL><p>\n';
    await call(a, (html) => window.kathon.importBookmarksHtml(html), html);
    await bridges[B].stop(); // mid-sync
    await call(a, () => window.kathon.addBookmark({ parent: 'toolbar', title: 'while B\'s bridge was down', url: 'https://first-after-restart.example/' }));
    const started = Date.now();
    await startBridge(B);
    await until('the first change on B after its bridge started', () =>
      call(b, () => window.kathon.searchBookmarks('first-after-restart').length === 1), 60_000);
    figures.push(`second device's bridge started → first change synced: ${Date.now() - started} ms (the page reconnects to its bridge within 2 s)`);
    await converged([a, b], 'the bulk import on B', 120_000);
    const counts = await call(b, () => window.kathon.counts());
    check(counts.bookmarks >= 1500, `bulk import arrived: ${JSON.stringify(counts)}`);
  });

  await test('with its bridge stopped the page still opens from its service worker, and imports a file', async () => {
    await call(b, () => navigator.serviceWorker.ready.then(() => true));
    const before = await call(b, () => window.kathon.counts());
    await bridges[B].stop(); // the bridge serves the page: from now on only the cache does
    await b.reload();
    await b.waitForFunction(() => window.kathon !== undefined, null, { timeout: 30_000 });
    const after = await call(b, () => window.kathon.counts());
    check(after.bookmarks === before.bookmarks, `the store opened offline with its data: ${JSON.stringify({ before, after })}`);
    // The import/export module was never fetched on this page: it comes from the cache too.
    const html = '<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n<DT><A HREF="https://imported-offline.example/">imported offline</A>\n</DL><p>\n';
    const report = await call(b, (html) => window.kathon.importBookmarksHtml(html), html);
    check(report.bookmarksAdded === 1, `import offline: ${JSON.stringify(report)}`);
    await startBridge(B);
    await until('the offline import on A', () => call(a, () => window.kathon.searchBookmarks('imported offline').length === 1), 60_000);
  });

  await test('a man-in-the-middle bridge gets no session, and the page says why', async () => {
    // A and B's bridges stop hearing each other (different discovery ports); the only path
    // between them is a malicious bridge on machine M that rewrites their signaling.
    await bridges[A].stop();
    await bridges[B].stop();
    await startBridge(A, ['--discovery-port', '17201']);
    await startBridge(B, ['--discovery-port', '17202']);
    await Promise.all([a.reload(), b.reload()]);
    const mitm = lan.spawnIn(M, resolve(tamperBin), [lan.addr(M), `${lan.addr(A)}:7711`, `${lan.addr(B)}:7711`], join(work, 'tamper.log'));
    await until('the page to say a connection was tampered with', () =>
      a.evaluate(() => document.querySelector('#problems')?.textContent ?? '').then((t) => t.includes('tampering')), 90_000);
    await shot(a, '07-A-man-in-the-middle-refused');
    for (let k = 0; k < 10; k++) {
      check((await connected(a)) === 0 && (await connected(b)) === 0, 'no session through the man in the middle');
      await new Promise((r) => setTimeout(r, 300));
    }
    mitm.kill('SIGKILL');
    await bridges[A].stop();
    await bridges[B].stop();
    await startBridge(A);
    await startBridge(B);
    await Promise.all([a.reload(), b.reload()]);
    await until('A and B to reconnect on the honest LAN', async () => (await connected(a)) > 0 && (await connected(b)) > 0, 60_000);
  });

  await test('a revoked device\'s changes are refused, and it cannot read passwords written after the rotation', async () => {
    c = await openPage(C, 'C');
    await pairThroughPages(a, c, 'Machine C');
    await converged([a, b, c], 'C to catch up', 120_000);
    const cDevice = await call(c, () => window.kathon.status().deviceId);
    await view(a, 'devices');
    await a.click(`#device-list li[data-id="${cDevice}"] button.danger`);
    await shot(a, '08-A-devices-after-revoke');
    await until('B to learn of the revocation', () =>
      call(b, (d) => window.kathon.devices().find((x) => x.id === d)?.revoked === true, cDevice), 60_000);
    await call(c, () => window.kathon.addBookmark({ parent: 'toolbar', title: 'written by C after revocation', url: 'https://revoked.example/' }));
    const secretId = await call(a, () => window.kathon.addPassword({ origin: 'https://after-rotation.example', username: 'u', password: 'never-for-C' }));
    await converged([a, b], 'A and B');
    await new Promise((r) => setTimeout(r, 5000));
    check((await call(a, () => window.kathon.searchBookmarks('revoked.example').length)) === 0, 'C\'s new change is refused on A');
    check((await call(b, () => window.kathon.searchBookmarks('revoked.example').length)) === 0, 'C\'s new change is refused on B');
    const cRead = await call(c, (id) => {
      try {
        return window.kathon.revealPassword(id, 'password');
      } catch (e) {
        return `refused: ${e.message}`;
      }
    }, secretId);
    check(cRead !== 'never-for-C', `C cannot read the new password: ${cRead}`);
    await until('C\'s page to say it was removed', () =>
      c.evaluate(() => document.querySelector('#problems')?.textContent ?? '').then((t) => t.includes('removed (revoked)')), 30_000);
    await shot(c, '09-C-revoked');
  });

  for (const p of [a, b, c]) check(p.errors.length === 0, p.errors.join('\n'));
  console.log('\nfigures:');
  for (const f of figures) console.log(`  ${f}`);
  writeFileSync(join(shots, 'figures.txt'), `${figures.join('\n')}\n`);
  summary();
} catch (e) {
  failed = true;
  console.error(`\nlogs kept in ${work}; screenshots in ${shots}`);
  for (const line of consoleLines.slice(-60)) console.error(line);
  throw e;
} finally {
  for (const ctx of contexts) await ctx.close().catch(() => {});
  lan.down();
  if (!failed) rmSync(work, { recursive: true, force: true });
}

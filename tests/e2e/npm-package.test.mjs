// The npm package as a web developer uses it: `npm pack` it, install the tarball into a fresh
// project, build a page with Vite, and drive it in Debian's Chromium. Also: the same package as
// plain ES modules with no bundler, and the quota path (a tiny quota set through the DevTools
// protocol): the error reaches the app, the change stays queued, and nothing is lost.
//
// The bundler flavour (`kathon-sync/bundler`) is built with webpack 5, the bundler it is for.
//
// Usage: node npm-package.test.mjs <path to pkg/>
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { browser, check, serve, summary, test, watch } from './lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(process.argv[2] ?? join(here, '../../pkg'));
const work = mkdtempSync(join(tmpdir(), 'kathon-npm-'));
const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'] }).toString();

// In the page (its `store` open and enrolled): bookmarks and passwords through every import and
// export, which run in the import/export module the package loads on first use.
async function filesInPage() {
  const html = '<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n<DT><H3 PERSONAL_TOOLBAR_FOLDER="true">Bar</H3>\n<DL><p>\n<DT><A HREF="https://imported.example/">Imported &amp; kept</A>\n</DL><p>\n</DL><p>\n';
  const report = await store.importBookmarksHtml(html);
  const exported = await store.exportBookmarksHtml();
  const chromium = await store.exportChromiumBookmarks();
  const again = await store.importChromiumBookmarks(chromium);
  const passwords = await store.importPasswordsCsv('name,url,username,password,note\nbank,https://bank.example/,ada,"s3cret ""quoted""",\n');
  const csv = await store.exportPasswordsCsv();
  let refused;
  try {
    await store.importBookmarksHtml('<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n<DT><A NAME="x">no address</A>\n</DL><p>\n');
  } catch (e) {
    refused = { isError: e instanceof Error, name: e.name, code: e.code, message: e.message };
  }
  const toolbar = JSON.parse(chromium).roots.bookmark_bar.children.map((c) => c.name);
  return { report, exported, toolbar, again, passwords, csv, refused };
}

function checkFiles(files) {
  const f = JSON.stringify(files);
  check(files.report.bookmarksAdded === 1, `import report: ${f}`);
  check(files.exported.includes('<A HREF="https://imported.example/">Imported &amp; kept</A>'), `HTML export: ${f}`);
  check(files.toolbar.includes('Imported & kept'), `Chromium export: ${f}`);
  check(files.again.bookmarksAdded + files.again.foldersAdded === 0, `re-importing the export adds nothing: ${f}`);
  check(files.passwords.passwordsAdded === 1 && files.csv.includes('https://bank.example/,ada,"s3cret ""quoted"""'), `passwords: ${f}`);
  const r = files.refused;
  check(r?.isError && r.name === 'KathonInputError' && r.code === 'import' && /line 3/.test(r.message), `malformed file: ${f}`);
}

/** `warmUp()` runs its worker to the end (the worker found the package's module in this build)
 * and deletes the throwaway store's database. */
async function checkWarmUp(page) {
  const outcome = await page.evaluate(async () => {
    const ran = await window.warmUp(200);
    const left = (await indexedDB.databases()).map((d) => d.name).filter((n) => n.includes('warm-up'));
    return { ran, left };
  });
  check(outcome.ran === true && outcome.left.length === 0, `warmUp: ${JSON.stringify(outcome)}`);
}

const formatsRequests = (urls) => urls.filter((u) => /kathon_formats[^/]*\.wasm/.test(u)).length;

const wasmRequests = (urls) => urls.filter((u) => /\.wasm$/.test(new URL(u).pathname)).length;

// The bundler flavour: no initialiser, the module is ready once imported.
const WEBPACK_APP = `
import { KathonStore, warmUp } from 'kathon-sync/bundler';
window.warmUp = warmUp;
const store = await KathonStore.open('webpack-app');
window.store = store;
if (!store.status().enrolled) store.createIdentity('webpack test');
window.ready = true;
`;

/** Builds `app/main.js` with webpack 5 (from the tests' own node_modules) into `app/dist/`. */
async function webpackBuild(app) {
  const webpack = createRequire(import.meta.url)('webpack');
  const compiler = webpack({
    mode: 'production',
    context: app,
    entry: './main.js',
    output: { path: join(app, 'dist'), publicPath: '/', clean: true },
    experiments: { asyncWebAssembly: true },
    performance: { hints: false },
  });
  const stats = await new Promise((resolveBuild, reject) => compiler.run((e, s) => (e ? reject(e) : resolveBuild(s))));
  await new Promise((r) => compiler.close(r));
  const { errors, warnings } = stats.toJson({ all: false, errors: true, warnings: true });
  check(errors.length === 0, `webpack errors: ${errors.map((e) => e.message).join('\n')}`);
  check(warnings.length === 0, `webpack warnings: ${warnings.map((e) => e.message).join('\n')}`);
  writeFileSync(join(app, 'dist/index.html'), '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>app</title><script src="/main.js"></script>');
}

const APP = `
import init, { KathonStore, warmUp } from 'kathon-sync';
await init();
window.warmUp = warmUp;
const store = await KathonStore.open('vite-app');
window.store = store;
if (!store.status().enrolled) store.createIdentity('vite test');
window.ready = true;
`;

/** A fresh project in `work/<name>` with the packed package installed from its tarball. */
function installApp(name) {
  const app = join(work, name);
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name, private: true, type: 'module' }));
  run('npm', ['install', '--no-audit', '--no-fund', '--silent', join(work, packed())], app);
  return app;
}

/** Adds a bookmark and flushes, reloads the page, and checks IndexedDB kept it. */
async function bookmarkSurvivesReload(page, title, url) {
  const id = await page.evaluate(async ([title, url]) => {
    const id = store.addBookmark({ title, url });
    await store.flush();
    return id;
  }, [title, url]);
  await page.reload();
  await page.waitForFunction(() => window.ready === true, null, { timeout: 20_000 });
  const titles = await page.evaluate(() => store.bookmarkChildren('toolbar').map((n) => [n.id, n.title]));
  check(JSON.stringify(titles) === JSON.stringify([[id, title]]), `after reload: ${JSON.stringify(titles)}`);
}

/** `npm pack`s the package once; the tarball's path. */
function packed() {
  let tarball = readdirSync(work).find((f) => f.endsWith('.tgz'));
  if (!tarball) {
    run('npm', ['pack', pkg, '--pack-destination', work, '--silent'], work);
    tarball = readdirSync(work).find((f) => f.endsWith('.tgz'));
  }
  check(tarball, 'npm pack made a tarball');
  return tarball;
}

try {
  await test('npm install of the packed package into a fresh Vite project builds and runs', async () => {
    const app = installApp('app');
    const installed = readdirSync(join(app, 'node_modules/kathon-sync'));
    for (const file of ['README.md', 'CHANGELOG.md', 'kathon_wasm_bg.wasm', 'kathon_formats_bg.wasm', 'snippets', 'bundler']) {
      check(installed.includes(file), `the package carries ${file}: ${installed.join(' ')}`);
    }
    writeFileSync(join(app, 'index.html'), '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>app</title><script type="module" src="./main.js"></script>');
    writeFileSync(join(app, 'main.js'), APP);
    run(process.execPath, [join(here, 'node_modules/vite/bin/vite.js'), 'build', '--logLevel', 'warn'], app);
    const server = await serve(join(app, 'dist'));
    const context = await browser(join(work, 'profile-vite'));
    try {
      const page = await context.newPage();
      const errors = watch(page, 'vite page');
      const requests = [];
      page.on('request', (r) => requests.push(r.url()));
      await page.goto(server.url);
      await page.waitForFunction(() => window.ready === true, null, { timeout: 20_000 });
      await bookmarkSurvivesReload(page, 'made in Vite', 'https://vite.dev/');
      // Errors are real Error objects with a name and a code.
      const error = await page.evaluate(() => {
        try {
          store.moveBookmark('not-an-id', 'toolbar');
        } catch (e) {
          return { isError: e instanceof Error, name: e.name, code: e.code };
        }
      });
      check(error.isError && error.name === 'KathonInputError' && error.code === 'invalid', JSON.stringify(error));
      // The import/export module: not fetched until the first import, then fetched once.
      check(formatsRequests(requests) === 0, `fetched before any import: ${requests.join(' ')}`);
      checkFiles(await page.evaluate(filesInPage));
      check(formatsRequests(requests) === 1, `fetched ${formatsRequests(requests)} times: ${requests.join(' ')}`);
      await checkWarmUp(page);
      check(errors.length === 0, errors.join('\n'));
    } finally {
      await context.close();
      await server.close();
    }
  });

  await test('the bundler flavour builds with webpack 5 and runs, its import/export module in a chunk of its own', async () => {
    const app = installApp('webpack-app');
    writeFileSync(join(app, 'main.js'), WEBPACK_APP);
    await webpackBuild(app);
    const server = await serve(join(app, 'dist'));
    const context = await browser(join(work, 'profile-webpack'));
    try {
      const page = await context.newPage();
      const errors = watch(page, 'webpack page');
      const requests = [];
      page.on('request', (r) => requests.push(r.url()));
      await page.goto(server.url);
      await page.waitForFunction(() => window.ready === true, null, { timeout: 20_000 });
      await bookmarkSurvivesReload(page, 'made with webpack', 'https://webpack.js.org/');
      // webpack names the modules by hash: the store's is the only one fetched per page load
      // until the first import, which fetches the second once.
      check(wasmRequests(requests) === 2, `.wasm fetched before any import (two page loads): ${requests.join(' ')}`);
      checkFiles(await page.evaluate(filesInPage));
      check(wasmRequests(requests) === 3, `.wasm fetched after the imports: ${requests.join(' ')}`);
      await checkWarmUp(page);
      check(errors.length === 0, errors.join('\n'));
    } finally {
      await context.close();
      await server.close();
    }
  });

  await test('the package works as plain ES modules, without a bundler', async () => {
    const site = join(work, 'plain');
    cpSync(pkg, join(site, 'pkg'), { recursive: true });
    writeFileSync(
      join(site, 'index.html'),
      `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><script type="module">
        import init, { KathonStore, version, warmUp } from './pkg/kathon_wasm.js';
        await init();
        window.warmUp = warmUp;
        const store = await KathonStore.open('plain');
        store.createIdentity('plain page');
        store.recordVisit({ url: 'https://example.org/', title: 'Example' });
        await store.flush();
        window.store = store;
        window.result = { version: version(), visits: store.history().length };
      </script>`,
    );
    // A store in a dedicated worker: it stores, and refuses to sync (no WebRTC there).
    writeFileSync(
      join(site, 'worker.js'),
      `import init, { KathonStore } from './pkg/kathon_wasm.js';
      await init();
      const store = await KathonStore.open('in-a-worker');
      store.createIdentity('worker');
      store.addBookmark({ title: 'from a worker', url: 'https://worker.example/' });
      await store.flush();
      let refused;
      try {
        store.connectBridge('ws://127.0.0.1:9/ws');
      } catch (e) {
        refused = { isError: e instanceof Error, name: e.name, code: e.code };
      }
      store.close();
      const again = await KathonStore.open('in-a-worker');
      self.postMessage({ titles: again.bookmarkChildren('toolbar').map((b) => b.title), refused });`,
    );
    const server = await serve(site);
    const context = await browser(join(work, 'profile-plain'));
    try {
      const page = await context.newPage();
      const errors = watch(page, 'plain page');
      await page.goto(server.url);
      await page.waitForFunction(() => window.result, null, { timeout: 20_000 });
      const result = await page.evaluate(() => window.result);
      check(result.visits === 1 && /^\d+\.\d+\.\d+$/.test(result.version), JSON.stringify(result));
      const inWorker = await page.evaluate(
        () =>
          new Promise((resolve) => {
            const worker = new Worker('./worker.js', { type: 'module' });
            worker.onmessage = ({ data }) => resolve(data);
            worker.onerror = (e) => resolve({ error: e.message });
          }),
      );
      const r = inWorker.refused;
      check(
        JSON.stringify(inWorker.titles) === '["from a worker"]' && r?.isError && r.name === 'KathonNetworkError' && r.code === 'webrtc',
        `a store in a worker: ${JSON.stringify(inWorker)}`,
      );
      // An import/export module that cannot be fetched: a clear error, and the next call loads it.
      await page.route('**/kathon_formats_bg.wasm', (route) => route.abort());
      const unavailable = await page.evaluate(() =>
        store.exportBookmarksHtml().then(
          () => null,
          (e) => ({ isError: e instanceof Error, name: e.name, code: e.code }),
        ),
      );
      check(unavailable?.isError && unavailable.name === 'KathonStateError' && unavailable.code === 'unavailable', JSON.stringify(unavailable));
      await page.unroute('**/kathon_formats_bg.wasm');
      checkFiles(await page.evaluate(filesInPage));
      await checkWarmUp(page);
      // The only errors: the one aborted fetch, as the test wanted.
      const aborted = errors.filter((e) => /Failed to load resource: net::ERR_FAILED/.test(e));
      const unexpected = errors.filter((e) => !aborted.includes(e));
      check(aborted.length <= 1 && unexpected.length === 0, errors.join('\n'));
    } finally {
      await context.close();
      await server.close();
    }
  });

  await test('a quota error reaches the app, the change stays queued, and nothing is lost', async () => {
    const site = join(work, 'quota');
    cpSync(pkg, join(site, 'pkg'), { recursive: true });
    writeFileSync(
      join(site, 'index.html'),
      `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><script type="module">
        import init, { KathonStore } from './pkg/kathon_wasm.js';
        await init();
        window.store = await KathonStore.open('quota');
        window.errors = [];
        store.on('error', (e) => errors.push(e));
        if (!store.status().enrolled) store.createIdentity('quota test');
        await store.flush();
        window.ready = true;
      </script>`,
    );
    const server = await serve(site);
    const context = await browser(join(work, 'profile-quota'));
    try {
      const page = await context.newPage();
      const errors = watch(page, 'quota page');
      // A quota far below what the coming change needs (set before the origin first stores
      // anything, which is when Chromium applies it).
      const cdp = await context.newCDPSession(page);
      await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.url, quotaSize: 64 * 1024 });
      await page.goto(server.url);
      await page.waitForFunction(() => window.ready === true, null, { timeout: 20_000 });
      const outcome = await page.evaluate(async () => {
        // Random titles: local changes are committed in groups, and Chromium compresses large
        // IndexedDB values, so repetitive ones would fit the quota.
        const noise = () => Array.from(crypto.getRandomValues(new Uint8Array(100)), (b) => b.toString(16).padStart(2, '0')).join('');
        for (let i = 0; i < 400; i += 1) store.addBookmark({ title: `bookmark ${i} ${noise()}`, url: `https://example.org/${i}` });
        try {
          await store.flush();
          return { flushed: true };
        } catch (e) {
          return { flushed: false, name: e.name, code: e.code, events: window.errors.map((x) => x.code) };
        }
      });
      check(!outcome.flushed && outcome.name === 'KathonStorageError' && outcome.code === 'quota', JSON.stringify(outcome));
      check(outcome.events.includes('quota'), `error events: ${JSON.stringify(outcome.events)}`);
      // Room again: the queued change commits by itself.
      await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.url });
      let flushed = false;
      for (let i = 0; i < 60 && !flushed; i += 1) {
        flushed = await page.evaluate(() => store.flush().then(() => true, () => false));
        if (!flushed) await page.waitForTimeout(500);
      }
      check(flushed, 'the queued change committed once there was room');
      await page.reload();
      await page.waitForFunction(() => window.ready === true, null, { timeout: 20_000 });
      const count = await page.evaluate(() => store.bookmarkChildren('toolbar').length);
      check(count === 400, `after the quota was lifted and the page reloaded: ${count} of 400 bookmarks`);
      // The page saw the storage errors, as the test wanted; nothing else.
      const unexpected = errors.filter((e) => !/quota|Quota|storage/.test(e));
      check(unexpected.length === 0, unexpected.join('\n'));
    } finally {
      await context.close();
      await server.close();
    }
  });
  summary();
} finally {
  rmSync(work, { recursive: true, force: true });
}

// The same workloads done with Kathon Sync's npm package, with Yjs + y-indexeddb and with
// Automerge (persisted to IndexedDB the way automerge-repo does it: one incremental save per
// change). `run.mjs` calls these from Playwright, one fresh page (or browser) per measurement.
import init, { KathonStore } from 'kathon-sync';
import * as Y from 'yjs';
import { IndexeddbPersistence } from 'y-indexeddb';
import * as Automerge from '@automerge/automerge/slim';
import { automergeWasmBase64 } from '@automerge/automerge/automerge.wasm.base64';

const now = () => performance.now();

/** Runs `fn(i)` for i < n, each call in its own task: edits arriving one at a time. */
function oneTaskEach(n, fn) {
  return new Promise((resolve, reject) => {
    const channel = new MessageChannel();
    let i = 0;
    channel.port1.onmessage = () => {
      try {
        fn(i);
      } catch (e) {
        reject(e);
        return;
      }
      i += 1;
      if (i < n) channel.port2.postMessage(0);
      else resolve();
    };
    channel.port2.postMessage(0);
  });
}

/** Resolves once every readwrite transaction started on `db` before it has completed. */
function idbBarrier(db, store) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction([store], 'readwrite');
    tx.oncomplete = () => resolve();
    tx.onerror = tx.onabort = () => reject(tx.error);
  });
}

function openRaw(name, upgrade) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(name, 1);
    request.onupgradeneeded = () => upgrade?.(request.result);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** Sum of the byte lengths of every value in `store` of database `name`. */
async function storedBytes(name, store) {
  const db = await openRaw(name);
  try {
    const values = await new Promise((resolve, reject) => {
      const request = db.transaction([store]).objectStore(store).getAll();
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    let bytes = 0;
    for (const v of values) bytes += v?.byteLength ?? v?.length ?? 0;
    return { records: values.length, bytes };
  } finally {
    db.close();
  }
}

function heap() {
  globalThis.gc?.();
  return performance.memory?.usedJSHeapSize ?? 0;
}

const id = (i) => `b${i}`;
const url = (i) => `https://example${i % 97}.org/articles/${i}/a-reasonably-long-path?ref=toolbar`;
const title = (i) => `Bookmark number ${i}: an article worth reading`;

// ---------------------------------------------------------------------------------------------
// Local write throughput: n bookmark adds, one per task, until all are durable.
// ---------------------------------------------------------------------------------------------

const write = {
  async kathon(name, n) {
    await init();
    const store = await KathonStore.open(name);
    store.createIdentity('bench');
    await store.flush();
    let cpu = 0;
    const t0 = now();
    await oneTaskEach(n, (i) => {
      const c = now();
      store.addBookmark({ title: title(i), url: url(i), parent: 'toolbar' });
      cpu += now() - c;
    });
    await store.flush();
    const ms = now() - t0;
    const check = store.bookmarkChildren('toolbar').length;
    store.close();
    return { ms, cpuMs: cpu, check };
  },
  async yjs(name, n) {
    const doc = new Y.Doc();
    const persistence = new IndexeddbPersistence(name, doc);
    await persistence.whenSynced;
    const bookmarks = doc.getMap('bookmarks');
    let cpu = 0;
    const t0 = now();
    await oneTaskEach(n, (i) => {
      const c = now();
      doc.transact(() => {
        const node = new Y.Map();
        node.set('title', title(i));
        node.set('url', url(i));
        node.set('parent', 'toolbar');
        node.set('position', i.toString(36));
        bookmarks.set(id(i), node);
      });
      cpu += now() - c;
    });
    await idbBarrier(persistence.db, 'updates');
    const ms = now() - t0;
    const check = bookmarks.size;
    await persistence.destroy();
    return { ms, cpuMs: cpu, check };
  },
  async automerge(name, n) {
    await Automerge.initializeBase64Wasm(automergeWasmBase64);
    const db = await openRaw(name, (db) => db.createObjectStore('chunks', { autoIncrement: true }));
    let doc = Automerge.from({ bookmarks: {} });
    let cpu = 0;
    const t0 = now();
    await oneTaskEach(n, (i) => {
      const c = now();
      doc = Automerge.change(doc, (d) => {
        d.bookmarks[id(i)] = { title: title(i), url: url(i), parent: 'toolbar', position: i.toString(36) };
      });
      const chunk = Automerge.saveIncremental(doc);
      cpu += now() - c;
      db.transaction(['chunks'], 'readwrite').objectStore('chunks').add(chunk);
    });
    await idbBarrier(db, 'chunks');
    const ms = now() - t0;
    const check = Object.keys(doc.bookmarks).length;
    db.close();
    return { ms, cpuMs: cpu, check };
  },
};

// ---------------------------------------------------------------------------------------------
// The realistic profile: load it, then (in a fresh browser) open it cold until the first query.
// ---------------------------------------------------------------------------------------------

const escapeHtml = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function netscape(profile) {
  const out = ['<!DOCTYPE NETSCAPE-Bookmark-file-1>', '<META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=UTF-8">', '<TITLE>Bookmarks</TITLE>', '<H1>Bookmarks</H1>', '<DL><p>'];
  const nodes = (list) => {
    for (const n of list) {
      if (n.separator) out.push('<HR>');
      else if (n.children) {
        out.push(`<DT><H3>${escapeHtml(n.title)}</H3>`, '<DL><p>');
        nodes(n.children);
        out.push('</DL><p>');
      } else out.push(`<DT><A HREF="${escapeHtml(n.url)}">${escapeHtml(n.title)}</A>`);
    }
  };
  for (const root of profile.bookmarks) {
    const marker = { toolbar: ' PERSONAL_TOOLBAR_FOLDER="true"', other: ' UNFILED_BOOKMARKS_FOLDER="true"' }[root.root];
    if (marker) {
      out.push(`<DT><H3${marker}>${root.root}</H3>`, '<DL><p>');
      nodes(root.children);
      out.push('</DL><p>');
    } else nodes(root.children);
  }
  out.push('</DL><p>');
  return out.join('\n');
}

const csvField = (s) => `"${String(s).replace(/"/g, '""')}"`;
function passwordCsv(profile) {
  const rows = ['name,url,username,password,note'];
  for (const p of profile.passwords) rows.push([p.origin, p.origin, p.username, p.password, p.notes].map(csvField).join(','));
  return rows.join('\n');
}

/** Yjs shape of the same data: one Y.Map per bookmark node (title, url, parent, position). */
function yjsApply(doc, profile) {
  const bookmarks = doc.getMap('bookmarks');
  const visits = doc.getArray('visits');
  const passwords = doc.getMap('passwords');
  let next = 0;
  doc.transact(() => {
    const nodes = (list, parent) =>
      list.forEach((n, index) => {
        const key = `n${next++}`;
        const node = new Y.Map();
        node.set('parent', parent);
        node.set('position', index.toString(36).padStart(4, '0'));
        if (n.separator) node.set('kind', 'separator');
        else {
          node.set('title', n.title);
          if (n.children) node.set('kind', 'folder');
          else node.set('url', n.url);
        }
        bookmarks.set(key, node);
        if (n.children) nodes(n.children, key);
      });
    for (const root of profile.bookmarks) nodes(root.children, root.root);
    visits.push(profile.visits.map(([u, t, at, tr]) => ({ url: u, title: t, at, transition: tr })));
    profile.passwords.forEach((p, i) => {
      const entry = new Y.Map();
      for (const [k, v] of Object.entries(p)) entry.set(k, v);
      passwords.set(`p${i}`, entry);
    });
    doc.getMap('layouts').set('bench', profile.layout);
  });
}

function automergeShape(profile) {
  const bookmarks = {};
  let next = 0;
  const nodes = (list, parent) =>
    list.forEach((n, index) => {
      const key = `n${next++}`;
      bookmarks[key] = n.separator
        ? { parent, position: index, kind: 'separator' }
        : n.children
          ? { parent, position: index, kind: 'folder', title: n.title }
          : { parent, position: index, title: n.title, url: n.url };
      if (n.children) nodes(n.children, key);
    });
  for (const root of profile.bookmarks) nodes(root.children, root.root);
  return {
    bookmarks,
    visits: profile.visits.map(([u, t, at, tr]) => ({ url: u, title: t, at, transition: tr })),
    passwords: Object.fromEntries(profile.passwords.map((p, i) => [`p${i}`, p])),
    layouts: { bench: profile.layout },
  };
}

const load = {
  async kathon(name, profile) {
    await kathonInit();
    const heap0 = heap();
    const wasm0 = wasmBytes();
    const t0 = now();
    const store = await KathonStore.open(name);
    store.createIdentity('bench');
    store.importBookmarksHtml(netscape(profile));
    store.recordVisits(profile.visits.map(([u, t, at, tr]) => ({ url: u, title: t, visitedAt: at, transition: tr })));
    store.importPasswordsCsv(passwordCsv(profile));
    store.setDeviceLayout(profile.layout);
    await store.flush();
    const ms = now() - t0;
    const counts = store.counts();
    const memory = { jsHeap: heap() - heap0, wasm: wasmBytes() - wasm0, wasmTotal: wasmBytes() };
    window.__keep = store;
    const stored = await storedBytes(`kathon-sync:${name}`, 'records');
    return { ms, counts, memory, stored };
  },
  async yjs(name, profile) {
    const heap0 = heap();
    const t0 = now();
    const doc = new Y.Doc();
    const persistence = new IndexeddbPersistence(name, doc);
    await persistence.whenSynced;
    yjsApply(doc, profile);
    await idbBarrier(persistence.db, 'updates');
    const ms = now() - t0;
    window.__keep = doc;
    const memory = { jsHeap: heap() - heap0 };
    const encoded = Y.encodeStateAsUpdate(doc).byteLength;
    await persistence.destroy();
    const stored = await storedBytes(name, 'updates');
    return { ms, memory, stored, encoded };
  },
  async automerge(name, profile) {
    await Automerge.initializeBase64Wasm(automergeWasmBase64);
    const heap0 = heap();
    const t0 = now();
    const doc = Automerge.from(automergeShape(profile));
    const bytes = Automerge.save(doc);
    const db = await openRaw(name, (db) => db.createObjectStore('chunks', { autoIncrement: true }));
    db.transaction(['chunks'], 'readwrite').objectStore('chunks').add(bytes);
    await idbBarrier(db, 'chunks');
    db.close();
    const ms = now() - t0;
    window.__keep = doc;
    const memory = { jsHeap: heap() - heap0 };
    const stored = await storedBytes(name, 'chunks');
    return { ms, memory, stored, encoded: bytes.byteLength };
  },
};

let kathonMemory = null;
function wasmBytes() {
  return kathonMemory?.buffer.byteLength ?? 0;
}

const open = {
  async kathon(name) {
    const heap0 = heap();
    const i0 = now();
    const exports = await init();
    kathonMemory = exports.memory;
    const initMs = now() - i0;
    const wasm0 = wasmBytes();
    const t0 = now();
    const store = await KathonStore.open(name);
    const first = store.bookmarkChildren('toolbar').length + store.history(null, 20).length;
    const ms = now() - t0;
    // Resident after opening: the JS heap it added plus the wasm memory it grew (wasm memory
    // never shrinks, so this includes the peak of the load).
    const memory = { jsHeap: heap() - heap0, wasm: wasmBytes() - wasm0 };
    const counts = store.counts();
    store.close();
    return { ms, initMs, first, counts, memory };
  },
  async yjs(name) {
    const heap0 = heap();
    const t0 = now();
    const doc = new Y.Doc();
    const persistence = new IndexeddbPersistence(name, doc);
    await persistence.whenSynced;
    // The same first query: the toolbar's children (Yjs has no index: a scan) and the last 20 visits.
    let toolbar = 0;
    doc.getMap('bookmarks').forEach((node) => {
      if (node.get('parent') === 'toolbar') toolbar += 1;
    });
    const visits = doc.getArray('visits');
    const first = toolbar + visits.slice(Math.max(0, visits.length - 20)).length;
    const ms = now() - t0;
    const memory = { jsHeap: heap() - heap0 };
    window.__keep = doc;
    return { ms, initMs: 0, first, counts: { bookmarks: doc.getMap('bookmarks').size, history: visits.length }, memory };
  },
  async automerge(name) {
    const i0 = now();
    await Automerge.initializeBase64Wasm(automergeWasmBase64);
    const initMs = now() - i0;
    const t0 = now();
    const db = await openRaw(name);
    const chunks = await new Promise((resolve, reject) => {
      const request = db.transaction(['chunks']).objectStore('chunks').getAll();
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    db.close();
    let doc = Automerge.load(chunks[0]);
    for (const c of chunks.slice(1)) doc = Automerge.loadIncremental(doc, c);
    let toolbar = 0;
    for (const node of Object.values(doc.bookmarks)) if (node.parent === 'toolbar') toolbar += 1;
    const first = toolbar + doc.visits.slice(-20).length;
    const ms = now() - t0;
    return { ms, initMs, first, counts: { bookmarks: Object.keys(doc.bookmarks).length, history: doc.visits.length } };
  },
};

async function kathonInit() {
  const exports = await init();
  kathonMemory = exports.memory;
}

window.bench = { write, load, open, kathonInit };
window.benchReady = true;

// The same workloads done with Kathon Sync's npm package, with Yjs + y-indexeddb and with
// Automerge (persisted to IndexedDB the way automerge-repo does it: one incremental save per
// change). `run.mjs` calls these from Playwright, one fresh page (or browser) per measurement.
import init, { KathonStore, warmUp } from 'kathon-sync';
import initFloor, * as floor from 'kathon-bench-wasm';
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

/** The JS heap once it has settled: what the last tasks still held (IndexedDB's results until
 *  their requests and transactions go, for one) is garbage by then. The least of nine readings
 *  (one at once, then eight 250 ms apart), each after a full collection: such memory goes at no
 *  fixed time (after a cold open it went between 50 and 250 ms after the first query in some
 *  rounds and later in others, for both Kathon and Yjs). Until 2026-12-04 this was one reading 50
 *  ms after, which counted Yjs's 15.7 MB and, in some rounds, Kathon's 20.4 MB of such memory. The
 *  same for every library. */
async function settledHeap() {
  let least = heap();
  for (let i = 0; i < 8; i += 1) {
    await new Promise((r) => setTimeout(r, 250));
    least = Math.min(least, heap());
  }
  return least;
}

const id = (i) => `b${i}`;
const url = (i) => `https://example${i % 97}.org/articles/${i}/a-reasonably-long-path?ref=toolbar`;
const title = (i) => `Bookmark number ${i}: an article worth reading`;

// ---------------------------------------------------------------------------------------------
// Local write throughput: n bookmark adds, one per task, until all are durable.
// ---------------------------------------------------------------------------------------------

/** One bookmark as the Yjs bench shapes it: a `Y.Map` in one transaction. */
function yjsAddBookmark(doc, bookmarks, i) {
  doc.transact(() => {
    const node = new Y.Map();
    node.set('title', title(i));
    node.set('url', url(i));
    node.set('parent', 'toolbar');
    node.set('position', i.toString(36));
    bookmarks.set(id(i), node);
  });
}

/** One bookmark as the Automerge bench shapes it: one `change`. */
const automergeAddBookmark = (doc, i) =>
  Automerge.change(doc, (d) => {
    d.bookmarks[id(i)] = { title: title(i), url: url(i), parent: 'toolbar', position: i.toString(36) };
  });

const write = {
  /** `warm`: edits for `warmUp()` in a worker first, awaited (its time is returned, not counted). */
  async kathon(name, n, warm = 0) {
    await init();
    let warmUpMs = null;
    if (warm > 0) {
      const w0 = now();
      if (!(await warmUp(warm))) throw new Error('warmUp() did not run');
      warmUpMs = now() - w0;
    }
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
    // How many signed envelopes the edits took (group commit shares them).
    const envelopes = store.counts().envelopes;
    store.close();
    return { ms, cpuMs: cpu, check, envelopes, warmUpMs };
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
      yjsAddBookmark(doc, bookmarks, i);
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
      doc = automergeAddBookmark(doc, i);
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

/** Median of `xs`. */
const medianOf = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

// One edit at a time, the page otherwise idle: how long from the call until it is durable (what a
// user's single click costs; group commit trades some of it for throughput).
const latency = {
  async kathon(name, n) {
    await init();
    const store = await KathonStore.open(name);
    store.createIdentity('bench');
    await store.flush();
    const times = [];
    for (let i = 0; i < n; i += 1) {
      await pause(30);
      const t0 = now();
      store.addBookmark({ title: title(i), url: url(i), parent: 'toolbar' });
      await store.flush();
      times.push(now() - t0);
    }
    store.close();
    return { medianMs: medianOf(times), maxMs: Math.max(...times) };
  },
  async yjs(name, n) {
    const doc = new Y.Doc();
    const persistence = new IndexeddbPersistence(name, doc);
    await persistence.whenSynced;
    const bookmarks = doc.getMap('bookmarks');
    const times = [];
    for (let i = 0; i < n; i += 1) {
      await pause(30);
      const t0 = now();
      yjsAddBookmark(doc, bookmarks, i);
      await idbBarrier(persistence.db, 'updates');
      times.push(now() - t0);
    }
    await persistence.destroy();
    return { medianMs: medianOf(times), maxMs: Math.max(...times) };
  },
  async automerge(name, n) {
    await Automerge.initializeBase64Wasm(automergeWasmBase64);
    const db = await openRaw(name, (db) => db.createObjectStore('chunks', { autoIncrement: true }));
    let doc = Automerge.from({ bookmarks: {} });
    const times = [];
    for (let i = 0; i < n; i += 1) {
      await pause(30);
      const t0 = now();
      doc = automergeAddBookmark(doc, i);
      db.transaction(['chunks'], 'readwrite').objectStore('chunks').add(Automerge.saveIncremental(doc));
      await idbBarrier(db, 'chunks');
      times.push(now() - t0);
    }
    db.close();
    return { medianMs: medianOf(times), maxMs: Math.max(...times) };
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
    // Where the load's time goes: each call until it returns, then the wait for what is still
    // being written. The first import includes fetching and compiling the import/export module.
    const phases = {};
    let mark = now();
    const phase = (what) => {
      const t = now();
      phases[what] = t - mark;
      mark = t;
    };
    const t0 = mark;
    const store = await KathonStore.open(name);
    store.createIdentity('bench');
    phase('open');
    // The bench's own inputs (the file's text, the visit objects) are let go once used, so the
    // settled heap below is what the store keeps.
    let html = netscape(profile);
    phase('bookmarksHtmlText');
    await store.importBookmarksHtml(html);
    html = null;
    phase('importBookmarksHtml');
    let visits = profile.visits.map(([u, t, at, tr]) => ({ url: u, title: t, visitedAt: at, transition: tr }));
    phase('visitObjects');
    store.recordVisits(visits);
    visits = null;
    phase('recordVisits');
    await store.importPasswordsCsv(passwordCsv(profile));
    phase('importPasswordsCsv');
    store.setDeviceLayout(profile.layout);
    phase('setDeviceLayout');
    await store.flush();
    phase('flush');
    const ms = now() - t0;
    const counts = store.counts();
    // The import/export module's memory counts too (it was loaded by the first import; wasm
    // memory never shrinks).
    const formats = await (await import('kathon-sync-formats')).default();
    const memory = {
      jsHeap: (await settledHeap()) - heap0,
      wasm: wasmBytes() - wasm0,
      wasmTotal: wasmBytes(),
      formatsWasm: formats.memory.buffer.byteLength,
    };
    window.__keep = store;
    const stored = await storedBytes(`kathon-sync:${name}`, 'records');
    return { ms, counts, memory, stored, phases };
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
    const memory = { jsHeap: (await settledHeap()) - heap0 };
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
    const memory = { jsHeap: (await settledHeap()) - heap0 };
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
    // never shrinks, so this includes the peak of the load); at the first answer, and settled.
    const atFirstQuery = heap() - heap0;
    const memory = { jsHeap: (await settledHeap()) - heap0, jsHeapAtFirstQuery: atFirstQuery, wasm: wasmBytes() - wasm0 };
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
    const atFirstQuery = heap() - heap0;
    const memory = { jsHeap: (await settledHeap()) - heap0, jsHeapAtFirstQuery: atFirstQuery };
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

window.bench = { write, latency, load, open, kathonInit };
window.benchReady = true;

// ---------------------------------------------------------------------------------------------
// WebRTC in the page: channel pairs, chunked messages, flow control.
// ---------------------------------------------------------------------------------------------

const FRAME = 16 * 1024;
const HIGH_WATER = 1 << 20;

function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const timer = setTimeout(resolve, 10_000);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

function opened(dc) {
  return new Promise((resolve, reject) => {
    if (dc.readyState === 'open') return resolve();
    dc.addEventListener('open', () => resolve(), { once: true });
    dc.addEventListener('close', () => reject(new Error('channel closed')), { once: true });
  });
}

/** One negotiated, ordered channel as the Kathon driver opens it (non-trickle, no ICE servers). */
function rtcSide() {
  const pc = new RTCPeerConnection({ iceServers: [] });
  const dc = pc.createDataChannel('kathon', { negotiated: true, id: 0, ordered: true });
  dc.binaryType = 'arraybuffer';
  dc.bufferedAmountLowThreshold = 256 * 1024;
  return { pc, dc };
}

/** Two Chromium peer connections in this page, connected; `connectMs` from creating both to
 *  both channels open. */
async function channelPair() {
  const t0 = now();
  const a = rtcSide();
  const b = rtcSide();
  await a.pc.setLocalDescription(await a.pc.createOffer());
  await gathered(a.pc);
  await b.pc.setRemoteDescription(a.pc.localDescription);
  await b.pc.setLocalDescription(await b.pc.createAnswer());
  await gathered(b.pc);
  await a.pc.setRemoteDescription(b.pc.localDescription);
  await Promise.all([opened(a.dc), opened(b.dc)]);
  return { a, b, connectMs: now() - t0, close: () => (a.pc.close(), b.pc.close()) };
}

async function drained(dc) {
  if (dc.bufferedAmount <= HIGH_WATER) return;
  await new Promise((resolve) => dc.addEventListener('bufferedamountlow', resolve, { once: true }));
}

/** Sends `bytes` as 16 KiB frames after a 4-byte length, waiting while the buffer is full. */
// Messages sent on one channel go one after the other: two in flight at once would interleave
// their chunks.
const sendQueues = new WeakMap();
function sendChunked(dc, bytes) {
  const sent = (sendQueues.get(dc) ?? Promise.resolve()).then(() => sendChunkedNow(dc, bytes));
  sendQueues.set(dc, sent);
  return sent;
}

async function sendChunkedNow(dc, bytes) {
  const head = new Uint8Array(4);
  new DataView(head.buffer).setUint32(0, bytes.byteLength);
  dc.send(head);
  for (let at = 0; at < bytes.byteLength; at += FRAME) {
    await drained(dc);
    dc.send(bytes.subarray(at, Math.min(at + FRAME, bytes.byteLength)));
  }
}

/** Calls `onMessage(bytes)` for each message `sendChunked` sent on `dc`. */
function receiveChunked(dc, onMessage) {
  let want = -1;
  let parts = [];
  let have = 0;
  dc.onmessage = (e) => {
    const chunk = new Uint8Array(e.data);
    if (want < 0) {
      want = new DataView(chunk.buffer, chunk.byteOffset, 4).getUint32(0);
      parts = [];
      have = 0;
    } else {
      parts.push(chunk);
      have += chunk.byteLength;
    }
    if (want >= 0 && have >= want) {
      const out = new Uint8Array(want);
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.byteLength;
      }
      want = -1;
      onMessage(out);
    }
  };
}

/** Bytes per second from `from` to `to`, 16 KiB messages with flow control. */
async function pushThroughput(from, to, bytes) {
  const frame = new Uint8Array(FRAME).fill(7);
  let got = 0;
  const done = new Promise((resolve) => {
    to.onmessage = (e) => {
      got += e.data.byteLength;
      if (got >= bytes) resolve();
    };
  });
  const t0 = now();
  for (let sent = 0; sent < bytes; sent += FRAME) {
    await drained(from);
    from.send(frame);
  }
  await done;
  return (bytes * 1000) / (now() - t0);
}

// ---------------------------------------------------------------------------------------------
// An in-page bridge: routes joins and relays between stores in this page, like the real one.
// ---------------------------------------------------------------------------------------------

function inPageBridge() {
  const endpoints = new Map();
  const deliver = (target, message) => setTimeout(() => target.receive(JSON.stringify(message)), 0);
  return {
    attach(store) {
      const me = { receive: null, topics: [], endpoint: null };
      me.receive = store.attachSignaling((text) => {
        const m = JSON.parse(text);
        if (m.type === 'join') {
          me.endpoint = m.endpoint;
          me.topics = m.topics;
          endpoints.set(m.endpoint, me);
          for (const [endpoint, other] of endpoints) {
            if (endpoint === m.endpoint) continue;
            const topic = other.topics.find((t) => m.topics.includes(t));
            if (!topic) continue;
            deliver(me, { type: 'peer', endpoint, topic });
            deliver(other, { type: 'peer', endpoint: m.endpoint, topic });
          }
        } else if (m.type === 'relay') {
          const target = endpoints.get(m.to);
          if (target) deliver(target, { type: 'relay', from: me.endpoint, to: m.to, payload: m.payload });
        }
      });
    },
    clear() {
      endpoints.clear();
    },
  };
}

const until = async (what, check, ms = 120_000) => {
  const t0 = now();
  for (;;) {
    const v = check();
    if (v) return v;
    if (now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
};

/** Waits for `store` to report an authenticated peer. */
function authenticated(store) {
  return new Promise((resolve) => {
    const off = store.on('peers', (e) => {
      if (e.authenticated) {
        off?.();
        resolve(e);
      }
    });
  });
}

/** Stores `a` (with an identity) and `b` (new) in this page, paired through an in-page bridge. */
async function pairedStores(nameA, nameB) {
  await kathonInit();
  const a = await KathonStore.open(nameA);
  a.createIdentity('bench a');
  const b = await KathonStore.open(nameB);
  const bridge = inPageBridge();
  a.on('pairing', (e) => {
    if (e.request) a.confirmPairing(e.request.peer, true);
  });
  bridge.attach(a);
  bridge.attach(b);
  const { code } = a.newPairingCode();
  b.joinWithCode(code, 'bench b');
  await until('the pairing', () => b.status().enrolled);
  await Promise.all([a.flush(), b.flush()]);
  a.close();
  b.close();
  return bridge;
}

const transport = {
  /** Chromium↔Chromium in this page: connect times over `trials` fresh pairs, then throughput
   *  both ways. */
  async chromium(trials, bytes) {
    const connectMs = [];
    for (let i = 0; i < trials; i += 1) {
      const pair = await channelPair();
      connectMs.push(pair.connectMs);
      pair.close();
    }
    const pair = await channelPair();
    const forward = await pushThroughput(pair.a.dc, pair.b.dc, bytes);
    const back = await pushThroughput(pair.b.dc, pair.a.dc, bytes);
    pair.close();
    return { connectMs, throughput: { forward, back } };
  },
  /** `n` pairings in a row, each of two new stores: the time of each. */
  async pairings(n) {
    const ms = [];
    for (let i = 0; i < n; i += 1) {
      const t0 = now();
      const bridge = await pairedStores(`pa${i}`, `pb${i}`);
      bridge.clear();
      ms.push(now() - t0);
    }
    return { ms };
  },
  /** Two paired Kathon stores in this page: from attaching both to the in-page bridge (join,
   *  offer, answer, ICE, DTLS, SCTP, Hello, Auth both ways) to both authenticated. */
  async kathon(trials) {
    await pairedStores('ta', 'tb');
    const sessionMs = [];
    for (let i = 0; i < trials; i += 1) {
      const a = await KathonStore.open('ta');
      const b = await KathonStore.open('tb');
      const bridge = inPageBridge();
      const t0 = now();
      const both = Promise.all([authenticated(a), authenticated(b)]);
      bridge.attach(a);
      bridge.attach(b);
      await both;
      sessionMs.push(now() - t0);
      a.close();
      b.close();
    }
    return { sessionMs };
  },
  /** The page's side of a native peer: an offer to hand to the native process. */
  async nativeOffer() {
    window.__native = rtcSide();
    const { pc } = window.__native;
    window.__nativeT0 = now();
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    return pc.localDescription.sdp;
  },
  /** Takes the native answer; resolves when the channel is open, with the connect time. */
  async nativeAnswer(sdp) {
    const { pc, dc } = window.__native;
    await pc.setRemoteDescription({ type: 'answer', sdp });
    await opened(dc);
    return now() - window.__nativeT0;
  },
  /** Throughput page→native and native→page over the channel made above. */
  async nativeThroughput(bytes) {
    const { dc } = window.__native;
    const control = (tag, n) => {
      const m = new Uint8Array(9);
      m[0] = tag;
      new DataView(m.buffer).setBigUint64(1, BigInt(n));
      return m;
    };
    const frame = new Uint8Array(FRAME).fill(7);
    // Page → native: announce, send, wait for the native side's receipt.
    const receipt = new Promise((resolve) => {
      dc.onmessage = (e) => {
        if (e.data.byteLength === 9 && new Uint8Array(e.data)[0] === 2) resolve();
      };
    });
    dc.send(control(1, bytes));
    let t0 = now();
    for (let sent = 0; sent < bytes; sent += FRAME) {
      await drained(dc);
      dc.send(frame);
    }
    await receipt;
    const toNative = (bytes * 1000) / (now() - t0);
    // Native → page.
    let got = 0;
    const all = new Promise((resolve) => {
      dc.onmessage = (e) => {
        got += e.data.byteLength;
        if (got >= bytes) resolve();
      };
    });
    t0 = now();
    dc.send(control(3, bytes));
    await all;
    const fromNative = (bytes * 1000) / (now() - t0);
    window.__native.pc.close();
    return { toNative, fromNative };
  },
};

// ---------------------------------------------------------------------------------------------
// Full sync between two in-page peers of the stored realistic profile.
// ---------------------------------------------------------------------------------------------

/** A full sync that did not copy everything must not be reported as a time. */
function sameCounts(lib, got, want) {
  if (got.bookmarks !== want.bookmarks || got.history !== want.history) {
    throw new Error(`${lib} full sync: B holds ${JSON.stringify(got)}, A ${JSON.stringify(want)}`);
  }
}

const fullSync = {
  /** A holds the profile; B is paired but empty. From attaching both (connect + handshake) to
   *  B holding every record durably in IndexedDB, every envelope verified on the way in. */
  async kathon(profile) {
    await pairedStores('fa', 'fb');
    {
      const a = await KathonStore.open('fa');
      await a.importBookmarksHtml(netscape(profile));
      a.recordVisits(profile.visits.map(([u, t, at, tr]) => ({ url: u, title: t, visitedAt: at, transition: tr })));
      await a.importPasswordsCsv(passwordCsv(profile));
      a.setDeviceLayout(profile.layout);
      await a.flush();
      a.close();
    }
    const a = await KathonStore.open('fa');
    const b = await KathonStore.open('fb');
    const want = a.counts();
    const bridge = inPageBridge();
    const t0 = now();
    bridge.attach(a);
    bridge.attach(b);
    await until('B to hold the profile', () => {
      const c = b.counts();
      return c.history === want.history && c.bookmarks === want.bookmarks && c.passwords === want.passwords;
    }, 600_000);
    await b.flush();
    const ms = now() - t0;
    const got = b.counts();
    a.close();
    b.close();
    return { ms, counts: got };
  },
  /** A holds the profile (y-indexeddb); B is empty (y-indexeddb). Over a fresh channel pair:
   *  B sends its state vector, A answers the update B lacks (y-protocols SyncStep1/2), B applies
   *  it and persists it. */
  async yjs(profile) {
    const docA = new Y.Doc();
    const pa = new IndexeddbPersistence('ya', docA);
    await pa.whenSynced;
    yjsApply(docA, profile);
    await idbBarrier(pa.db, 'updates');
    const docB = new Y.Doc();
    const pb = new IndexeddbPersistence('yb', docB);
    await pb.whenSynced;
    const t0 = now();
    const pair = await channelPair();
    const applied = new Promise((resolve) => {
      receiveChunked(pair.b.dc, (update) => {
        Y.applyUpdate(docB, update);
        resolve();
      });
    });
    receiveChunked(pair.a.dc, (sv) => sendChunked(pair.a.dc, Y.encodeStateAsUpdate(docA, sv)));
    await sendChunked(pair.b.dc, Y.encodeStateVector(docB));
    await applied;
    await idbBarrier(pb.db, 'updates');
    const ms = now() - t0;
    const counts = { bookmarks: docB.getMap('bookmarks').size, history: docB.getArray('visits').length };
    sameCounts('yjs', counts, { bookmarks: docA.getMap('bookmarks').size, history: docA.getArray('visits').length });
    pair.close();
    await pa.destroy();
    await pb.destroy();
    return { ms, counts };
  },
  /** Automerge's sync protocol over a fresh channel pair until neither side has more to say;
   *  then B saves to IndexedDB. */
  async automerge(profile) {
    await Automerge.initializeBase64Wasm(automergeWasmBase64);
    let docA = Automerge.from(automergeShape(profile));
    let docB = Automerge.init();
    const db = await openRaw('am-b', (db) => db.createObjectStore('chunks', { autoIncrement: true }));
    const t0 = now();
    const pair = await channelPair();
    let stateA = Automerge.initSyncState();
    let stateB = Automerge.initSyncState();
    // The exchange is over when no message is in flight and neither side has anything to say.
    // (An idle timer is not enough: a large message takes longer than any short timeout to
    // arrive, and the run ended with B still empty.)
    let settle;
    const done = new Promise((resolve) => (settle = resolve));
    let inFlight = 0;
    const speak = (side) => {
      if (side === 'a') {
        const [s, m] = Automerge.generateSyncMessage(docA, stateA);
        stateA = s;
        if (m) {
          inFlight += 1;
          sendChunked(pair.a.dc, m);
        }
      } else {
        const [s, m] = Automerge.generateSyncMessage(docB, stateB);
        stateB = s;
        if (m) {
          inFlight += 1;
          sendChunked(pair.b.dc, m);
        }
      }
      if (inFlight === 0) settle();
    };
    receiveChunked(pair.a.dc, (m) => {
      inFlight -= 1;
      [docA, stateA] = Automerge.receiveSyncMessage(docA, stateA, m);
      speak('a');
    });
    receiveChunked(pair.b.dc, (m) => {
      inFlight -= 1;
      [docB, stateB] = Automerge.receiveSyncMessage(docB, stateB, m);
      speak('b');
    });
    speak('b');
    speak('a');
    await done;
    db.transaction(['chunks'], 'readwrite').objectStore('chunks').add(Automerge.save(docB));
    await idbBarrier(db, 'chunks');
    const ms = now() - t0;
    db.close();
    pair.close();
    const counts = { bookmarks: Object.keys(docB.bookmarks ?? {}).length, history: (docB.visits ?? []).length };
    sameCounts('automerge', counts, { bookmarks: Object.keys(docA.bookmarks).length, history: docA.visits.length });
    return { ms, counts };
  },
};

window.bench.transport = transport;
window.bench.fullSync = fullSync;

// ---------------------------------------------------------------------------------------------
// Signatures in the page: wasm (ed25519-dalek, as the package compiles it) next to WebCrypto's
// Ed25519; and verified ingest of the realistic profile in wasm, against the same floor.
// ---------------------------------------------------------------------------------------------

const signatures = {
  async run(n, small) {
    await initFloor();
    const samples = floor.signatureSamples(n);
    const perSig = (ms) => (ms * 1000) / n;
    let t0 = now();
    floor.signMany(n);
    const signUs = perSig(now() - t0);
    t0 = now();
    const strictOk = floor.verifyStrict(samples);
    const strictUs = perSig(now() - t0);
    const batchUs = {};
    for (const size of [16, 64, 256, 1024]) {
      t0 = now();
      const ok = floor.verifyBatch(samples, size);
      batchUs[size] = perSig(now() - t0);
      if (ok !== n) throw new Error(`batch verify failed: ${ok} of ${n}`);
    }
    if (strictOk !== n) throw new Error(`verify_strict failed: ${strictOk} of ${n}`);
    // WebCrypto: one imported key, every signature awaited in turn, then all in flight at once.
    const key = await crypto.subtle.importKey('raw', samples.slice(0, 32), { name: 'Ed25519' }, false, ['verify']);
    const items = [];
    for (let i = 0; i < n; i += 1) {
      const at = 32 + i * 152;
      items.push([samples.slice(at, at + 88), samples.slice(at + 88, at + 152)]);
    }
    t0 = now();
    let webOk = 0;
    for (const [m, s] of items) if (await crypto.subtle.verify('Ed25519', key, s, m)) webOk += 1;
    const webSerialUs = perSig(now() - t0);
    t0 = now();
    const all = await Promise.all(items.map(([m, s]) => crypto.subtle.verify('Ed25519', key, s, m)));
    const webParallelUs = perSig(now() - t0);
    if (webOk !== n || all.some((ok) => !ok)) throw new Error('WebCrypto refused a valid signature');
    // Verified ingest: every envelope of the profile into a fresh replica (decode, verify, apply).
    const records = floor.prepareIngest(small);
    t0 = now();
    const visits = floor.runIngest();
    const ingestMs = now() - t0;
    return { n, signUs, strictUs, batchUs, webSerialUs, webParallelUs, ingest: { records, visits, ms: ingestMs } };
  },
};

window.bench.signatures = signatures;

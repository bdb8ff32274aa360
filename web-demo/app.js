// The Kathon Sync demo: a small browser-state manager on the `kathon-sync` package. Everything
// here reads and writes the local store (IndexedDB); the store syncs with the user's other
// devices over WebRTC, with the bridge on this machine only relaying signaling.
import init, { KathonStore, version } from './kathon_wasm.js';
import qrcode from './qrcode.mjs';

const STORE = new URLSearchParams(location.search).get('store') ?? 'kathon-demo';
const $ = (selector, root = document) => root.querySelector(selector);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (v === true) node.setAttribute(k, '');
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c));
  return node;
};

let store;
let view = 'bookmarks';
const ui = {
  selectedFolder: 'toolbar',
  bookmarkQuery: '',
  historyQuery: '',
  passwordsUnlocked: false,
  unlockTimer: null,
  revealed: new Map(),
  pairing: null, // { code, expiresAt, request?, done? }
  joining: null, // { sas?, error? }
  problems: [], // [{ kind, text, at }]
  peers: new Map(), // peer → { device, name }
  bridge: 'connecting',
};

// ---------------------------------------------------------------------------------------------
// Small UI helpers
// ---------------------------------------------------------------------------------------------

function toast(text, bad = false) {
  const t = el('div', { class: `toast${bad ? ' bad' : ''}` }, text);
  $('#toasts').append(t);
  setTimeout(() => t.remove(), 4000);
}

/** Runs `f`, showing a failure in plain words instead of throwing. */
// Runs `f`; an error, thrown or a returned promise's rejection, becomes a toast and the result
// `undefined`.
function attempt(f) {
  const fail = (e) => {
    toast(plainError(e), true);
    return undefined;
  };
  try {
    const result = f();
    return result instanceof Promise ? result.catch(fail) : result;
  } catch (e) {
    return fail(e);
  }
}

function plainError(e) {
  if (!e) return 'Something went wrong.';
  const code = e.code ?? '';
  const known = {
    locked: 'The store is locked: enter your passphrase first.',
    'not-enrolled': 'This device has no identity yet.',
    quota: 'The browser has no room left for your data. Free some space; nothing was lost, the change is waiting.',
    'wrong-passphrase': 'That passphrase is not right.',
    unavailable: 'The import/export part of the page could not be loaded. Check the connection to this machine\'s bridge and try again.',
  };
  return known[code] ?? e.message ?? String(e);
}

/** A modal form: `fields` are `[name, label, {type, value, required}]`; resolves to values or null. */
function ask(title, fields, okLabel = 'OK') {
  const dialog = $('#dialog');
  $('#dialog-title').textContent = title;
  const body = $('#dialog-body');
  body.replaceChildren(
    ...fields.map(([name, label, opts = {}]) =>
      opts.type === 'textarea'
        ? el('label', {}, label, el('textarea', { name, rows: 6, required: opts.required }, opts.value ?? ''))
        : el('label', {}, label, el('input', { name, type: opts.type ?? 'text', value: opts.value ?? '', required: opts.required, placeholder: opts.placeholder })),
    ),
  );
  $('#dialog-ok').textContent = okLabel;
  dialog.showModal();
  body.querySelector('input, textarea')?.focus();
  return new Promise((resolve) => {
    dialog.addEventListener(
      'close',
      () => {
        if (dialog.returnValue !== 'ok') return resolve(null);
        const values = {};
        for (const [name] of fields) values[name] = body.querySelector(`[name="${name}"]`).value;
        resolve(values);
      },
      { once: true },
    );
  });
}

function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function pickFile(accept) {
  return new Promise((resolve) => {
    const input = el('input', { type: 'file', accept });
    input.addEventListener('change', async () => resolve(input.files[0] ? await input.files[0].text() : null));
    input.click();
  });
}

function ago(ms) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return new Date(ms).toLocaleString();
}

const when = (ms) => new Date(ms).toLocaleString();

/** A small icon (drawn in CSS, so no emoji font is needed). */
const icon = (name, size = '') => el('span', { class: `icon i-${name} ${size}`, 'aria-hidden': 'true' });

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

async function start() {
  await init();
  if ('serviceWorker' in navigator && location.protocol === 'http:' && /^(127\.0\.0\.1|localhost)$/.test(location.hostname)) {
    navigator.serviceWorker.register('sw.js').catch(() => {});
  }
  try {
    store = await KathonStore.open(STORE);
  } catch (e) {
    $('#app').replaceChildren(el('section', { class: 'card' }, el('h1', {}, 'The local store could not be opened'), el('p', {}, plainError(e))));
    return;
  }
  window.kathon = store; // for the curious (and the end-to-end test)
  store.on('*', onEvent);
  try {
    // Served by the bridge itself: talk to that bridge; otherwise to the default local one.
    const own = location.protocol === 'http:' && /^(127\.0\.0\.1|localhost)$/.test(location.hostname);
    store.connectBridge(own ? `ws://${location.host}/ws` : undefined);
  } catch (e) {
    ui.problems.push({ kind: 'warn', text: `No bridge on this machine (${plainError(e)}). Changes are kept here and sync when it runs.`, at: Date.now() });
  }
  if (store.status().locked) await unlockStore();
  render();
  setInterval(renderSync, 1000);
}

async function unlockStore() {
  for (;;) {
    const v = await ask('This store is protected', [['passphrase', 'Passphrase', { type: 'password', required: true }]], 'Unlock');
    if (!v) continue;
    try {
      store.unlock(v.passphrase);
      return;
    } catch (e) {
      toast(plainError(e), true);
    }
  }
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function onEvent(e) {
  if (e.request) {
    ui.pairing = { ...(ui.pairing ?? {}), request: e.request };
    view = 'devices';
  } else if (e.sas && ui.joining) {
    ui.joining.sas = e.sas;
  } else if (e.paired) {
    ui.joining = null;
    toast('This device joined your identity.');
  } else if (e.authenticated) {
    ui.peers.set(e.authenticated.peer, e.authenticated);
    if (ui.pairing?.request?.peer === e.authenticated.peer) ui.pairing = { done: e.authenticated.name };
  } else if (e.refused) {
    ui.peers.delete(e.refused.peer);
    const text = refusedInWords(e.refused);
    ui.problems = [{ kind: 'bad', text, at: Date.now() }, ...ui.problems.filter((p) => p.text !== text)];
    if (ui.joining) ui.joining.error = refusedInWords(e.refused);
  } else if (e.closed) {
    // a connection ended; the sync panel shows the counts
  } else if (e.bridge) {
    ui.bridge = e.bridge;
  } else if (e.code && e.message) {
    ui.problems.unshift({ kind: 'bad', text: plainError(e), at: Date.now() });
  } else if (e.massDeletion) {
    ui.problems.unshift({ kind: 'warn', text: `Another device deleted ${e.massDeletion.deletes} of ${e.massDeletion.total} bookmarks. It is held until you decide (Bookmarks).`, at: Date.now() });
  } else if (e.equivocation) {
    ui.problems.unshift({ kind: 'bad', text: `A device sent two different histories (${e.equivocation.slice(0, 7)}…): it is quarantined. ${e.message ?? ''}`, at: Date.now() });
  }
  ui.problems = ui.problems.slice(0, 6);
  scheduleRender();
}

function refusedInWords(r) {
  const words = {
    'bad-handshake': 'A connection was refused: something between the devices changed the connection details (the bridge may be tampering). No data was exchanged.',
    'wrong-identity': 'A device of another identity tried to connect; it was refused.',
    revoked: 'A removed (revoked) device tried to connect; it was refused.',
    'not-enrolled': 'A device that is not part of your identity tried to connect.',
    'bad-pairing-code': 'The pairing code was wrong, expired or already used.',
    'pairing-refused': 'The other device refused the pairing.',
    timeout: 'A device did not finish connecting in time.',
    version: 'A device runs an incompatible version.',
  };
  if (r.reason === 'refused-by-peer') {
    const theirs = {
      'not-enrolled': 'Your other devices no longer accept this one: it was removed (revoked) from your identity.',
      'wrong-identity': 'The other device belongs to another identity.',
      'bad-pairing-code': 'The pairing code was wrong, expired or already used.',
      'pairing-refused': 'The other device refused the pairing.',
      'bad-handshake': words['bad-handshake'],
    };
    return theirs[r.peerReason] ?? `The other device refused this one: ${r.message}`;
  }
  return words[r.reason] ?? `A connection was refused: ${r.message}`;
}

// ---------------------------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------------------------

function render() {
  const status = store.status();
  if (status.locked) return;
  if (!status.enrolled) return renderOnboarding();
  if (!$('#view')) {
    $('#app').replaceChildren($('#shell').content.cloneNode(true));
    for (const b of document.querySelectorAll('.tabs button')) {
      b.addEventListener('click', () => {
        view = b.dataset.view;
        render();
      });
    }
  }
  $('#app').removeAttribute('aria-busy');
  for (const b of document.querySelectorAll('.tabs button')) b.setAttribute('aria-selected', String(b.dataset.view === view));
  const views = { bookmarks: renderBookmarks, history: renderHistory, passwords: renderPasswords, workspaces: renderWorkspaces, devices: renderDevices };
  const focused = document.activeElement?.id;
  const content = views[view]();
  $('#view').replaceChildren(content);
  if (focused && document.getElementById(focused)) {
    const f = document.getElementById(focused);
    f.focus();
    if (f.setSelectionRange && typeof f.value === 'string') f.setSelectionRange(f.value.length, f.value.length);
  }
  renderSync();
}

function renderOnboarding() {
  if (!$('.onboarding')) {
    $('#app').replaceChildren($('#onboarding').content.cloneNode(true));
    $('#create-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const name = new FormData(ev.target).get('name').trim();
      attempt(() => {
        store.createIdentity(name);
        seedLayout();
        render();
      });
    });
    $('#join-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const data = new FormData(ev.target);
      attempt(() => {
        store.joinWithCode(data.get('code').trim(), data.get('name').trim());
        ui.joining = {};
        renderOnboarding();
      });
    });
  }
  $('#app').removeAttribute('aria-busy');
  const progress = $('#join-progress');
  if (ui.joining) {
    progress.hidden = false;
    progress.replaceChildren(
      ui.joining.error
        ? el('p', {}, ui.joining.error)
        : ui.joining.sas
          ? el('div', {}, el('p', {}, 'Check that the other device shows the same code, then confirm there:'), el('div', { class: 'sas', id: 'join-sas' }, ui.joining.sas))
          : el('p', {}, 'Looking for the device that showed the code… (it must be on this network, with its page open)'),
    );
  } else {
    progress.hidden = true;
  }
  renderSync();
}

/** A first device layout, so the workspaces view has something to show. */
function seedLayout() {
  const layout = store.deviceLayouts()[store.status().deviceId];
  if (layout) return;
  store.setDeviceLayout({
    windows: [
      {
        tabs: [
          { url: location.href, title: 'Kathon Sync demo', pinned: true },
          { url: 'https://developer.mozilla.org/en-US/docs/Web/API/WebRTC_API', title: 'WebRTC API – MDN' },
        ],
        activeTab: 0,
      },
    ],
  });
}

// ---------------------------------------------------------------------------------------------
// Sync panel
// ---------------------------------------------------------------------------------------------

function renderSync() {
  const pill = $('#sync-pill');
  let s;
  try {
    s = store.syncStatus();
  } catch {
    return;
  }
  const enrolled = store.status().enrolled;
  const bridgeUp = s.bridge && s.bridge !== 'disconnected' && ui.bridge !== 'disconnected';
  const pending = s.pendingStorage + s.pendingEnvelopes;
  let state = 'offline';
  let text = 'offline';
  if (!bridgeUp) {
    state = 'error';
    text = 'no bridge';
  } else if (s.connected > 0) {
    state = 'synced';
    text = `in sync with ${s.connected} device${s.connected === 1 ? '' : 's'}`;
  } else if (enrolled) {
    state = 'searching';
    text = 'looking for your devices';
  } else {
    text = 'not set up';
  }
  pill.dataset.state = state;
  pill.textContent = text;

  const panel = $('#sync-panel');
  if (!panel) return;
  const dot = (cls) => el('span', { class: `dot ${cls}` });
  const problems = [...ui.problems];
  if (s.lastError && !problems.some((p) => p.text.includes(s.lastError))) problems.push({ kind: 'warn', text: s.lastError });
  let held = [];
  try {
    held = store.heldDeletions();
  } catch {}
  panel.replaceChildren(
    ...[
    el('h2', {}, dot(state === 'synced' ? 'good' : state === 'error' ? 'bad' : 'warn'), 'Sync'),
    el('div', { class: 'stat' }, 'Bridge', el('b', {}, bridgeUp ? 'connected' : 'not running')),
    el('div', { class: 'stat' }, 'Devices found', el('b', { id: 'stat-found' }, s.peersFound)),
    el('div', { class: 'stat' }, 'Connected', el('b', { id: 'stat-connected' }, s.connected)),
    el('div', { class: 'stat' }, 'Last sync (this visit)', el('b', { id: 'stat-last' }, ago(s.lastSyncMs))),
    el('div', { class: 'stat' }, 'Waiting to save or apply', el('b', { id: 'stat-pending' }, pending)),
    !bridgeUp
      ? el('p', { class: 'muted' }, 'Start the bridge on this machine (', el('code', {}, 'cargo xtask run'), '). Your changes are kept here meanwhile.')
      : null,
    held.length
      ? el(
          'div',
          { class: 'problems' },
          ...held.map((h) =>
            el(
              'div',
              { class: 'problem warn' },
              `Another device deleted ${h.deletes} bookmarks at once. `,
              el('button', { class: 'small', onclick: () => attempt(() => store.acceptHeldDeletion(h.envelope)) && scheduleRender() }, 'Accept'),
              ' ',
              el('button', { class: 'small', onclick: () => attempt(() => store.rejectHeldDeletion(h.envelope)) && scheduleRender() }, 'Undo it'),
            ),
          ),
        )
      : null,
    problems.length ? el('div', { class: 'problems', id: 'problems' }, ...problems.map((p) => el('div', { class: `problem ${p.kind === 'warn' ? 'warn' : ''}` }, p.text))) : null,
    ].filter(Boolean),
  );
}

// ---------------------------------------------------------------------------------------------
// Bookmarks
// ---------------------------------------------------------------------------------------------

const ROOT_NAMES = { toolbar: 'Bookmarks bar', menu: 'Bookmarks menu', other: 'Other bookmarks', mobile: 'Mobile bookmarks' };

function renderBookmarks() {
  const tree = store.bookmarkTree();
  const wrap = el('div');
  wrap.append(
    el(
      'div',
      { class: 'toolbar' },
      el('button', { class: 'primary', id: 'add-bookmark', onclick: addBookmark }, '+ Bookmark'),
      el('button', { onclick: addFolder }, '+ Folder'),
      el('span', { class: 'muted' }, `into ${folderName(ui.selectedFolder)}`),
      el('span', { class: 'spacer' }),
      el('input', {
        id: 'bookmark-search',
        type: 'search',
        placeholder: 'Search bookmarks',
        value: ui.bookmarkQuery,
        oninput: (e) => {
          ui.bookmarkQuery = e.target.value;
          render();
        },
      }),
      el('button', { onclick: importBookmarks }, 'Import…'),
      el('button', { onclick: exportBookmarks }, 'Export'),
    ),
  );
  // The bar: the toolbar's top level, as a browser shows it.
  const bar = el('div', { class: 'bar', id: 'bookmarks-bar' });
  dropZone(bar, 'toolbar', null);
  const BAR_MAX = 24;
  for (const node of tree.toolbar.slice(0, BAR_MAX)) {
    const chip = el('span', { class: 'chip', draggable: 'true', title: node.url ?? node.title, dataset: { id: node.id } }, icon(node.kind), el('span', {}, node.title || node.url || '—'));
    dragSource(chip, node.id);
    if (node.kind === 'folder') dropZone(chip, node.id, null);
    chip.addEventListener('click', () => node.url && window.open(node.url, '_blank', 'noopener'));
    bar.append(chip);
  }
  if (tree.toolbar.length > BAR_MAX) bar.append(el('span', { class: 'chip muted' }, `+${tree.toolbar.length - BAR_MAX} more`));
  if (!tree.toolbar.length) bar.append(el('span', { class: 'muted' }, 'Drag bookmarks here, or add one.'));
  wrap.append(bar);

  if (ui.bookmarkQuery.trim()) {
    const hits = store.searchBookmarks(ui.bookmarkQuery.trim());
    wrap.append(
      hits.length
        ? el('ul', { class: 'list', id: 'bookmark-results' }, ...hits.slice(0, 200).map((n) => el('li', {}, el('div', { class: 'grow' }, el('div', { class: 'line1' }, n.title || '(untitled)'), el('div', { class: 'line2' }, n.url ?? folderName(n.parent))), nodeActions(n))))
        : el('p', { class: 'empty' }, 'No bookmark matches.'),
    );
    return wrap;
  }
  const roots = el('ul', { class: 'tree', id: 'bookmark-tree' });
  for (const root of ['toolbar', 'menu', 'other', 'mobile']) {
    roots.append(treeNode({ id: root, kind: 'folder', title: ROOT_NAMES[root], children: tree[root] }, true));
  }
  wrap.append(roots);
  return wrap;
}

function folderName(id) {
  if (ROOT_NAMES[id]) return ROOT_NAMES[id];
  const hit = store.searchBookmarks('').find((n) => n.id === id);
  return hit ? hit.title : 'folder';
}

function treeNode(node, isRoot = false) {
  const li = el('li');
  const row = el(
    'div',
    { class: `node ${node.kind}${ui.selectedFolder === node.id ? ' selected' : ''}`, dataset: { id: node.id }, draggable: isRoot ? undefined : 'true' },
    node.kind === 'separator' ? el('span', { class: 'icon' }) : icon(node.kind),
    node.kind === 'separator' ? el('span', { class: 'separator-line' }) : el('span', { class: 'title' }, node.title || '(untitled)'),
    node.url ? el('a', { class: 'url', href: node.url, target: '_blank', rel: 'noopener' }, node.url) : null,
    isRoot ? null : nodeActions(node),
  );
  if (node.kind === 'folder') {
    row.addEventListener('click', (e) => {
      if (e.target.closest('button, a')) return;
      ui.selectedFolder = node.id;
      render();
    });
    dropZone(row, node.id, null);
  } else {
    // Dropping on a bookmark puts the dragged node before it.
    dropZone(row, null, node.id);
  }
  if (!isRoot) dragSource(row, node.id);
  li.append(row);
  // Large folders show their first entries; search finds the rest.
  const FOLDER_MAX = 100;
  if (node.children?.length) {
    const shown = node.children.slice(0, FOLDER_MAX).map((c) => treeNode(c));
    if (node.children.length > FOLDER_MAX) shown.push(el('li', { class: 'muted', style: 'padding:.3rem .4rem' }, `… and ${node.children.length - FOLDER_MAX} more (search to find them)`));
    li.append(el('ul', { class: 'tree' }, ...shown));
  }
  return li;
}

function nodeActions(node) {
  return el(
    'span',
    { class: 'actions' },
    node.kind !== 'separator' ? el('button', { class: 'small', onclick: () => editBookmark(node) }, 'Edit') : null,
    el('button', { class: 'small danger', onclick: () => attempt(() => store.deleteBookmark(node.id)) }, 'Delete'),
  );
}

let dragged = null;
function dragSource(elem, id) {
  elem.addEventListener('dragstart', (e) => {
    dragged = id;
    e.dataTransfer.setData('text/plain', id);
    e.dataTransfer.effectAllowed = 'move';
    e.stopPropagation();
  });
}

/** Dropping into `folder` appends; dropping on `before` inserts before that node. */
function dropZone(elem, folder, before) {
  elem.addEventListener('dragover', (e) => {
    if (!dragged) return;
    e.preventDefault();
    e.stopPropagation();
    elem.classList.add('drop-target');
  });
  elem.addEventListener('dragleave', () => elem.classList.remove('drop-target'));
  elem.addEventListener('drop', (e) => {
    e.preventDefault();
    e.stopPropagation();
    elem.classList.remove('drop-target');
    const id = dragged ?? e.dataTransfer.getData('text/plain');
    dragged = null;
    if (!id || id === folder || id === before) return;
    attempt(() => {
      if (folder) {
        store.moveBookmark(id, folder);
      } else {
        const target = store.searchBookmarks('').find((n) => n.id === before);
        if (!target) return;
        const siblings = store.bookmarkChildren(target.parent).map((n) => n.id).filter((x) => x !== id);
        store.moveBookmark(id, target.parent, siblings.indexOf(before));
      }
    });
  });
}

async function addBookmark() {
  const v = await ask(`New bookmark in ${folderName(ui.selectedFolder)}`, [
    ['url', 'Address', { type: 'url', required: true, placeholder: 'https://' }],
    ['title', 'Name'],
  ]);
  if (v) attempt(() => store.addBookmark({ parent: ui.selectedFolder, title: v.title || v.url, url: v.url }));
}

async function addFolder() {
  const v = await ask(`New folder in ${folderName(ui.selectedFolder)}`, [['title', 'Name', { required: true }]]);
  if (v) attempt(() => store.addBookmark({ parent: ui.selectedFolder, kind: 'folder', title: v.title }));
}

async function editBookmark(node) {
  const fields = [['title', 'Name', { value: node.title }]];
  if (node.kind === 'bookmark') fields.push(['url', 'Address', { type: 'url', value: node.url, required: true }]);
  const v = await ask('Edit', fields, 'Save');
  if (v) attempt(() => store.editBookmark(node.id, v.title, node.kind === 'bookmark' ? v.url : undefined));
}

async function importBookmarks() {
  const text = await pickFile('.html,.htm,.json,application/json,text/html');
  if (text === null) return;
  const report = await attempt(() => (text.trimStart().startsWith('{') ? store.importChromiumBookmarks(text) : store.importBookmarksHtml(text)));
  if (report) toast(`Imported ${report.bookmarksAdded} bookmarks and ${report.foldersAdded} folders (${report.duplicatesSkipped} already here).`);
}

async function exportBookmarks() {
  const html = await attempt(() => store.exportBookmarksHtml());
  if (html !== undefined) download('bookmarks.html', html, 'text/html');
}

// ---------------------------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------------------------

function renderHistory() {
  const visits = store.history(ui.historyQuery.trim() || undefined, 300);
  const wrap = el('div');
  wrap.append(
    el(
      'form',
      {
        class: 'toolbar',
        id: 'visit-form',
        onsubmit: (e) => {
          e.preventDefault();
          const data = new FormData(e.target);
          attempt(() => store.recordVisit({ url: data.get('url'), title: data.get('title') || undefined, transition: 'typed' }));
          e.target.reset();
        },
      },
      el('input', { name: 'url', id: 'visit-url', type: 'url', required: true, placeholder: 'Visit an address: https://…', style: 'flex:1' }),
      el('input', { name: 'title', placeholder: 'Page title (optional)' }),
      el('button', { class: 'primary' }, 'Visit'),
    ),
    el(
      'div',
      { class: 'toolbar' },
      el('input', {
        id: 'history-search',
        type: 'search',
        placeholder: 'Search history',
        value: ui.historyQuery,
        oninput: (e) => {
          ui.historyQuery = e.target.value;
          render();
        },
      }),
      el('span', { class: 'spacer' }),
      el('button', { onclick: () => attempt(() => store.deleteHistoryRange(Date.now() - 3600_000, Date.now() + 1)) }, 'Delete last hour'),
      el('button', { onclick: deleteRange }, 'Delete a range…'),
      el('button', { class: 'danger', id: 'delete-all-history', onclick: () => confirm('Delete all history on all your devices?') && attempt(() => store.deleteAllHistory()) }, 'Delete all'),
    ),
  );
  wrap.append(
    visits.length
      ? el(
          'ul',
          { class: 'list', id: 'history-list' },
          ...visits.map((v) =>
            el(
              'li',
              {},
              el('div', { class: 'grow' }, el('div', { class: 'line1' }, v.title || v.url), el('div', { class: 'line2' }, `${when(v.visitedAtMs)} · ${v.url}`)),
              el('button', { class: 'small danger', onclick: () => attempt(() => store.deleteHistoryUrl(v.url)) }, 'Delete'),
            ),
          ),
        )
      : el('p', { class: 'empty' }, ui.historyQuery ? 'Nothing in history matches.' : 'No history yet. Visit an address above.'),
  );
  return wrap;
}

async function deleteRange() {
  const today = new Date().toISOString().slice(0, 10);
  const v = await ask('Delete history between', [
    ['from', 'From', { type: 'datetime-local', value: `${today}T00:00`, required: true }],
    ['to', 'To', { type: 'datetime-local', value: `${today}T23:59`, required: true }],
  ], 'Delete');
  if (v) attempt(() => store.deleteHistoryRange(new Date(v.from).getTime(), new Date(v.to).getTime()));
}

// ---------------------------------------------------------------------------------------------
// Passwords
// ---------------------------------------------------------------------------------------------

function lockPasswords() {
  ui.passwordsUnlocked = false;
  ui.revealed.clear();
  clearTimeout(ui.unlockTimer);
}

async function unlockPasswords() {
  const status = store.status();
  if (status.passphraseSet) {
    const v = await ask('Unlock passwords', [['passphrase', 'Your passphrase', { type: 'password', required: true }]], 'Unlock');
    if (!v) return;
    if (!store.checkPassphrase(v.passphrase)) return toast('That passphrase is not right.', true);
  } else {
    const v = await ask('Protect your passwords', [
      ['passphrase', 'Choose a passphrase (8 characters or more). It seals your keys on this device.', { type: 'password', required: true }],
      ['again', 'Once more', { type: 'password', required: true }],
    ], 'Set and unlock');
    if (!v) return;
    if (v.passphrase !== v.again) return toast('The two passphrases differ.', true);
    if (attempt(() => (store.setPassphrase(v.passphrase), true)) !== true) return;
  }
  ui.passwordsUnlocked = true;
  clearTimeout(ui.unlockTimer);
  ui.unlockTimer = setTimeout(() => {
    lockPasswords();
    render();
  }, 5 * 60_000);
  render();
}

function renderPasswords() {
  const entries = store.passwords();
  const wrap = el('div');
  wrap.append(
    el(
      'div',
      { class: 'toolbar' },
      el('button', { class: 'primary', id: 'add-password', onclick: addPassword }, '+ Password'),
      el('button', { onclick: importPasswords }, 'Import CSV…'),
      el('button', { onclick: exportPasswords }, 'Export CSV'),
      el('span', { class: 'spacer' }),
      ui.passwordsUnlocked ? el('button', { onclick: () => (lockPasswords(), render()) }, icon('lock'), ' Lock') : null,
    ),
  );
  if (!ui.passwordsUnlocked) {
    wrap.append(
      el(
        'div',
        { class: 'lock-banner' },
        icon('lock', 'big'),
        el('div', { class: 'grow' }, el('b', {}, 'Passwords are locked.'), el('div', { class: 'muted' }, 'They are sealed in the synced data; unlock to see or change them.')),
        el('button', { class: 'primary', id: 'unlock-passwords', onclick: unlockPasswords }, 'Unlock'),
      ),
    );
  }
  wrap.append(
    entries.length
      ? el(
          'ul',
          { class: 'list', id: 'password-list' },
          ...entries.map((p) => {
            const shown = ui.revealed.get(p.id);
            return el(
              'li',
              { dataset: { id: p.id } },
              el('div', { class: 'grow' }, el('div', { class: 'line1' }, p.origin), el('div', { class: 'line2' }, `${p.username || '(no username)'} · changed ${when(p.changedMs)}`)),
              el('span', { class: 'secret' }, shown ?? (p.hasPassword ? '••••••••' : '—')),
              ui.passwordsUnlocked
                ? [
                    el('button', { class: 'small', onclick: () => reveal(p.id) }, shown ? 'Hide' : 'Reveal'),
                    el('button', { class: 'small', onclick: () => editPassword(p) }, 'Edit'),
                    el('button', { class: 'small danger', onclick: () => confirm(`Delete the password for ${p.origin}?`) && attempt(() => store.deletePassword(p.id)) }, 'Delete'),
                  ]
                : null,
            );
          }),
        )
      : el('p', { class: 'empty' }, 'No saved passwords yet.'),
  );
  return wrap;
}

function reveal(id) {
  if (ui.revealed.has(id)) ui.revealed.delete(id);
  else {
    const secret = attempt(() => store.revealPassword(id, 'password'));
    if (secret !== undefined) ui.revealed.set(id, secret);
  }
  render();
}

async function addPassword() {
  const v = await ask('New password', [
    ['origin', 'Site', { type: 'url', required: true, placeholder: 'https://' }],
    ['username', 'Username'],
    ['password', 'Password', { type: 'password', required: true }],
    ['notes', 'Notes', { type: 'textarea' }],
  ], 'Save');
  if (v) attempt(() => store.addPassword(v));
}

async function editPassword(p) {
  if (!ui.passwordsUnlocked) return unlockPasswords();
  const notes = attempt(() => (p.hasNotes ? store.revealPassword(p.id, 'notes') : ''));
  const v = await ask(`Edit ${p.origin}`, [
    ['origin', 'Site', { value: p.origin, required: true }],
    ['username', 'Username', { value: p.username }],
    ['password', 'New password (leave empty to keep)', { type: 'password' }],
    ['notes', 'Notes', { type: 'textarea', value: notes ?? '' }],
  ], 'Save');
  if (!v) return;
  // Only the fields that changed are written, so a concurrent edit of another field survives.
  const changed = {};
  if (v.origin !== p.origin) changed.origin = v.origin;
  if (v.username !== p.username) changed.username = v.username;
  if (v.password) changed.password = v.password;
  if (v.notes !== (notes ?? '')) changed.notes = v.notes;
  if (Object.keys(changed).length) attempt(() => store.updatePassword(p.id, changed));
  ui.revealed.delete(p.id);
}

async function importPasswords() {
  const text = await pickFile('.csv,text/csv');
  if (text === null) return;
  const report = await attempt(() => store.importPasswordsCsv(text));
  if (report) toast(`Imported ${report.passwordsAdded} passwords, updated ${report.passwordsUpdated} (${report.duplicatesSkipped} unchanged).`);
}

async function exportPasswords() {
  if (!ui.passwordsUnlocked) return unlockPasswords();
  const csv = await attempt(() => store.exportPasswordsCsv());
  if (csv !== undefined) download('passwords.csv', csv, 'text/csv');
}

// ---------------------------------------------------------------------------------------------
// Workspaces
// ---------------------------------------------------------------------------------------------

function myLayout() {
  return structuredClone(store.deviceLayouts()[store.status().deviceId] ?? { windows: [] });
}

function publish(layout) {
  attempt(() => store.setDeviceLayout(layout));
}

function windowCard(w, wi, editable, layout) {
  return el(
    'div',
    { class: 'window' },
    el(
      'h4',
      {},
      `Window ${wi + 1} · ${w.tabs.length} tab${w.tabs.length === 1 ? '' : 's'}`,
      editable
        ? el('button', {
            class: 'small danger',
            onclick: () => {
              layout.windows.splice(wi, 1);
              publish(layout);
            },
          }, 'Close')
        : null,
    ),
    ...w.tabs.map((t, ti) =>
      el(
        'div',
        { class: `tab${w.activeTab === ti ? ' active' : ''}` },
        icon(t.pinned ? 'pin' : 'tab'),
        el('span', { class: 'grow', title: t.url }, t.title || t.url),
        editable
          ? [
              el('button', {
                class: 'small',
                title: t.pinned ? 'Unpin' : 'Pin',
                onclick: () => {
                  t.pinned = !t.pinned;
                  publish(layout);
                },
              }, t.pinned ? 'Unpin' : 'Pin'),
              el('button', {
                class: 'small danger',
                title: 'Close tab',
                onclick: () => {
                  w.tabs.splice(ti, 1);
                  if (w.activeTab >= w.tabs.length) w.activeTab = Math.max(0, w.tabs.length - 1);
                  publish(layout);
                },
              }, '×'),
            ]
          : el('a', { href: t.url, target: '_blank', rel: 'noopener', class: 'small' }, 'open'),
      ),
    ),
    editable
      ? el('button', {
          class: 'small',
          onclick: async () => {
            const v = await ask('Open a tab', [['url', 'Address', { type: 'url', required: true, placeholder: 'https://' }], ['title', 'Title']]);
            if (!v) return;
            w.tabs.push({ url: v.url, title: v.title || v.url });
            w.activeTab = w.tabs.length - 1;
            publish(layout);
          },
        }, '+ Tab')
      : null,
  );
}

function renderWorkspaces() {
  const me = store.status().deviceId;
  const layouts = store.deviceLayouts();
  const names = Object.fromEntries(attempt(() => store.devices())?.map((d) => [d.id, d.name]) ?? []);
  const layout = myLayout();
  const wrap = el('div');
  wrap.append(
    el('div', { class: 'toolbar' },
      el('h2', { style: 'margin:0' }, 'This device'),
      el('span', { class: 'spacer' }),
      el('button', {
        onclick: () => {
          layout.windows.push({ tabs: [{ url: 'about:blank', title: 'New tab' }], activeTab: 0 });
          publish(layout);
        },
      }, '+ Window'),
      el('button', {
        class: 'primary',
        id: 'save-workspace',
        onclick: async () => {
          const v = await ask('Save these windows as a workspace', [['name', 'Name', { required: true, placeholder: 'e.g. Research' }]], 'Save');
          if (v) attempt(() => store.saveWorkspace(v.name, layout));
        },
      }, 'Save as workspace'),
    ),
    layout.windows.length ? el('div', { class: 'windows', id: 'my-windows' }, ...layout.windows.map((w, i) => windowCard(w, i, true, layout))) : el('p', { class: 'empty' }, 'No open windows.'),
  );
  const others = Object.entries(layouts).filter(([d]) => d !== me);
  wrap.append(el('h2', { style: 'margin-top:1.5rem' }, 'Your other devices'));
  wrap.append(
    others.length
      ? el('div', { id: 'other-devices' }, ...others.map(([d, l]) => el('div', { class: 'device-block' }, el('h3', {}, names[d] ?? `${d.slice(0, 7)}…`), el('div', { class: 'windows' }, ...l.windows.map((w, i) => windowCard(w, i, false))))))
      : el('p', { class: 'muted' }, 'Open tabs of your other devices appear here.'),
  );
  const saved = store.savedWorkspaces();
  wrap.append(el('h2', { style: 'margin-top:1.5rem' }, 'Saved workspaces'));
  wrap.append(
    saved.length
      ? el(
          'ul',
          { class: 'list', id: 'saved-workspaces' },
          ...saved.map((s) =>
            el(
              'li',
              {},
              el('div', { class: 'grow' }, el('div', { class: 'line1' }, s.name), el('div', { class: 'line2' }, `${s.layout.windows.length} windows · ${s.layout.windows.reduce((n, w) => n + w.tabs.length, 0)} tabs · ${when(s.changedMs)}`)),
              el('button', { class: 'small primary', onclick: () => publish(structuredClone(s.layout)) }, 'Open here'),
              el('button', {
                class: 'small',
                onclick: async () => {
                  const v = await ask('Rename workspace', [['name', 'Name', { value: s.name, required: true }]], 'Rename');
                  if (v) attempt(() => store.updateWorkspace(s.id, v.name, undefined));
                },
              }, 'Rename'),
              el('button', { class: 'small danger', onclick: () => attempt(() => store.deleteWorkspace(s.id)) }, 'Delete'),
            ),
          ),
        )
      : el('p', { class: 'muted' }, 'Save a set of windows to open it on any device.'),
  );
  return wrap;
}

// ---------------------------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------------------------

function qrImage(text) {
  const qr = qrcode(0, 'M');
  qr.addData(text);
  qr.make();
  const holder = el('div', { class: 'qr', id: 'pairing-qr' });
  holder.innerHTML = qr.createSvgTag({ cellSize: 4, margin: 2, scalable: true });
  return holder;
}

function renderDevices() {
  const status = store.status();
  const devices = store.devices();
  const wrap = el('div');
  wrap.append(
    el('h2', {}, 'This device'),
    el('div', { class: 'stat' }, 'Device ID', el('code', { id: 'device-id' }, status.deviceId)),
    el('div', { class: 'stat' }, 'Identity', el('code', { id: 'identity-id' }, status.identityId)),
    el('div', { class: 'stat' }, 'Keys', el('span', {}, status.passphraseSet ? 'sealed with your passphrase' : 'stored in this browser (set a passphrase under Passwords)')),
    el('div', { class: 'stat' }, 'Package', el('span', {}, `kathon-sync ${version()}`)),
  );

  const p = ui.pairing;
  const pairing = el('div', { id: 'pairing' });
  if (p?.request) {
    pairing.append(
      el(
        'div',
        { class: 'pairing' },
        el('div', { class: 'sas', id: 'pairing-sas' }, p.request.sas),
        el(
          'div',
          {},
          el('p', {}, el('b', {}, `“${p.request.name}” wants to join.`), ' Its screen must show the same code. Only confirm if it does.'),
          el('button', {
            class: 'primary',
            id: 'confirm-pairing',
            onclick: () => {
              attempt(() => store.confirmPairing(p.request.peer, true));
              ui.pairing = { done: p.request.name };
              render();
            },
          }, 'The codes match — add it'),
          ' ',
          el('button', {
            class: 'danger',
            onclick: () => {
              attempt(() => store.confirmPairing(p.request.peer, false));
              ui.pairing = null;
              render();
            },
          }, 'They differ — refuse'),
        ),
      ),
    );
  } else if (p?.code) {
    const left = Math.max(0, Math.round((p.expiresAt - Date.now()) / 60000));
    pairing.append(
      el(
        'div',
        { class: 'pairing' },
        qrImage(p.code),
        el(
          'div',
          {},
          el('p', {}, 'On the new device, open this page and choose “Add this device to my identity”, then enter this code:'),
          el('div', { class: 'code', id: 'pairing-code' }, p.code),
          el('p', { class: 'muted' }, `Valid for about ${left} more minute${left === 1 ? '' : 's'}, once. Keep this page open.`),
          el('button', { class: 'small', onclick: () => ((ui.pairing = null), render()) }, 'Cancel'),
        ),
      ),
    );
  } else if (p?.done) {
    pairing.append(el('div', { class: 'notice' }, `“${p.done}” was added to your identity.`));
  }
  wrap.append(
    el('div', { class: 'toolbar', style: 'margin-top:1.5rem' },
      el('h2', { style: 'margin:0' }, 'Your devices'),
      el('span', { class: 'spacer' }),
      status.holdsRootKey
        ? el('button', {
            class: 'primary',
            id: 'add-device',
            onclick: () => {
              const info = attempt(() => store.newPairingCode());
              if (info) ui.pairing = info;
              render();
            },
          }, '+ Add a device')
        : null,
    ),
    pairing,
    el(
      'ul',
      { class: 'list', id: 'device-list' },
      ...devices.map((d) =>
        el(
          'li',
          { dataset: { id: d.id } },
          el('div', { class: 'grow' }, el('div', { class: 'line1' }, d.name, ' ', d.thisDevice ? el('span', { class: 'badge accent' }, 'this device') : null, ' ', d.revoked ? el('span', { class: 'badge bad' }, 'revoked') : d.connected ? el('span', { class: 'badge good' }, 'connected') : null), el('div', { class: 'line2 mono' }, d.id)),
          !d.thisDevice && !d.revoked && status.holdsRootKey
            ? el('button', {
                class: 'small danger',
                onclick: () => {
                  if (!confirm(`Remove “${d.name}”? Its later changes will be refused, and your passwords are re-sealed with a new key it never sees.`)) return;
                  attempt(() => store.revokeDevice(d.id));
                  render();
                },
              }, 'Revoke')
            : null,
        ),
      ),
    ),
  );
  return wrap;
}

start().catch((e) => {
  console.error(e);
  $('#app').replaceChildren(el('section', { class: 'card' }, el('h1', {}, 'Kathon Sync could not start'), el('p', {}, plainError(e))));
});

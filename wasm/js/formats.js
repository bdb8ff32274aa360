// The import/export module (`kathon_formats.js` and its `.wasm`, built from `wasm/formats/`),
// loaded the first time a page imports or exports a file: its parsers and writers took 59 KB of
// the store's module gzipped, and most pages never use them.
//
// wasm-bindgen copies this file to `snippets/<crate>/js/formats.js` inside the package (and
// inside `bundler/`), so the module sits three directories up, in the same flavour.

let loading;

function formats() {
  loading ??= import('../../../kathon_formats.js').then(async (module) => {
    // The web flavour exports its initialiser (it fetches the `.wasm` next to the module); the
    // bundler flavour is ready once imported.
    if (typeof module.default === 'function') await module.default();
    return module;
  });
  // A load that failed (offline, a file missing) is tried again on the next call.
  loading.catch(() => {
    loading = undefined;
  });
  return loading;
}

export async function parseBookmarksHtml(text) {
  return (await formats()).parseBookmarksHtml(text);
}

export async function parseChromiumBookmarks(text) {
  return (await formats()).parseChromiumBookmarks(text);
}

export async function parsePasswordsCsv(text) {
  return (await formats()).parsePasswordsCsv(text);
}

export async function writeBookmarksHtml(file) {
  return (await formats()).writeBookmarksHtml(file);
}

export async function writeChromiumBookmarks(file) {
  return (await formats()).writeChromiumBookmarks(file);
}

// `rows` holds passwords in the clear: wiped once written, whatever happens.
export async function writePasswordsCsv(rows) {
  try {
    return (await formats()).writePasswordsCsv(rows);
  } finally {
    rows.fill(0);
  }
}

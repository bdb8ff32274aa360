// `warmUp()`: the store's write path run once in a worker, so that the page's first edits do not
// pay for compiling it. V8 shares a module's compiled code between a page and its workers (the
// same bytes in the same process make one compiled module), so the functions the worker compiles
// — and those V8 optimises while it runs — are ready when the page calls them.
//
// This one file is both sides: in the page it starts the worker (this file again, as a module
// worker); in the worker it makes a throwaway store, writes to it, and deletes its database.
// wasm-bindgen copies it to `snippets/<crate>/js/warm.js`, three directories below the package's
// own module.

const inWorker = typeof WorkerGlobalScope !== 'undefined' && self instanceof WorkerGlobalScope;

/** Starts the worker; resolves to whether the warm-up ran to the end. */
export function startWarmUp(edits) {
  return new Promise((resolve) => {
    let worker;
    try {
      worker = new Worker(new URL('./warm.js', import.meta.url), { type: 'module' });
    } catch {
      resolve(false); // no module workers here (or a policy forbids them): nothing to gain
      return;
    }
    const done = (ran) => {
      worker.terminate();
      resolve(ran);
    };
    worker.onmessage = ({ data }) => done(data === true);
    worker.onerror = () => done(false);
    worker.postMessage(edits);
  });
}

async function warmUp(edits) {
  const name = `kathon-warm-up-${crypto.randomUUID()}`;
  const glue = await import('../../../kathon_wasm.js');
  // The web flavour exports its initialiser; the bundler flavour is ready once imported.
  if (typeof glue.default === 'function') await glue.default();
  try {
    const store = await glue.KathonStore.open(name);
    store.createIdentity('warm-up');
    for (let i = 0; i < edits; i += 1) {
      store.addBookmark({ title: `Warm-up ${i}: a title of ordinary length`, url: `https://warm-up-${i}.example/a/path?q=${i}`, parent: 'toolbar' });
      // Edits one task apart, as a page makes them: the commit window's timer runs between.
      if (i % 16 === 15) await new Promise((resolve) => setTimeout(resolve, 0));
    }
    await store.flush();
    store.bookmarkChildren('toolbar');
    store.counts();
    store.close();
    await store.flush();
  } finally {
    await new Promise((resolve) => {
      const deleting = indexedDB.deleteDatabase(`kathon-sync:${name}`);
      deleting.onsuccess = deleting.onerror = deleting.onblocked = resolve;
    });
  }
}

if (inWorker) {
  self.onmessage = ({ data }) => {
    warmUp(Number(data) || 0).then(
      () => self.postMessage(true),
      () => self.postMessage(false),
    );
  };
}

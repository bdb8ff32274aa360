// Keeps the demo usable offline: the page and the package are cached on first load and served
// from the cache when the bridge (which serves them) is not running. Network first, so an
// updated page is picked up as soon as it is reachable.
const CACHE = 'kathon-demo-v2';
// The import/export module is kept too, so a file can be imported offline. `cargo xtask
// build-demo` writes the package's snippets (which the store's module imports, under a path
// with a hash in it) where the marker is.
const SHELL = [/* the package's snippets */ './', 'index.html', 'app.js', 'style.css', 'qrcode.mjs', 'kathon_wasm.js', 'kathon_wasm_bg.wasm', 'kathon_formats.js', 'kathon_formats_bg.wasm'];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== location.origin || url.pathname.startsWith('/status') || url.pathname.startsWith('/ws')) return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(event.request, copy));
        }
        return response;
      })
      .catch(() => caches.match(event.request).then((hit) => hit ?? caches.match('index.html'))),
  );
});

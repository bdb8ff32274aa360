import { fileURLToPath } from 'node:url';

export default {
  logLevel: 'warn',
  resolve: {
    alias: {
      'kathon-sync': fileURLToPath(new URL('../../pkg/kathon_wasm.js', import.meta.url)),
      // The package's import/export module: the same file (so the same instance) the package's
      // snippet loads on the first import; the bench only reads its memory.
      'kathon-sync-formats': fileURLToPath(new URL('../../pkg/kathon_formats.js', import.meta.url)),
      // Built by run.mjs: the Ed25519 floor and verified ingest, compiled like the package.
      'kathon-bench-wasm': fileURLToPath(new URL('../../target/bench-wasm-pkg/kathon_bench_wasm.js', import.meta.url)),
    },
  },
  build: { outDir: '../../target/bench-browser', emptyOutDir: true, target: 'esnext', chunkSizeWarningLimit: 4096 },
};

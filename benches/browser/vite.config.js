import { fileURLToPath } from 'node:url';

export default {
  logLevel: 'warn',
  resolve: { alias: { 'kathon-sync': fileURLToPath(new URL('../../pkg/kathon_wasm.js', import.meta.url)) } },
  build: { outDir: '../../target/bench-browser', emptyOutDir: true, target: 'esnext', chunkSizeWarningLimit: 4096 },
};

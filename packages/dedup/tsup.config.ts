import { copyFile, mkdir } from 'node:fs/promises';
import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // The hashing pool's worker is plain JavaScript, loaded by URL next to the bundle, with the
  // XXH3 kernel it imports (xxh3/, its WebAssembly committed as base64).
  onSuccess: async () => {
    await copyFile('src/hash-worker.js', 'dist/hash-worker.js');
    await mkdir('dist/xxh3', { recursive: true });
    for (const file of ['xxh3.js', 'xxh3-wasm.js']) await copyFile(`src/xxh3/${file}`, `dist/xxh3/${file}`);
  },
});

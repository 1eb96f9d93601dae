import { copyFile } from 'node:fs/promises';
import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // The hashing pool's worker is plain JavaScript, loaded by URL next to the bundle.
  onSuccess: async () => {
    await copyFile('src/hash-worker.js', 'dist/hash-worker.js');
  },
});

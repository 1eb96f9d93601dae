import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.ts', bin: 'src/bin.ts', 'abd-agent': 'src/abd/agent-main.ts' },
  dts: { entry: 'src/index.ts' },
  format: ['esm'],
  sourcemap: true,
  clean: true,
  target: 'node20',
});

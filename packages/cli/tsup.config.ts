import { rmSync } from 'node:fs';
import { defineConfig, type Options } from 'tsup';
import { commonJsNamedExports } from './build/commonjs-named-exports.js';

/**
 * What the executables leave to `node_modules` (each a dependency in package.json):
 * - pg and pg-boss: loaded only with `--store`; pg requires `pg-native` when asked to;
 * - the simulators: they start child processes from paths relative to their own files, with tsx,
 *   and read tree-sitter's WebAssembly from disk;
 * - cli-progress: loaded with `createRequire` on the first progress bar.
 */
const BIN_EXTERNAL = ['pg', 'pg-boss', '@replikit/xapi-sim', '@replikit/hyperv-sim', 'cli-progress'];

/**
 * CommonJS code inlined into an ES module calls `require` for Node's built-in modules: esbuild's
 * shim uses a `require` in scope when there is one, so each chunk gets one, for its own file.
 * (`__dirname` is left undefined: only QuickJS reads it, for a PAC proxy, which replikit never
 * configures for xen-api.)
 */
const COMMONJS_BANNER = [
  "import { createRequire as __replikitCreateRequire } from 'node:module';",
  'const require = __replikitCreateRequire(import.meta.url);',
].join('\n');

/** `text` as a literal in a regular expression. */
const regExpLiteral = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

const common: Options = {
  format: ['esm'],
  sourcemap: true,
  target: 'node20',
  platform: 'node',
  // Several builds write into dist/: it is emptied once, below, instead of by each build.
  clean: false,
};

export default defineConfig((options) => {
  if (!options.watch) rmSync('dist', { recursive: true, force: true });
  return [
    {
      // The library (`import { main } from '@replikit/cli'`): its dependencies stay imports, so a
      // program that also imports @replikit/core shares one copy of the core's classes.
      ...common,
      name: 'library',
      entry: ['src/index.ts'],
      dts: { entry: 'src/index.ts' },
    },
    {
      // `replikit` and `replikit-agent`: bundles, which start faster than a graph of packages of
      // small files. Each command's code stays a chunk loaded when that command runs.
      ...common,
      name: 'executables',
      entry: ['src/bin.ts', 'src/agent-bin.ts'],
      splitting: true,
      // Every import is inlined but those (`external` alone would lose to `noExternal`).
      noExternal: [new RegExp(`^(?!(${BIN_EXTERNAL.map(regExpLiteral).join('|')})(/|$))`)],
      external: BIN_EXTERNAL,
      banner: { js: COMMONJS_BANNER },
      esbuildPlugins: [commonJsNamedExports],
      esbuildOptions(esbuild) {
        esbuild.chunkNames = 'bin-chunk-[hash]';
        // The maps still give each line's file and line, without a copy of every inlined
        // library's source (11 MB of maps in dist/ with them, 3.6 MB without).
        esbuild.sourcesContent = false;
      },
    },
    {
      // The hashing pool's thread, which the pool starts from `./hash-worker.js` beside the code of
      // the pool (inlined into the executables' chunks, in dist/): one file, nothing imported.
      ...common,
      name: 'hash-worker',
      entry: { 'hash-worker': '../dedup/src/hash-worker.js' },
      splitting: false,
      noExternal: [/.*/],
    },
  ];
});

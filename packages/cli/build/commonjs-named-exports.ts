import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Options } from 'tsup';

type EsbuildPlugin = NonNullable<Options['esbuildPlugins']>[number];

const NAMESPACE = 'commonjs-named-exports';
const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** True when Node loads `file` as CommonJS: `.cjs`, or `.js` in a package that is not `"type": "module"`. */
function isCommonJs(file: string): boolean {
  if (file.endsWith('.cjs')) return true;
  if (!file.endsWith('.js')) return false;
  for (let dir = dirname(file); dirname(dir) !== dir; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest))
      return (JSON.parse(readFileSync(manifest, 'utf8')) as { type?: string }).type !== 'module';
  }
  return true;
}

/**
 * Keeps `await import('pkg')` of a CommonJS package working once inlined with code splitting.
 * Node gives such an import the package's exports by name (`(await import('yaml')).parse`), but
 * esbuild's chunk for it exports only `default`. This plugin puts a small ES module between them
 * that exports `module.exports` as `default` and each of its properties by name (the names are
 * read by loading the package here, at build time), as Node would.
 */
export const commonJsNamedExports: EsbuildPlugin = {
  name: NAMESPACE,
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, async (args) => {
      if (args.kind !== 'dynamic-import' || args.pluginData === NAMESPACE) return undefined;
      const resolved = await build.resolve(args.path, {
        kind: args.kind,
        importer: args.importer,
        resolveDir: args.resolveDir,
        pluginData: NAMESPACE,
      });
      if (resolved.errors.length > 0 || resolved.external || !isCommonJs(resolved.path)) return undefined;
      return { path: resolved.path, namespace: NAMESPACE };
    });
    build.onLoad({ filter: /.*/, namespace: NAMESPACE }, (args) => {
      const exported = createRequire(args.path)(args.path) as Record<string, unknown>;
      const names = Object.keys(exported).filter(
        (name) => IDENTIFIER.test(name) && name !== 'default' && name !== '__esModule',
      );
      // `export { value0 as name }` takes any name, even a reserved word such as `delete`.
      const contents = [
        `const commonJs = require(${JSON.stringify(args.path)});`,
        'export default commonJs;',
        ...names.map((name, i) => `const value${i} = commonJs.${name};\nexport { value${i} as ${name} };`),
      ].join('\n');
      return { contents, resolveDir: dirname(args.path), loader: 'js' };
    });
  },
};

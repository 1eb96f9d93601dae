#!/usr/bin/env node
// Runs a command under another major version of Node.js, fetched from the npm registry:
//   node scripts/with-node.mjs 24 -- npx vitest run
// The npm package `node-<platform>-<arch>@<major>` carries the Node binary inside its tarball, so
// `npm install` into .tools/node-<major>/ is all it takes (no other download, no global change).
// The command runs with that Node's bin folder first on PATH, so `node`, `npx vitest` and the
// tests' child processes (process.execPath) all use it. Exits with the command's exit code.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const [major, separator, command, ...commandArgs] = process.argv.slice(2);
if (!/^\d+$/.test(major ?? '') || separator !== '--' || !command) {
  console.error('usage: node scripts/with-node.mjs <major> -- <command> [args…]');
  process.exit(2);
}

const prefix = join(root, '.tools', `node-${major}`);
const pkg = `node-${process.platform}-${process.arch}`;
const bin = join(prefix, 'node_modules', pkg, 'bin');

function nodeVersion(binary) {
  const result = spawnSync(binary, ['--version'], { encoding: 'utf8' });
  return result.status === 0 ? result.stdout.trim() : undefined;
}

if (!nodeVersion(join(bin, 'node'))?.startsWith(`v${major}.`)) {
  console.error(`[with-node] installing ${pkg}@${major} into .tools/node-${major}/ with npm`);
  const install = spawnSync(
    'npm',
    ['install', '--no-save', '--no-audit', '--no-fund', '--no-package-lock', '--prefix', prefix, `${pkg}@${major}`],
    { stdio: 'inherit' },
  );
  if (install.status !== 0 || !existsSync(join(bin, 'node'))) {
    console.error(`[with-node] could not install ${pkg}@${major}; is the npm registry reachable?`);
    process.exit(1);
  }
}

console.error(`[with-node] ${command} ${commandArgs.join(' ')} under Node ${nodeVersion(join(bin, 'node'))}`);
const result = spawnSync(command, commandArgs, {
  cwd: process.cwd(),
  stdio: 'inherit',
  env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ''}` },
});
if (result.error) {
  console.error(`[with-node] could not start ${command}: ${result.error.message}`);
  process.exit(1);
}
process.exit(result.status ?? 1);

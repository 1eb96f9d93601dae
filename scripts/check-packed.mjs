#!/usr/bin/env node
// Proves the published shape of every package, as a user would meet it:
//   1. packs each package with pnpm (its `prepack` builds dist/; pnpm applies `publishConfig` and
//      turns `workspace:^` into real version ranges),
//   2. checks each tarball: LICENSE, README.md, every file its `exports` and `bin` name, no src/,
//      no `workspace:` range, no `@replikit/source` condition,
//   3. installs all tarballs with npm into a fresh temporary project (no workspace), with
//      typescript and @types/node as a consumer would,
//   4. runs an ESM script that replicates a small VM and compares the replica's bytes,
//   5. typechecks a TypeScript consumer strictly (`--moduleResolution nodenext`, no skipLibCheck),
//   6. runs `npx replikit demo` (and --single-pass, --network; small disks) from the installed CLI,
//   7. checks that the installed `replikit` and `replikit-agent` are bundles (a command loads no
//      file outside the CLI's dist/) and that the hashing pool's worker beside them starts.
// Exits non-zero, naming the package and what is wrong, at the first failed check.
//   node scripts/check-packed.mjs [--keep]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { gunzipSync } from 'node:zlib';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const keep = process.argv.includes('--keep');
const pnpm = join(root, '.tools', 'node_modules', '.bin', 'pnpm');
const rootPkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

function log(message) {
  console.error(`[check-packed] ${message}`);
}

function fail(message) {
  console.error(`[check-packed] FAILED: ${message}`);
  process.exit(1);
}

function run(command, args, cwd) {
  const result = spawnSync(command, args, { cwd, stdio: 'inherit' });
  if (result.error) fail(`could not start ${command}: ${result.error.message}`);
  if (result.status !== 0) fail(`'${command} ${args.join(' ')}' exited with ${result.status} (in ${cwd})`);
}

/** The entries of a .tgz (ustar, as npm and pnpm write it): path → file content. */
function readTarball(file) {
  const data = gunzipSync(readFileSync(file));
  const entries = new Map();
  let longName;
  for (let offset = 0; offset + 512 <= data.length; ) {
    const header = data.subarray(offset, offset + 512);
    if (header.every((byte) => byte === 0)) break;
    const field = (start, length) => header.toString('utf8', start, start + length).replace(/\0.*$/s, '');
    const size = Number.parseInt(field(124, 12).trim() || '0', 8);
    const type = field(156, 1);
    const prefix = field(345, 155);
    const name = longName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    longName = undefined;
    const body = data.subarray(offset + 512, offset + 512 + size);
    if (type === 'L') longName = body.toString('utf8').replace(/\0.*$/s, '');
    else if (type === '0' || type === '') entries.set(name.replace(/^package\//, ''), body);
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  return entries;
}

function exportTargets(exportsField) {
  if (typeof exportsField === 'string') return [exportsField];
  if (!exportsField || typeof exportsField !== 'object') return [];
  return Object.values(exportsField).flatMap(exportTargets);
}

function checkTarball(file) {
  const entries = readTarball(file);
  const manifestBytes = entries.get('package.json');
  if (!manifestBytes) fail(`${file} has no package.json`);
  const manifest = JSON.parse(manifestBytes.toString('utf8'));
  const problems = [];
  for (const required of ['LICENSE', 'README.md']) {
    if (!entries.has(required)) problems.push(`no ${required}`);
  }
  if (!/Apache License\s+Version 2\.0/.test(entries.get('LICENSE')?.toString('utf8') ?? '')) {
    problems.push('LICENSE is not the Apache-2.0 text');
  }
  const bins = typeof manifest.bin === 'string' ? [manifest.bin] : Object.values(manifest.bin ?? {});
  for (const target of [...exportTargets(manifest.exports), ...bins]) {
    if (!entries.has(target.replace(/^\.\//, ''))) problems.push(`no ${target} (named by exports or bin)`);
  }
  if (![...entries.keys()].some((path) => path.startsWith('dist/'))) problems.push('no dist/');
  if ([...entries.keys()].some((path) => path.startsWith('src/'))) problems.push('ships src/');
  if (manifestBytes.includes('@replikit/source'))
    problems.push('package.json still names the @replikit/source condition');
  for (const [name, range] of Object.entries({ ...manifest.dependencies, ...manifest.peerDependencies })) {
    if (String(range).startsWith('workspace:')) problems.push(`dependency ${name} is "${range}"`);
  }
  if (problems.length > 0) fail(`${manifest.name} (${file}): ${problems.join('; ')}`);
  log(`${manifest.name}: ${entries.size} files, LICENSE, dist/ and every export present`);
  return manifest.name;
}

const consumerScript = `// Written by scripts/check-packed.mjs: the library as an ESM user imports it.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStateStore, ReplicationEngine, registerDriver } from '@replikit/core';
import { createFileVM, fileDriver, fileVmPaths, readVmJson, writeGuestDisk } from '@replikit/driver-file';
import { localTransport } from '@replikit/transport';

const dir = await mkdtemp(join(tmpdir(), 'replikit-consumer-'));
try {
  const vms = join(dir, 'vms');
  const replicas = join(dir, 'replicas');
  registerDriver(fileDriver);
  await createFileVM(vms, { name: 'web', disks: [{ id: 'system', size: 8 * 1024 * 1024 }] });
  await writeGuestDisk(vms, 'web', 'system', 1024 * 1024, new Uint8Array(256 * 1024).fill(42));
  const engine = new ReplicationEngine({ stateStore: new FileStateStore(join(dir, 'state')), transport: localTransport() });
  const job = { name: 'consumer', source: { driver: 'file', root: vms, vm: 'web' }, target: { driver: 'file', root: replicas }, method: 'qhybrid' };
  const run = await engine.run(job);
  if (run.state !== 'completed') throw new Error('the run ended ' + run.state);
  const digest = async (root, name) => {
    const paths = fileVmPaths(root, name);
    const vm = await readVmJson(paths.dir);
    return createHash('sha256').update(await readFile(join(paths.dir, vm.disks[0].file))).digest('hex');
  };
  const [want, got] = await Promise.all([digest(vms, 'web'), digest(replicas, run.replica.name)]);
  if (want !== got) throw new Error('the replica differs from the source');
  console.log('consumer.mjs: replicated ' + run.stats.bytesSent + ' bytes, replica equals the source');
} finally {
  await rm(dir, { recursive: true, force: true });
}
`;

const consumerTypes = `// Written by scripts/check-packed.mjs: every package's types, as a strict TypeScript user sees them.
import { type JobSpecInput, ReplicationEngine, FileStateStore, type RunRecord, registerDriver } from '@replikit/core';
import { runDriverConformance } from '@replikit/core/testing';
import { createFileDriver, fileDriver } from '@replikit/driver-file';
import { createHashingPool } from '@replikit/dedup';
import { createAgent, localTransport, type Security } from '@replikit/transport';
import * as formats from '@replikit/formats';
import { main } from '@replikit/cli';

registerDriver(fileDriver);
const job: JobSpecInput = { name: 'typed', source: { driver: 'file', root: '/srv', vm: 'a' }, target: { driver: 'file', root: '/dr' }, method: 'qhybrid' };
const security: Security = { kind: 'tls', psk: { identity: 'x', key: new Uint8Array(32) } };
export const agent = createAgent({ target: createFileDriver({ root: '/dr' }), security, hasher: (algorithm) => createHashingPool({ algorithm }) });
export async function once(): Promise<RunRecord> {
  return new ReplicationEngine({ stateStore: new FileStateStore('.replikit'), transport: localTransport() }).run(job);
}
export const used = [runDriverConformance, formats, main] as const;
`;

const consumerTsconfig = {
  compilerOptions: {
    target: 'ES2022',
    module: 'nodenext',
    moduleResolution: 'nodenext',
    strict: true,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    verbatimModuleSyntax: true,
    skipLibCheck: false,
    noEmit: true,
    types: ['node'],
  },
  files: ['consumer.ts'],
};

const work = mkdtempSync(join(tmpdir(), 'replikit-check-packed-'));
// On every exit, fail()'s included: the temporary project goes unless --keep asks for it.
process.on('exit', () => {
  if (keep) log(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
});
const tarballs = join(work, 'tarballs');
mkdirSync(tarballs);
const packageDirs = readdirSync(join(root, 'packages'))
  .map((name) => join(root, 'packages', name))
  .filter((dir) => existsSync(join(dir, 'package.json')))
  .filter((dir) => !JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).private);
for (const dir of packageDirs) {
  log(`packing ${dir} (its prepack builds dist/)`);
  run(pnpm, ['pack', '--pack-destination', tarballs], dir);
}
const files = readdirSync(tarballs).map((name) => join(tarballs, name));
if (files.length !== packageDirs.length) fail(`${packageDirs.length} packages gave ${files.length} tarballs`);
files.forEach(checkTarball);

const project = join(work, 'project');
mkdirSync(project);
writeFileSync(
  join(project, 'package.json'),
  `${JSON.stringify({ name: 'replikit-consumer', private: true, type: 'module' }, null, 2)}\n`,
);
writeFileSync(join(project, 'consumer.mjs'), consumerScript);
writeFileSync(join(project, 'consumer.ts'), consumerTypes);
writeFileSync(join(project, 'tsconfig.json'), `${JSON.stringify(consumerTsconfig, null, 2)}\n`);
const typescript = rootPkg.devDependencies.typescript;
const nodeTypes = `@types/node@${process.versions.node.split('.')[0]}`;
log(`installing the ${files.length} tarballs, typescript@${typescript} and ${nodeTypes} with npm`);
run('npm', ['install', '--no-audit', '--no-fund', ...files, `typescript@${typescript}`, nodeTypes], project);

log('ESM consumer: replicating a small VM');
run('node', ['consumer.mjs'], project);
log('TypeScript consumer: tsc --strict --moduleResolution nodenext, no skipLibCheck');
run('npx', ['--no-install', 'tsc', '-p', 'tsconfig.json'], project);
for (const variant of [[], ['--single-pass'], ['--network']]) {
  log(`npx replikit ${['demo', ...variant].join(' ')} from the installed CLI`);
  run('npx', ['--no-install', 'replikit', 'demo', ...variant, '--size-a', '32MiB', '--size-b', '16MiB'], project);
}

// The executables are bundles: a command loads the CLI's own dist/ and Node's modules, nothing
// from node_modules but what the CLI keeps external on purpose (none of it for these commands).
// A module hook reports every file the process loads.
writeFileSync(
  join(project, 'load-hooks.mjs'),
  `export async function load(url, context, nextLoad) {
  if (url.startsWith('file:')) process.stderr.write('[loaded] ' + url + '\\n');
  return nextLoad(url, context);
}
`,
);
writeFileSync(
  join(project, 'report-loads.mjs'),
  "import { register } from 'node:module';\nregister(new URL('./load-hooks.mjs', import.meta.url));\n",
);
// A YAML job of a driver the CLI ships as a package of its own: yaml and driver-xen are imported
// on demand (as named exports, which Node gives a CommonJS package and a bundler may not).
writeFileSync(
  join(project, 'xen-job.yaml'),
  [
    'name: bundle-check',
    'source: { driver: xen, url: "https://127.0.0.1:9", credentialsFile: xen-password, vm: web }',
    'target: { driver: file, root: replicas }',
    'method: qhybrid',
    '',
  ].join('\n'),
);
const cliDist = join(project, 'node_modules', '@replikit', 'cli', 'dist');
for (const [bin, args] of [
  ['bin.js', ['--version']],
  ['bin.js', ['validate', 'xen-job.yaml']],
  ['agent-bin.js', ['--help']],
]) {
  const command = `${bin} ${args.join(' ')}`;
  const result = spawnSync('node', ['--import', './report-loads.mjs', join(cliDist, bin), ...args], {
    cwd: project,
    encoding: 'utf8',
  });
  if (result.status !== 0) fail(`${command} exited with ${result.status}: ${result.stderr}`);
  // The usage is printed as is, not as a timestamped log line.
  if (args[0] === '--help' && !result.stdout.startsWith('replikit-agent: ')) {
    fail(`${command} printed ${JSON.stringify(result.stdout.slice(0, 40))}… instead of its usage`);
  }
  const loaded = [...result.stderr.matchAll(/^\[loaded\] (file:.*)$/gm)].map((match) => fileURLToPath(match[1]));
  const outside = loaded.filter((file) => !file.startsWith(`${cliDist}/`));
  if (outside.length > 0) fail(`${command} loaded files outside the CLI's bundle: ${outside.slice(0, 5).join(', ')}`);
  log(`${command}: ${loaded.length} files loaded, all from the CLI's dist/`);
}
// The hashing pool's thread, built beside the bundle's chunks: one file that imports only Node's
// modules, and starts (it posts a first message when it is ready).
const workerFile = join(cliDist, 'hash-worker.js');
const workerImports = [...readFileSync(workerFile, 'utf8').matchAll(/(?:\bfrom|\bimport)\s*\(?\s*["']([^"']+)["']/g)]
  .map((match) => match[1])
  .filter((name) => !builtinModules.includes(name.replace(/^node:/, '')));
if (workerImports.length > 0) fail(`dist/hash-worker.js imports ${workerImports.join(', ')}`);
const workerStarted = await new Promise((resolve) => {
  const worker = new Worker(workerFile, { workerData: { kind: 'xxh128', thread: 0, digestLength: 16 }, execArgv: [] });
  worker.once('message', () => worker.terminate().then(() => resolve(true)));
  worker.once('error', (error) => resolve(error));
});
if (workerStarted !== true) fail(`dist/hash-worker.js did not start as a worker thread: ${workerStarted}`);
log('dist/hash-worker.js: self-contained, starts as a worker thread');
log(`all ${files.length} packages install and work from their tarballs`);

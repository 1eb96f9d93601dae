#!/usr/bin/env node
// Bootstraps a fresh checkout with nothing but Node.js (20, 22 or 24) and npm:
//   1. a pinned pnpm, installed by npm into .tools/ (no global change),
//   2. the workspace's dependencies (pnpm install, frozen lockfile),
//   3. with --build: the packages' dist/ folders, rebuilt only when a source file is newer,
//   4. with --system (`npm test`): the Debian packages that some tests use as real peers, listed in
//      scripts/system-packages.txt, through apt-get as root, when missing; with --bench too
//      (`npm run bench`), the benchmarks' peers as well.
// Without --system nothing outside the checkout is needed or touched: `npm run demo` and the CLI
// run as an ordinary user with only node, npm and sh on PATH.
// Each step is skipped when already done, so running it before every command costs little.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
const quiet = args.has('--quiet');
const rootPkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const pnpmVersion = rootPkg.packageManager.replace(/^pnpm@/, '');

function log(message) {
  if (!quiet) console.error(`[setup] ${message}`);
}

function run(command, commandArgs, options = {}) {
  const result = spawnSync(command, commandArgs, {
    cwd: options.cwd ?? root,
    stdio: quiet ? ['ignore', 'ignore', 'inherit'] : 'inherit',
    env: { ...process.env, ...options.env },
  });
  if (result.error) throw new Error(`could not start ${command}: ${result.error.message}`);
  if (result.status !== 0) {
    console.error(`[setup] '${command} ${commandArgs.join(' ')}' failed with exit code ${result.status}`);
    process.exit(result.status ?? 1);
  }
}

function mtime(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

function newestUnder(dir) {
  let newest = 0;
  if (!existsSync(dir)) return newest;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestUnder(path) : mtime(path));
  }
  return newest;
}

function ensurePnpm() {
  const local = join(root, '.tools', 'node_modules', '.bin', 'pnpm');
  if (existsSync(local)) return local;
  log(`installing pnpm ${pnpmVersion} into .tools/ with npm`);
  run('npm', [
    'install',
    '--no-save',
    '--no-audit',
    '--no-fund',
    '--prefix',
    join(root, '.tools'),
    `pnpm@${pnpmVersion}`,
  ]);
  return local;
}

function packageDirs() {
  const dir = join(root, 'packages');
  return readdirSync(dir)
    .map((name) => join(dir, name))
    .filter((path) => existsSync(join(path, 'package.json')));
}

function ensureDependencies(pnpm) {
  const marker = join(root, 'node_modules', '.modules.yaml');
  const inputs = [
    join(root, 'pnpm-lock.yaml'),
    join(root, 'package.json'),
    join(root, 'pnpm-workspace.yaml'),
    join(root, 'examples', 'package.json'),
    join(root, 'bench', 'package.json'),
    ...packageDirs().map((d) => join(d, 'package.json')),
  ];
  if (existsSync(marker) && inputs.every((input) => mtime(input) <= mtime(marker))) return;
  log('installing dependencies with pnpm');
  const frozen = existsSync(join(root, 'pnpm-lock.yaml')) ? ['--frozen-lockfile'] : [];
  run(pnpm, ['install', ...frozen], { env: { CI: process.env.CI ?? 'true' } });
}

/**
 * The workspace packages in dependency order: a package comes after the packages it uses at run
 * time. Dev dependencies are left out: tests may use a package that depends on the one under test
 * (core's tests run the engine with @replikit/transport's in-process transport), a cycle a build
 * order cannot follow, and a build never needs them.
 */
function packagesInBuildOrder() {
  const manifests = new Map(
    packageDirs().map((dir) => [dir, JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))]),
  );
  const byName = new Map([...manifests].map(([dir, manifest]) => [manifest.name, dir]));
  const ordered = [];
  const visit = (dir) => {
    if (ordered.includes(dir)) return;
    const manifest = manifests.get(dir);
    for (const dependency of Object.keys({ ...manifest.dependencies, ...manifest.peerDependencies })) {
      const dependencyDir = byName.get(dependency);
      if (dependencyDir && dependencyDir !== dir) visit(dependencyDir);
    }
    if (!ordered.includes(dir)) ordered.push(dir);
  };
  for (const dir of manifests.keys()) visit(dir);
  return ordered.map((dir) => ({ dir, manifest: manifests.get(dir) }));
}

/** The JavaScript file behind a root dev dependency's command, e.g. tsup's dist/cli-default.js. */
function binScript(packageName, command) {
  const manifestPath = join(root, 'node_modules', packageName, 'package.json');
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'));
  const relative = typeof manifest.bin === 'string' ? manifest.bin : manifest.bin?.[command];
  if (!relative) throw new Error(`${packageName} has no '${command}' command`);
  return join(dirname(manifestPath), relative);
}

// Each package's build script is `tsup`. It runs as `node <tsup's script>`, not through pnpm run:
// the node_modules/.bin shims pnpm writes are shell scripts that call sed, dirname and uname, which
// a user with only node, npm and sh on PATH does not have.
function ensureBuilt(pnpm) {
  const stale =
    args.has('--force-build') ||
    packageDirs().some((dir) => {
      const built = mtime(join(dir, 'dist', 'index.js'));
      return built === 0 || newestUnder(join(dir, 'src')) > built || mtime(join(dir, 'package.json')) > built;
    });
  if (!stale) return;
  log('building packages');
  for (const { dir, manifest } of packagesInBuildOrder()) {
    if (manifest.scripts?.build === 'tsup') {
      log(`building ${manifest.name}`);
      run(process.execPath, [binScript('tsup', 'tsup')], { cwd: dir });
    } else {
      run(pnpm, ['run', 'build'], { cwd: dir });
    }
  }
}

// True when `path` exists; `*` in a segment matches any name there, as in
// /usr/lib/postgresql/*/bin/initdb (programs a package installs off PATH).
function pathPresent(path) {
  const segments = path.split('/').filter(Boolean);
  const walk = (dir, rest) => {
    if (rest.length === 0) return existsSync(dir);
    const [segment, ...tail] = rest;
    if (!segment.includes('*')) return walk(join(dir, segment), tail);
    const escaped = segment.split('*').map((part) => part.replace(/[.+?^$|()[\]{}\\]/g, '\\$&'));
    const pattern = new RegExp(`^${escaped.join('.*')}$`);
    let names = [];
    try {
      names = readdirSync(dir);
    } catch {
      return false;
    }
    return names.some((name) => pattern.test(name) && walk(join(dir, name), tail));
  };
  return walk('/', segments);
}

/** True when `command` is on PATH, or, given as an absolute path (with `*` allowed), exists. */
function commandPresent(command) {
  if (command.startsWith('/')) return pathPresent(command);
  return spawnSync('sh', ['-c', `command -v "$1"`, 'sh', command]).status === 0;
}

function ensureSystemPackages() {
  const listFile = join(root, 'scripts', 'system-packages.txt');
  if (!existsSync(listFile)) return;
  const wanted = readFileSync(listFile, 'utf8')
    .split('\n')
    .map((line) => line.replace(/#.*/, '').trim())
    .filter(Boolean)
    .map((line) => line.split(/\s+/))
    .filter(([, , purpose]) => purpose === 'test' || (purpose === 'bench' && args.has('--bench')));
  const missing = wanted.filter(([, command]) => !commandPresent(command));
  if (missing.length === 0) return;
  const names = missing.map(([name]) => name);
  if (process.getuid?.() !== 0) {
    const users = missing.map(([name, command, , ...tests]) => `${name} (${command}: ${tests.join(' ')})`);
    console.error(
      `[setup] missing system packages that ${args.has('--bench') ? 'the tests and benchmarks' : 'the tests'} use: ${users.join('; ')}; install them (apt-get install ${names.join(' ')}) or run as root, and retry`,
    );
    process.exit(1);
  }
  log(`installing ${names.join(' ')} with apt-get`);
  const env = { DEBIAN_FRONTEND: 'noninteractive' };
  run('apt-get', ['update', '-qq'], { env });
  run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...names], { env });
}

const pnpm = ensurePnpm();
ensureDependencies(pnpm);
if (args.has('--system')) ensureSystemPackages();
if (args.has('--build')) ensureBuilt(pnpm);

import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTempRoot } from './temp-root.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../../../..');
const childSource = join(here, 'crash-child.ts');

/**
 * The command that runs `crash-child.ts` (or the child `source`). When esbuild is available the child is bundled once
 * (plain `node` then starts in ~0.1 s instead of ~1.5 s with tsx); otherwise it runs through tsx.
 */
export async function prepareCrashChild(source = childSource): Promise<string[]> {
  const esbuild = esbuildBinary();
  if (esbuild) {
    const out = join(await makeTempRoot('rk-crash-child-'), 'crash-child.mjs');
    const built = spawnSync(
      esbuild,
      [
        source,
        '--bundle',
        '--platform=node',
        '--format=esm',
        '--target=node20',
        '--conditions=@replikit/source',
        `--outfile=${out}`,
        '--log-level=error',
      ],
      { cwd: repoRoot, encoding: 'utf8' },
    );
    if (built.status === 0) return [process.execPath, out];
  }
  return [process.execPath, '--conditions=@replikit/source', '--import', 'tsx', source];
}

/** The esbuild binary: the workspace's, else the one tsx depends on (pnpm does not link it to the root). */
function esbuildBinary(): string | undefined {
  const linked = join(repoRoot, 'node_modules/.bin/esbuild');
  if (existsSync(linked)) return linked;
  try {
    const fromTsx = createRequire(createRequire(join(repoRoot, 'package.json')).resolve('tsx'));
    const binary = join(dirname(fromTsx.resolve('esbuild/package.json')), 'bin/esbuild');
    return existsSync(binary) ? binary : undefined;
  } catch {
    return undefined;
  }
}

/** How a child ended. */
export interface ChildOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the crash child with `request` (see crash-child.ts). With `killAfterStartMs`, the parent
 * kills it with SIGKILL that many milliseconds after it prints `started`.
 */
export async function runCrashChild(
  command: string[],
  request: Record<string, unknown>,
  killAfterStartMs?: number,
): Promise<ChildOutcome> {
  const file = join(await makeTempRoot('rk-crash-req-'), 'request.json');
  await writeFile(file, JSON.stringify(request));
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command[0]!, [...command.slice(1), file], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      const first = !stdout.includes('started');
      stdout += chunk;
      if (first && stdout.includes('started') && killAfterStartMs !== undefined) {
        setTimeout(() => child.kill('SIGKILL'), killAfterStartMs);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolvePromise({ code, signal, stdout, stderr }));
  });
}

import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '../../../..');
const childSource = join(here, 'engine-child.ts');

/**
 * The command that runs `engine-child.ts`: bundled once with the esbuild that tsx brings (plain
 * `node` then starts in a fraction of a second), else through tsx.
 */
export async function prepareEngineChild(outDir: string, source = childSource): Promise<string[]> {
  try {
    const require = createRequire(createRequire(import.meta.url).resolve('tsx'));
    const esbuild = require('esbuild') as { build(options: Record<string, unknown>): Promise<unknown> };
    const outfile = join(outDir, `${basename(source, '.ts')}.mjs`);
    await esbuild.build({
      entryPoints: [source],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      conditions: ['@replikit/source'],
      outfile,
      logLevel: 'error',
      // Bundled CommonJS dependencies call require(): give the ESM bundle one.
      banner: {
        js: "import { createRequire as __rkRequire } from 'node:module'; const require = __rkRequire(import.meta.url);",
      },
    });
    return [process.execPath, outfile];
  } catch {
    return [process.execPath, '--conditions=@replikit/source', '--import', 'tsx', source];
  }
}

/** How a child ended, and what it printed. */
export interface EngineChildOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The run's states, in the order the child announced them. */
  states: string[];
  /** When the child entered each of {@link EngineChildOutcome.states} (ms after it started). */
  stateTimes: number[];
  /** The `result` line's object, when the child got that far. */
  result?: { runId: string; state: string; outcome?: string; error?: { code?: string; message?: string } };
  /** The `error` line's object, when the engine threw. */
  error?: { code?: string; message?: string };
  stderr: string;
}

/** A running child: `kill()` sends SIGKILL; `done` settles when it has exited. */
export interface EngineChild {
  kill(): void;
  readonly done: Promise<EngineChildOutcome>;
}

/**
 * Starts the engine child with `request` (see engine-child.ts). `onStarted` runs once the child
 * has loaded its modules (before the run starts); `onState` each time the child announces a state
 * (as the line arrives, so a caller can act inside that state).
 */
export async function startEngineChild(
  command: string[],
  request: Record<string, unknown>,
  requestFile: string,
  onStarted?: () => void,
  onState?: (state: string) => void,
): Promise<EngineChild> {
  await writeFile(requestFile, JSON.stringify(request));
  const child = spawn(command[0]!, [...command.slice(1), requestFile], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const outcome: EngineChildOutcome = { code: null, signal: null, states: [], stateTimes: [], stderr: '' };
  let pending = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    for (let eol = pending.indexOf('\n'); eol >= 0; eol = pending.indexOf('\n')) {
      const line = pending.slice(0, eol);
      pending = pending.slice(eol + 1);
      if (line === 'started') onStarted?.();
      else if (line.startsWith('state ')) {
        const [state, ms] = line.slice(6).split(' ');
        outcome.states.push(state!);
        outcome.stateTimes.push(Number(ms));
        onState?.(state!);
      } else if (line.startsWith('result ')) outcome.result = JSON.parse(line.slice(7));
      else if (line.startsWith('error ')) outcome.error = JSON.parse(line.slice(6));
    }
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    outcome.stderr += chunk;
  });
  const done = new Promise<EngineChildOutcome>((resolvePromise, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      outcome.code = code;
      outcome.signal = signal;
      resolvePromise(outcome);
    });
  });
  return { kill: () => child.kill('SIGKILL'), done };
}

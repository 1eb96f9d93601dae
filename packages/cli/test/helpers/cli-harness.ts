import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { main } from '../../src/main.js';

/** The repository root. */
export const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));

/** The CLI's entry point, run from its TypeScript source through tsx. */
export const binSource = fileURLToPath(new URL('../../src/bin.ts', import.meta.url));

/** A writable stream that keeps what is written (a command's stdout or stderr), not a TTY. */
export class Capture extends Writable {
  text = '';
  isTTY = false;
  override _write(chunk: Buffer, _encoding: string, callback: () => void): void {
    this.text += chunk.toString();
    callback();
  }
}

/** Runs `replikit <args>` in this process with captured streams. */
export async function runCli(
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await main(args, {
    stdout: stdout as unknown as NodeJS.WriteStream,
    stderr: stderr as unknown as NodeJS.WriteStream,
    cwd: options.cwd ?? process.cwd(),
    // The state folder of the tests is the old default, `.replikit` in the working folder.
    env: { REPLIKIT_STATE_DIR: join(options.cwd ?? process.cwd(), '.replikit'), ...options.env },
    signal: new AbortController().signal,
  });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

/** tsx's loader, by absolute URL: children run in folders where `tsx` would not resolve. */
const tsxLoader = pathToFileURL(
  join(dirname(createRequire(import.meta.url).resolve('tsx/package.json')), 'dist', 'loader.mjs'),
).href;

/** Spawns `replikit <args>` as a child process (from source, through tsx). */
export function spawnCli(args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv }) {
  return spawn(process.execPath, ['--conditions=@replikit/source', '--import', tsxLoader, binSource, ...args], {
    cwd: options.cwd,
    env: { ...process.env, REPLIKIT_STATE_DIR: join(options.cwd, '.replikit'), ...options.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Waits for a child to exit; resolves with its code, stdout and stderr. */
export function waitForExit(
  child: ReturnType<typeof spawnCli>,
): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** What `killDuringTransfer` found. */
export interface KillResult {
  /** True when the kill landed (the run had not ended by itself). */
  killed: boolean;
  /** The last state the run announced on stderr before the kill (or before it ended). */
  lastState: string | undefined;
}

/**
 * Spawns `replikit <args>`, waits until its run enters `transfer`, waits `delayMs` more and
 * kills it with SIGKILL.
 */
export async function killDuringTransfer(args: string[], cwd: string, delayMs: number): Promise<KillResult> {
  const child = spawnCli(args, { cwd });
  const exit = waitForExit(child);
  let lastState: string | undefined;
  let announced = '';
  await new Promise<void>((resolve) => {
    child.stderr!.on('data', (chunk: Buffer) => {
      announced += chunk.toString();
      for (const match of announced.matchAll(/\] ([a-z-]+)\n/g)) lastState = match[1];
      announced = announced.slice(announced.lastIndexOf('\n') + 1);
      if (lastState === 'transfer') resolve();
    });
    child.on('close', () => resolve());
  });
  await sleep(delayMs);
  const killed = child.kill('SIGKILL');
  const result = await exit;
  return { killed: killed && result.signal === 'SIGKILL', lastState };
}

import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Fails loudly (never skips) when qemu-img or qemu-io is missing. */
export async function requireQemu(): Promise<void> {
  for (const tool of ['qemu-img', 'qemu-io']) {
    try {
      await run(tool, ['--version']);
    } catch {
      throw new Error(`${tool} is missing: run \`node scripts/setup.mjs\` (it installs Debian's qemu-utils) and retry`);
    }
  }
}

/** Runs a qemu tool; resolves with its exit code and output (never rejects on a non-zero exit). */
export async function qemu(tool: 'qemu-img' | 'qemu-io', args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run(tool, args, { maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, out: stdout + stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

/** Runs a qemu tool and throws with its output unless it exits 0. */
export async function qemuOk(tool: 'qemu-img' | 'qemu-io', args: string[]): Promise<string> {
  const r = await qemu(tool, args);
  if (r.code !== 0) throw new Error(`${tool} ${args.join(' ')} exited ${r.code}: ${r.out}`);
  return r.out;
}

/** The raw virtual content of an image, as qemu-img sees it. */
export async function qemuRaw(dir: string, path: string, format: string): Promise<Uint8Array> {
  const out = join(dir, `qemu-raw-${Math.random().toString(36).slice(2)}.raw`);
  await qemuOk('qemu-img', ['convert', '-f', format, '-O', 'raw', path, out]);
  const bytes = new Uint8Array(await readFile(out));
  await rm(out);
  return bytes;
}

/** A temporary folder, removed by the returned function. */
export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'replikit-formats-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Deterministic pseudo-random bytes (so failures reproduce). */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 255;
    if (i + 1 < length) out[i + 1] = (x >>> 8) & 255;
    if (i + 2 < length) out[i + 2] = (x >>> 16) & 255;
    if (i + 3 < length) out[i + 3] = (x >>> 24) & 255;
  }
  return out;
}

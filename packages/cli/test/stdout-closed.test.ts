// `replikit … | head`: the reader closes the pipe before the CLI has written everything. The CLI
// must not die with an unhandled EPIPE stack trace; it finishes its work quietly.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnCli } from './helpers/cli-harness.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-epipe-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('a closed stdout', () => {
  it('is not a crash', async () => {
    const child = spawnCli(['help'], { cwd: dir });
    child.stdout.destroy(); // the reader is gone before the first write
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
    });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(stderr).not.toContain('EPIPE');
    expect(code).toBe(0);
  }, 60_000);
});

// REPLIKIT_STORE_KEY_FILE: single-pass runs record versions in an encrypted block store; the
// backup commands open it with the same key and refuse another key with E_AUTH (nothing written).
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { runCli } from './helpers/cli-harness.js';
import { createRandomVm } from './helpers/file-vm.js';

const MiB = 1024 * 1024;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-store-key-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('REPLIKIT_STORE_KEY_FILE', () => {
  it('encrypts the block store of single-pass runs and refuses another key', async () => {
    await createRandomVm(join(dir, 'vms'), 'guest', [{ id: 'system', size: 4 * MiB }], 0.8);
    await writeFile(
      join(dir, 'job.yaml'),
      stringify({
        name: 'keyed',
        source: { driver: 'file', root: './vms', vm: 'guest' },
        target: { driver: 'file', root: './replicas' },
        method: 'qhybrid',
        options: { singlePass: true },
      }),
    );
    const key = join(dir, 'store.key');
    await writeFile(key, randomBytes(32).toString('hex'), { mode: 0o600 });
    const wrong = join(dir, 'wrong.key');
    await writeFile(wrong, randomBytes(32), { mode: 0o600 });
    const env = { REPLIKIT_STORE_KEY_FILE: key };
    expect((await runCli(['run', 'job.yaml'], { cwd: dir, env })).code).toBe(0);
    const record = JSON.parse(await readFile(join(dir, '.replikit', 'store', 'key.json'), 'utf8'));
    expect(record.cipher).toBe('aes-256-gcm');
    const listed = await runCli(['backup', 'list', '--json'], { cwd: dir, env });
    const version = (JSON.parse(listed.stdout) as Array<{ id: string }>)[0]!.id;
    const out = join(dir, 'restored.raw');
    expect((await runCli(['backup', 'restore', 'guest', version, 'system', out], { cwd: dir, env })).code).toBe(0);
    expect(
      Buffer.compare(await readFile(out), await readFile(join(dir, 'replicas', 'guest-replica', 'system.raw'))),
    ).toBe(0);

    const refused = await runCli(['backup', 'verify', 'guest', version], {
      cwd: dir,
      env: { REPLIKIT_STORE_KEY_FILE: wrong },
    });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('E_AUTH');
    const again = await runCli(['run', 'job.yaml'], { cwd: dir, env: { REPLIKIT_STORE_KEY_FILE: wrong } });
    expect(again.code).not.toBe(0);
    // Refused in prepare, before the source is snapshotted or the replica touched: one line.
    expect(again.stderr).toContain('E_AUTH');
    expect(again.stderr).not.toMatch(/\] (snapshot|plan|transfer)/);
    expect(again.stderr.split('\n').filter((line) => line.startsWith('replikit:'))).toHaveLength(1);
  }, 60_000);
});

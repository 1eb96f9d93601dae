import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { adminCmdlet, createSimulatedHost } from '../src/index.js';
import { simShell } from './helpers/sim-shell.js';

/*
 * Several drivers act on one host at once (a daemon's or a cluster's jobs on VMs of the same host):
 * each cmdlet reads host.json, changes it and writes it back. Without a lock, concurrent calls lost
 * each other's changes (a 3-worker cluster's runs failed on checkpoint files host.json no longer
 * named).
 */
describe('a simulated host changed by several callers at once', { timeout: 60_000 }, () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('keeps every change: concurrent cmdlets in one process and in two fake pwsh processes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hyperv-lock-'));
    dirs.push(dir);
    const host = await createSimulatedHost(dir);
    await Promise.all(
      Array.from({ length: 8 }, (_, i) => adminCmdlet(host.root, 'New-VM', { Name: `local-${i}`, NoVHD: true })),
    );
    const shells = [simShell(host.pwsh), simShell(host.pwsh)];
    try {
      await Promise.all(
        shells.flatMap(({ call }, s) =>
          Array.from({ length: 3 }, (_, i) => call('New-VM -Name $p.name -NoVHD', { name: `shell-${s}-${i}` })),
        ),
      );
    } finally {
      await Promise.all(shells.map(({ shell }) => shell.dispose()));
    }
    expect((await host.state()).vms.map((v) => v.name).sort()).toEqual(
      [
        ...Array.from({ length: 8 }, (_, i) => `local-${i}`),
        ...['0', '1'].flatMap((s) => [0, 1, 2].map((i) => `shell-${s}-${i}`)),
      ].sort(),
    );
  });
});

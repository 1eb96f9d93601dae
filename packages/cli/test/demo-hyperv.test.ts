import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli-harness.js';

let cwd: string;
beforeAll(async () => {
  cwd = await mkdtemp(join(tmpdir(), 'rk-demo-hyperv-'));
});
afterAll(async () => {
  await rm(cwd, { recursive: true, force: true });
});

describe('replikit demo --hyperv', { timeout: 600_000 }, () => {
  it('replicates Hyper-V ► Hyper-V and XenServer ► Hyper-V on the simulators, full then incremental, and verifies', async () => {
    // As a user runs it: `replikit demo --hyperv`, through the CLI's main().
    const { code, stdout, stderr } = await runCli(['demo', '--hyperv'], { cwd });
    expect(code, `${stdout}\n${stderr}`).toBe(0);
    expect(stdout).toMatch(/a simulator, not Hyper-V/);
    expect(stdout).toContain('── hyperv ► hyperv');
    expect(stdout).toContain('── xen ► hyperv');
    for (const pair of ['hyperv', 'xen']) {
      expect(stdout).toContain(`[${pair}] run 1 (first run)`);
      expect(stdout).toContain(`[${pair}] run 2 (after the guest writes)`);
    }
    expect(stdout.match(/guest wrote 4 KiB into \d+ blocks/g)?.length).toBe(2);
    // Each second run reads only what the source's tracker reports (RCT, CBT), on every disk.
    expect(stdout.match(/\btracked +TRACKED\b/g)?.length).toBeGreaterThanOrEqual(3);
    expect(stdout).toMatch(/default folder \(Get-VMHost\): .*Virtual Hard Disks/);
    expect(stdout).not.toMatch(/DIFFERENT|FAILED/);
    expect(stdout).toMatch(/verification passed/);
    // Every disk of every run was compared: 2 runs × 2 disks from Hyper-V, 2 runs × the Xen VM's disks.
    expect(stdout.match(/ equal\n/g)?.length).toBeGreaterThanOrEqual(6);
  });

  it('the usage names `demo --hyperv` alone: XenServer ► Hyper-V is part of it (`--xen` with it is accepted, a no-op)', async () => {
    const help = await runCli(['--help'], { cwd });
    expect(help.stdout).toMatch(/replikit demo --hyperv \[--keep\]/);
  });
});

import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { demoHyperVCommand } from '../src/commands/demo-hyperv.js';

class Capture extends Writable {
  text = '';
  isTTY = false;
  override _write(chunk: Buffer, _encoding: string, callback: () => void): void {
    this.text += chunk.toString();
    callback();
  }
}

describe('replikit demo --hyperv', { timeout: 300_000 }, () => {
  it('replicates Hyper-V ► Hyper-V on the simulated host, full then incremental through RCT, and verifies', async () => {
    const stdout = new Capture();
    const stderr = new Capture();
    const code = await demoHyperVCommand({
      stdout: stdout as unknown as NodeJS.WriteStream,
      stderr: stderr as unknown as NodeJS.WriteStream,
      cwd: process.cwd(),
      env: {},
      signal: new AbortController().signal,
    });
    expect(code, `${stdout.text}\n${stderr.text}`).toBe(0);
    expect(stdout.text).toMatch(/a simulator, not Hyper-V/);
    expect(stdout.text).toContain('[hyperv] run 1 (first run)');
    expect(stdout.text).toContain('[hyperv] run 2 (after the guest writes)');
    expect(stdout.text).toMatch(/guest wrote 4 KiB into \d+ blocks/);
    // The second run reads only what RCT reports, on both disks.
    expect(stdout.text.match(/\btracked +TRACKED\b/g)?.length).toBe(2);
    expect(stdout.text).toMatch(/default folder \(Get-VMHost\): .*Virtual Hard Disks/);
    expect(stdout.text).not.toMatch(/DIFFERENT|FAILED/);
    expect(stdout.text).toMatch(/verification passed/);
  });
});

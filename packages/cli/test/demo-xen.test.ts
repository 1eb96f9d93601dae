import { describe, expect, it } from 'vitest';
import { demoXenCommand, XEN_DEMO_METHODS } from '../src/commands/demo-xen.js';
import { Capture } from './helpers/cli-harness.js';

describe('replikit demo --xen', () => {
  it('replicates the simulated pool VM with every method, full then incremental, and verifies each replica', async () => {
    const stdout = new Capture();
    const stderr = new Capture();
    const code = await demoXenCommand({
      stdout: stdout as unknown as NodeJS.WriteStream,
      stderr: stderr as unknown as NodeJS.WriteStream,
      cwd: process.cwd(),
      env: {},
      signal: new AbortController().signal,
    });
    expect(code, `${stdout.text}\n${stderr.text}`).toBe(0);
    for (const { method } of XEN_DEMO_METHODS) {
      expect(stdout.text).toContain(`── method ${method} `);
      expect(stdout.text).toContain(`[${method}] run 1 (first run)`);
      expect(stdout.text).toContain(`[${method}] run 2 (after the guest writes)`);
    }
    // Says the writes are 4 KiB in each block, of which blocks: the 64 KiB a block the tables send.
    expect(stdout.text).toMatch(/guest wrote 4 KiB into each of \d+ of its disk's \d+ blocks of 64 KiB \(\d+\.\d %\)/);
    // qhybrid's second run reads only what CBT reports; xva moves the whole VM each time.
    expect(stdout.text).toMatch(/\btracked +TRACKED\b/);
    expect(stdout.text.match(/METHOD_ALWAYS_FULL/g)?.length).toBeGreaterThanOrEqual(2);
    expect(stdout.text).not.toMatch(/DIFFERENT|FAILED/);
    expect(stdout.text).toMatch(/verification passed/);
    // ten runs against the simulator: about 30 s here, twice that on a loaded machine
  }, 180_000);
});

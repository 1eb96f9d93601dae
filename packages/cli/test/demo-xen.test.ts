import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { demoXenCommand, XEN_DEMO_METHODS } from '../src/commands/demo-xen.js';

class Capture extends Writable {
  text = '';
  isTTY = false;
  override _write(chunk: Buffer, _encoding: string, callback: () => void): void {
    this.text += chunk.toString();
    callback();
  }
}

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
      expect(stdout.text).toContain(`[${method}] run 1 (full)`);
      expect(stdout.text).toContain(`[${method}] run 2 (incremental)`);
    }
    expect(stdout.text).toMatch(/guest wrote 4 KiB into \d+ blocks/);
    expect(stdout.text).not.toMatch(/DIFFERENT|FAILED/);
    expect(stdout.text).toMatch(/verification passed/);
  });
});

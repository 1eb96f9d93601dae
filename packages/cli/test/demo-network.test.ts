import { describe, expect, it } from 'vitest';
import { demoNetworkCommand } from '../src/commands/demo-network.js';
import { Capture } from './helpers/cli-harness.js';

describe('replikit demo --network', () => {
  it('replicates over TLS to a local agent by push, then by pull, and verifies the replica', async () => {
    const stdout = new Capture();
    const stderr = new Capture();
    const code = await demoNetworkCommand(
      {
        stdout: stdout as unknown as NodeJS.WriteStream,
        stderr: stderr as unknown as NodeJS.WriteStream,
        cwd: process.cwd(),
        env: {},
        signal: new AbortController().signal,
      },
      { sizeA: '8MiB', sizeB: '4MiB' },
    );
    expect(code, stdout.text).toBe(0);
    expect(stdout.text).toMatch(/agent started on 127\.0\.0\.1:\d+ \(TLS/);
    expect(stdout.text).toMatch(/push:/);
    expect(stdout.text).toMatch(/pull:/);
    expect(stdout.text).toMatch(/\[agent\] session .* committed/);
    expect(stdout.text).toMatch(/verification passed/);
    expect(stdout.text).not.toMatch(/DIFFERENT/);
  });
});

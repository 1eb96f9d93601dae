import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createClient } from 'xen-api';

const bin = join(dirname(fileURLToPath(import.meta.url)), '../src/bin.ts');

describe('replikit-xapi-sim demo', () => {
  it('starts a demo pool, prints its URL and credentials, the real client sees the VMs, Ctrl-C stops it', async () => {
    const child = spawn(
      process.execPath,
      ['--conditions=@replikit/source', '--import', 'tsx', bin, 'demo', '--password', 's3cret'],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      let out = '';
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('Press Ctrl-C')) resolve();
        });
        child.once('exit', () => reject(new Error(`the demo exited early: ${out}`)));
      });
      const url = /url:\s+(\S+)/.exec(out)?.[1];
      const dir = /SRs:\s+(\S+)/.exec(out)?.[1];
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(out).toMatch(/password: s3cret/);
      const xapi = createClient({ url: url!, auth: { user: 'root', password: 's3cret' }, allowUnauthorized: true });
      await xapi.connect();
      await xapi.objectsFetched;
      const vms = Object.values(xapi.objects.indexes.type.VM!);
      expect(vms.map((v) => v.name_label).sort()).toEqual(
        ['Control domain on host: xapi-sim', 'db-01', 'files-01', 'replikit delegate appliance', 'web-01'].sort(),
      );
      expect(Object.values(xapi.objects.indexes.type.SR!)).toHaveLength(2);
      expect(Object.values(xapi.objects.indexes.type.VDI!).every((v) => v.cbt_enabled === true)).toBe(true);
      await xapi.disconnect();
      child.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(existsSync(dir!)).toBe(false);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});

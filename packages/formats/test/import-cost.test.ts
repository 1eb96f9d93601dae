import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

describe('importing @replikit/formats', () => {
  it('does not load hash-wasm (only an XVA chunk with an .xxhash checksum needs it)', () => {
    // A process of its own: what a `replikit run` pays at start, through the file driver.
    const script = `
      await import('@replikit/formats');
      const { createRequire } = await import('node:module');
      const loaded = Object.keys(createRequire(import.meta.url).cache).filter((path) => path.includes('hash-wasm'));
      process.stdout.write(JSON.stringify(loaded));`;
    const out = execFileSync(
      process.execPath,
      ['--conditions=@replikit/source', '--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: join(root, 'packages', 'driver-file'), encoding: 'utf8' },
    );
    expect(JSON.parse(out)).toEqual([]);
  });
});

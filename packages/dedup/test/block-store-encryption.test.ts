import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileBlockStore } from '../src/index.js';

const BLOCK = 65536;
let dir: string;
let store: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-enc-'));
  store = join(dir, 'store');
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function keyFile(name: string, content: string | Buffer, mode = 0o600): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content, { mode });
  await chmod(path, mode); // whatever the umask
  return path;
}

async function backup(target: FileBlockStore, runId: string, blocks: Uint8Array[]) {
  const session = await target.begin({
    vm: 'vm1',
    runId,
    blockSize: BLOCK,
    disks: [{ id: 'd0', size: blocks.length * BLOCK }],
  });
  for (const [i, block] of blocks.entries()) await session.disk('d0').put(i, block);
  await session.close();
  await target.commitPending('vm1', runId);
}

/** Every file under `root` with its size and modification time. */
async function tree(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    const info = await stat(path);
    out.push(`${relative(root, path)} ${info.size} ${info.mtimeMs}`);
  }
  return out.sort();
}

const blocks = () => [
  randomFillSync(new Uint8Array(BLOCK)),
  new Uint8Array(BLOCK).fill(0x41), // compressible: deflated, then encrypted
  Buffer.alloc(BLOCK, 'replikit secret text '),
];

describe('encrypted block store', () => {
  it('round-trips, with keyed addresses and no plain bytes in the packs', async () => {
    const key = await keyFile('key.hex', `${randomBytes(32).toString('hex')}\n`);
    const data = blocks();
    await backup(new FileBlockStore(store, { keyFile: key }), 'run-1', data);
    const reopened = new FileBlockStore(store, { keyFile: key });
    const out = join(dir, 'out.raw');
    await reopened.restore('vm1', 'run-1', 'd0', out);
    expect(Buffer.compare(await readFile(out), Buffer.concat(data))).toBe(0);
    expect(await reopened.verify('vm1', 'run-1')).toMatchObject({ chunks: 3, bad: [] });

    const table = await readFile(join(store, 'versions', 'vm1', 'run-1.d', 'd0.idx'));
    for (const block of data) {
      expect(table.includes(createHash('sha256').update(block).digest())).toBe(false);
    }
    const packNames = (await readdir(join(store, 'packs'))).filter((name) => name.endsWith('.pack'));
    const packs = Buffer.concat(await Promise.all(packNames.map((name) => readFile(join(store, 'packs', name)))));
    expect(packs.includes(Buffer.from(data[0]!.subarray(1000, 1064)))).toBe(false);
    expect(packs.includes(Buffer.from('replikit secret'))).toBe(false);
  });

  it('refuses a wrong key and a missing key with E_AUTH before writing anything', async () => {
    const right = await keyFile('right.key', randomBytes(32));
    const wrong = await keyFile('wrong.key', randomBytes(32).toString('base64'));
    await backup(new FileBlockStore(store, { keyFile: right }), 'run-1', blocks());
    const before = await tree(store);
    for (const options of [{ keyFile: wrong }, {}]) {
      const other = new FileBlockStore(store, options);
      const spec = { vm: 'vm1', runId: 'run-2', blockSize: BLOCK, disks: [{ id: 'd0', size: BLOCK }] };
      const refused = await other.begin(spec).then(
        () => undefined,
        (error: unknown) => error as { code: string; message: string },
      );
      expect(refused?.code).toBe('E_AUTH');
      expect(refused?.message).not.toContain('\n');
      await expect(other.gc()).rejects.toMatchObject({ code: 'E_AUTH' });
      await expect(other.verify('vm1', 'run-1')).rejects.toMatchObject({ code: 'E_AUTH' });
      await expect(other.restore('vm1', 'run-1', 'd0', join(dir, 'x.raw'))).rejects.toMatchObject({ code: 'E_AUTH' });
    }
    expect(await tree(store)).toEqual(before);
  });

  it('refuses a key for a plain store that holds backups, and a key file that holds no key', async () => {
    await backup(new FileBlockStore(store), 'run-1', blocks());
    const key = await keyFile('k', randomBytes(32));
    const spec = { vm: 'vm1', runId: 'run-2', blockSize: BLOCK, disks: [{ id: 'd0', size: BLOCK }] };
    await expect(new FileBlockStore(store, { keyFile: key }).begin(spec)).rejects.toMatchObject({ code: 'E_INPUT' });
    const junk = await keyFile('junk', 'not a key\n');
    await expect(new FileBlockStore(join(dir, 'fresh'), { keyFile: junk }).begin(spec)).rejects.toMatchObject({
      code: 'E_INPUT',
    });
  });

  it.skipIf(process.platform === 'win32')(
    'refuses a key file other users may read or write, in one line, before creating the store',
    async () => {
      const spec = { vm: 'vm1', runId: 'run-1', blockSize: BLOCK, disks: [{ id: 'd0', size: BLOCK }] };
      for (const mode of [0o644, 0o640, 0o602]) {
        const key = await keyFile(`open-${mode.toString(8)}.key`, randomBytes(32), mode);
        const refused = await new FileBlockStore(store, { keyFile: key }).begin(spec).then(
          () => undefined,
          (error: unknown) => error as { code: string; message: string },
        );
        expect(refused?.code).toBe('E_INPUT');
        expect(refused?.message).toContain(`chmod 600 ${key}`);
        expect(refused?.message).not.toContain('\n');
        await expect(stat(store)).rejects.toMatchObject({ code: 'ENOENT' });
      }
      const key = await keyFile('private.key', randomBytes(32), 0o400);
      await backup(new FileBlockStore(store, { keyFile: key }), 'run-1', blocks());
    },
  );
});

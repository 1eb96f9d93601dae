import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStateStore } from '../src/index.js';
import { runStateStoreConformance } from '../src/testing/index.js';

runStateStoreConformance({
  name: 'FileStateStore',
  create: async () => new FileStateStore(await mkdtemp(join(tmpdir(), 'replikit-store-'))),
  reopen: async (store) => new FileStateStore((store as FileStateStore).dir),
  close: async (store) => rm((store as FileStateStore).dir, { recursive: true, force: true }),
});

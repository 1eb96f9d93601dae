import { describe, expect, it } from 'vitest';
import {
  AbstractDiskReader,
  AbstractHypervisor,
  type Capabilities,
  type DiskRef,
  type Snapshot,
  type VMInfo,
} from '../src/index.js';

const CAPS: Capabilities = {
  methods: ['qhybrid'],
  canBeSource: true,
  canBeTarget: false,
  changeTracking: false,
  formats: ['raw'],
  restorePoints: false,
};

/** A source-only driver written the way docs/writing-a-driver.md says: five hooks. */
class TinyReader extends AbstractDiskReader {
  constructor(private readonly byte: number) {
    super({ size: 10_000, blockSize: 4096, what: 'tiny disk' });
  }
  protected async _readInto(_offset: number, target: Uint8Array): Promise<void> {
    if (this.byte < 0) throw new Error('platform socket reset');
    target.fill(this.byte);
  }
}

class TinyDriver extends AbstractHypervisor {
  readonly kind = 'tiny';
  readonly capabilities = CAPS;
  sdkError: unknown;
  readonly vm: VMInfo = {
    id: 'vm-1',
    name: 'web',
    cpus: 1,
    memoryMiB: 512,
    powerState: 'running',
    disks: [{ id: 'd0', vmId: 'vm-1', size: 10_000 }],
  };
  protected async _listVMs(): Promise<VMInfo[]> {
    if (this.sdkError) throw this.sdkError;
    return [structuredClone(this.vm)];
  }
  protected override async _snapshot(vmId: string, label: string): Promise<Snapshot> {
    const disks = this.vm.disks.map((d) => ({ ...d, snapshotId: 's1' }));
    return { id: 's1', vmId, label, createdAt: new Date().toISOString(), disks };
  }
  protected override async _listSnapshots(): Promise<Snapshot[]> {
    return [];
  }
  protected override async _deleteSnapshot(): Promise<void> {}
  protected override async _openReader(disk: DiskRef): Promise<TinyReader> {
    return new TinyReader(disk.id === 'broken' ? -1 : 7);
  }
}

describe('driver kit: a driver written on AbstractHypervisor', () => {
  it('finds a VM by id or by name through _listVMs, and says E_NOT_FOUND otherwise', async () => {
    const hv = new TinyDriver();
    expect((await hv.getVM('vm-1')).name).toBe('web');
    expect((await hv.getVM('web')).id).toBe('vm-1');
    await expect(hv.getVM('db')).rejects.toMatchObject({ code: 'E_NOT_FOUND' });
  });

  it('wraps a foreign error from a hook into E_DRIVER with the original as cause', async () => {
    const hv = new TinyDriver();
    const sdk = new TypeError('pool handshake\nrefused');
    hv.sdkError = sdk;
    const error = await hv.listVMs().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'E_DRIVER', cause: sdk });
    expect((error as Error).message).toContain('tiny driver: listVMs failed: pool handshake refused');
    const snap = await hv.snapshot('vm-1', 'x');
    const reader = await hv.openReader({ ...snap.disks[0]!, id: 'broken' });
    await expect(reader.read(0, 10)).rejects.toMatchObject({ code: 'E_DRIVER', message: /platform socket reset/ });
  });

  it('rejects what the driver does not implement with E_DRIVER, and bad arguments with E_INPUT', async () => {
    const hv = new TinyDriver();
    const spec = { name: 'r', source: hv.vm, disks: [{ sourceDiskId: 'd0', size: 10_000 }] };
    await expect(hv.ensureReplica(spec)).rejects.toMatchObject({ code: 'E_DRIVER', message: /does not implement/ });
    await expect(hv.snapshot('vm-1', '')).rejects.toMatchObject({ code: 'E_INPUT' });
    await expect(hv.getVM('')).rejects.toMatchObject({ code: 'E_INPUT' });
    await expect(hv.openReader({ id: 'd0', vmId: 'vm-1', size: -1 })).rejects.toMatchObject({ code: 'E_INPUT' });
    await expect(hv.power('vm-1', 'reboot' as 'start')).rejects.toMatchObject({ code: 'E_INPUT' });
  });

  it('rejects an aborted signal before the hook runs, and closes what it handed out on close()', async () => {
    const hv = new TinyDriver();
    await expect(hv.snapshot('vm-1', 'x', { signal: AbortSignal.abort() })).rejects.toMatchObject({
      code: 'E_ABORTED',
    });
    const snap = await hv.snapshot('vm-1', 'x');
    const reader = await hv.openReader(snap.disks[0]!);
    expect([...(await reader.read(9_990, 10))]).toEqual(Array(10).fill(7));
    await expect(reader.read(9_995, 10)).rejects.toMatchObject({ code: 'E_INPUT' });
    await hv.close();
    await expect(reader.read(0, 10)).rejects.toMatchObject({ code: 'E_STATE' });
    await expect(hv.listVMs()).rejects.toMatchObject({ code: 'E_STATE' });
    await hv.close(); // twice is harmless
  });
});

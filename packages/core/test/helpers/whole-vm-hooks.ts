import type { Hypervisor, VmExport } from '../../src/index.js';

/**
 * Gives two test drivers the optional whole-VM methods of an `xva`-like method: `source.exportVm`
 * streams the snapshot's disks one after the other, `target.importVm` writes them as the
 * replica's pending writes (committed by the engine's restore point). Returns the run ids the
 * imports were made for.
 */
export function attachWholeVmHooks(source: Hypervisor, target: Hypervisor): string[] {
  const imports: string[] = [];
  Object.assign(source, {
    async exportVm(snapshot): Promise<VmExport> {
      return {
        format: 'test-whole',
        snapshot,
        body: (async function* () {
          for (const disk of snapshot.disks) {
            const reader = await source.openReader(disk);
            try {
              yield await reader.read(0, disk.size);
            } finally {
              await reader.close();
            }
          }
        })(),
        close: async () => {},
      };
    },
  } satisfies Pick<Hypervisor, 'exportVm'>);
  Object.assign(target, {
    async importVm(replica, vm, options) {
      imports.push(options?.runId ?? '');
      const chunks: Uint8Array[] = [];
      for await (const chunk of vm.body) chunks.push(chunk);
      const bytes = Buffer.concat(chunks);
      let at = 0;
      for (const disk of replica.disks) {
        const writer = await target.openWriter(replica, disk, options);
        await writer.write(0, bytes.subarray(at, at + disk.size));
        await writer.close();
        at += disk.size;
      }
      return { bytesRead: bytes.length, bytesWritten: bytes.length };
    },
  } satisfies Pick<Hypervisor, 'importVm'>);
  return imports;
}

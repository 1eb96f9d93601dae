import type { Extent } from '@replikit/core';
import type { XenConnection } from './xapi/xen-connection.js';

const FOOTER = 512;
const HEADER = 1024;
/** Longest prefix read to reach the block table (a BAT far away means a VHD we do not expect). */
const MAX_PREFIX = 64 * 1024 * 1024;

/**
 * The allocated 2 MiB blocks of a VDI, from the block table (BAT) at the head of
 * `GET /export_raw_vdi?format=vhd`; the rest of the stream is never read. Returns `undefined`
 * when the prefix does not look like the dynamic VHD expected: the caller then reports the whole
 * disk (always correct). Every number from the stream is bounded before use.
 */
export async function vhdAllocation(
  connection: XenConnection,
  vdiRef: string,
  size: number,
  signal?: AbortSignal,
): Promise<Extent[] | undefined> {
  const response = await connection.get('/export_raw_vdi', { vdi: vdiRef, format: 'vhd' }, signal);
  try {
    const chunks: Buffer[] = [];
    let have = 0;
    let need = FOOTER + HEADER;
    let table: { offset: number; entries: number; blockSize: number } | undefined;
    for await (const chunk of response as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      have += chunk.length;
      if (have < need) continue;
      const head = Buffer.concat(chunks);
      if (!table) {
        if (
          head.toString('latin1', 0, 8) !== 'conectix' ||
          head.toString('latin1', FOOTER, FOOTER + 8) !== 'cxsparse'
        ) {
          return undefined;
        }
        const offset = Number(head.readBigUInt64BE(FOOTER + 16));
        const entries = head.readUInt32BE(FOOTER + 28);
        const blockSize = head.readUInt32BE(FOOTER + 32);
        const valid =
          blockSize >= 512 &&
          blockSize % 512 === 0 &&
          entries >= Math.ceil(size / blockSize) &&
          entries <= Math.ceil(size / blockSize) + 1 &&
          offset >= FOOTER + HEADER &&
          offset + entries * 4 <= MAX_PREFIX;
        if (!valid) return undefined;
        table = { offset, entries, blockSize };
        need = offset + entries * 4;
        if (have < need) continue;
      }
      const extents: Extent[] = [];
      for (let i = 0; i < table.entries; i++) {
        if (head.readUInt32BE(table.offset + 4 * i) === 0xffffffff) continue;
        const start = i * table.blockSize;
        if (start >= size) break;
        const length = Math.min(table.blockSize, size - start);
        const last = extents.at(-1);
        if (last && last.offset + last.length === start) last.length += length;
        else extents.push({ offset: start, length });
      }
      return extents;
    }
    return undefined;
  } finally {
    response.destroy();
  }
}

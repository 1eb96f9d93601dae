import { randomBytes } from 'node:crypto';

const STAMP = /^[a-z]+-(\d{8}T\d{9}Z)-[0-9a-f]{4}$/;

/**
 * A new id `<prefix>-<UTC time to the millisecond>-<4 hex digits>` such as
 * `snap-20250101T120000123Z-9f2c`, strictly later than every id in `existing` with the same
 * format, so that sorting ids as strings sorts them by creation.
 */
export function newSortableId(prefix: string, existing: Iterable<string>): string {
  let last = 0;
  for (const id of existing) {
    const match = STAMP.exec(id);
    if (match) last = Math.max(last, parseStamp(match[1]!));
  }
  const ms = Math.max(Date.now(), last + 1);
  const stamp = new Date(ms).toISOString().replace(/[-:.]/g, '');
  return `${prefix}-${stamp}-${randomBytes(2).toString('hex')}`;
}

function parseStamp(stamp: string): number {
  const iso = `${stamp.slice(0, 4)}-${stamp.slice(4, 6)}-${stamp.slice(6, 8)}T${stamp.slice(9, 11)}:${stamp.slice(11, 13)}:${stamp.slice(13, 15)}.${stamp.slice(15, 18)}Z`;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? 0 : ms;
}

import { InputError } from '../errors.js';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1000,
  kb: 1000,
  m: 1000 ** 2,
  mb: 1000 ** 2,
  g: 1000 ** 3,
  gb: 1000 ** 3,
  t: 1000 ** 4,
  tb: 1000 ** 4,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

/**
 * Parses a byte size: a number of bytes, or a string such as `64KiB`, `1.5 GB`, `512MiB`.
 * Decimal units (kB, MB, GB) are powers of 1000, binary units (KiB, MiB, GiB) powers of 1024.
 *
 * @throws {@link InputError} for anything else, naming `what`.
 */
export function parseSize(value: number | string, what = 'size'): number {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new InputError(`${what}: expected a whole number of bytes, got ${value}`);
    }
    return value;
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  const unit = match ? UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw new InputError(
      `${what}: '${value}' is not a size; write bytes or a number with a unit such as 64KiB or 20MB`,
    );
  }
  const bytes = Math.round(Number(match[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw new InputError(`${what}: '${value}' is too large`);
  return bytes;
}

/** Parses a rate such as `20MB/s` or a number of bytes per second. */
export function parseRate(value: number | string, what = 'rate'): number {
  return parseSize(typeof value === 'string' ? value.replace(/\/s(ec)?\s*$/i, '') : value, what);
}

/** Formats bytes with a binary unit, for humans: `1.5 GiB`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value >= 100 ? 0 : value >= 10 ? 1 : 2)} ${units[unit]}`;
}

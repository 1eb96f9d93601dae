import { writevSync } from 'node:fs';

/** Writes `parts` back to back at `position` (`total` bytes in all), resuming after a short write. */
export function writeAll(fd: number, parts: readonly Uint8Array[], total: number, position: number): void {
  let written = writevSync(fd, parts as Uint8Array[], position);
  while (written < total) {
    // A short write (rare: a signal, a disk's last free bytes): what is left of the parts.
    const rest: Uint8Array[] = [];
    let skip = written;
    for (const part of parts) {
      if (skip >= part.length) skip -= part.length;
      else {
        rest.push(skip > 0 ? part.subarray(skip) : part);
        skip = 0;
      }
    }
    const more = writevSync(fd, rest, position + written);
    if (more === 0) throw new Error(`wrote ${written} of ${total} bytes`);
    written += more;
  }
}

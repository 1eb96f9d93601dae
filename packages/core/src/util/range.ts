import { InputError } from '../errors.js';

/**
 * Checks that `[offset, offset + length)` is a valid byte range inside a disk of `size` bytes.
 * Drivers call it before touching storage, so no offset from a caller, a file or the wire is used
 * unchecked.
 *
 * @throws {@link InputError} naming `what` when the range is not whole, negative or out of bounds.
 */
export function checkRange(size: number, offset: number, length: number, what: string): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new InputError(`${what}: offset ${offset} is not a whole number of bytes ≥ 0`, { details: { offset } });
  }
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new InputError(`${what}: length ${length} is not a whole number of bytes ≥ 0`, { details: { length } });
  }
  if (offset + length > size) {
    throw new InputError(
      `${what}: range ${offset}+${length} ends at ${offset + length}, past the end of the disk (${size} bytes)`,
      { details: { offset, length, size } },
    );
  }
}

import { InputError } from '@replikit/core';

/** The digests replikit computes: `xxh128` to detect changes, `sha256` and `blake3` where collisions matter. */
export type DigestKind = 'xxh128' | 'sha256' | 'blake3';

/** Digest length in bytes, by kind. */
export const DIGEST_LENGTH: Readonly<Record<DigestKind, number>> = { xxh128: 16, sha256: 32, blake3: 32 };

/** Numeric ids used in binary files (the replication cache header). */
export const DIGEST_IDS: Readonly<Record<DigestKind, number>> = { xxh128: 1, sha256: 2, blake3: 3 };

/**
 * Checks that `name` is a digest kind.
 * @throws {@link @replikit/core!InputError} otherwise.
 */
export function asDigestKind(name: string): DigestKind {
  if (name === 'xxh128' || name === 'sha256' || name === 'blake3') return name;
  throw new InputError(`unknown digest '${name}'; use xxh128, sha256 or blake3`);
}

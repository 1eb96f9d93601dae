import type { BlockHasher } from '@replikit/core';

/**
 * Makes a block hasher for an algorithm name, at once or asynchronously (the dedup package's
 * worker pool starts its threads first).
 */
export type AnyHasherFactory = (algorithm: string) => BlockHasher | Promise<BlockHasher>;

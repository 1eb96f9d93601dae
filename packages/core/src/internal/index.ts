/**
 * `@replikit/core/internal`: helpers the replikit packages share (atomic files, process checks,
 * rate limiting, range checks, the node:crypto block hasher). Not part of the public API:
 * it may change in any release without notice; a driver or an application imports
 * `@replikit/core`.
 *
 * @internal
 * @packageDocumentation
 */
export { createNodeHasher, isZeroBlock, sameDigest } from '../engine/block-hasher.js';
export { assertTransition, canTransition } from '../engine/run-state.js';
export { SendWindow } from '../engine/send-window.js';
export { fsyncDirectory, writeFileAtomic } from '../util/atomic-file.js';
export { worthCompressing } from '../util/compressibility.js';
export { isProcessAlive } from '../util/process-alive.js';
export { checkRange } from '../util/range.js';
export { TokenBucket } from '../util/token-bucket.js';

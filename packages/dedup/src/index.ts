/**
 * `@replikit/dedup`: fast block digests on worker threads and the replication cache that lets a
 * run trust the replica without reading it.
 *
 * @packageDocumentation
 */

export { decodeChunk, encodeChunk, MAX_CHUNK_BYTES } from './block-store/chunk-codec.js';
export {
  FileBlockStore,
  type FileBlockStoreOptions,
  type GcReport,
  REPACK_LIVE_FRACTION,
  type VerifyReport,
} from './block-store/file-block-store.js';
export { PACK_TARGET_BYTES } from './block-store/pack-writer.js';
export {
  CACHE_HEADER_BYTES,
  CACHE_MAGIC,
  CACHE_TRAILER_BYTES,
  CACHE_VERSION,
  type CacheHeader,
  decodeHeader,
  encodeHeader,
} from './cache-file.js';
export { asDigestKind, DIGEST_IDS, DIGEST_LENGTH, type DigestKind } from './digest-kinds.js';
export { FileCacheProvider } from './file-cache-provider.js';
export { createHashingPool, type HashingPoolOptions } from './hashing-pool.js';

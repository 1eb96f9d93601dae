/** The two bytes every frame starts with: ASCII `RK`. */
export const FRAME_MAGIC = 0x524b;

/** The protocol version this implementation speaks (the only one so far). */
export const PROTOCOL_VERSION = 1;

/**
 * Bytes of the fixed frame header: magic (2), version (1), type (1), payload length (4), body
 * check (4: CRC-32 of the covered payload), header check (4: CRC-32 of the 12 bytes before it).
 */
export const HEADER_BYTES = 16;

/** Largest payload of a control (JSON) frame. */
export const MAX_CONTROL_PAYLOAD = 64 * 1024;

/**
 * Largest payload of a `response` frame once the connection is authenticated and its reader
 * expects answers (a target-control connection): a listing of up to 1,000 restore points with
 * long labels must fit. Before that, a `response` is bounded like any control frame.
 */
export const MAX_RESPONSE_PAYLOAD = 8 * 1024 * 1024;

/** Largest block size a session may use (the job schema's upper bound). */
export const MAX_BLOCK_SIZE = 16 * 1024 * 1024;

/** Longest digest a frame may carry (SHA-512, BLAKE3-512). */
export const MAX_DIGEST_BYTES = 64;

/** Bytes of a `block` frame's fixed part, before the digest and the payload. */
export const BLOCK_FIXED_BYTES = 20;

/** Most digests one `digests` frame may carry. */
export const MAX_DIGESTS_PER_FRAME = 4096;

/** Frame types. Numbers are part of the wire format and never change meaning. */
export const FrameType = {
  hello: 1,
  auth: 2,
  session: 3,
  sessionOk: 4,
  openDisk: 5,
  diskOpened: 6,
  block: 7,
  zero: 8,
  flush: 9,
  ack: 10,
  digestsRequest: 11,
  digests: 12,
  closeDisk: 13,
  diskClosed: 14,
  commit: 15,
  committed: 16,
  error: 17,
  request: 18,
  response: 19,
} as const;

/** A frame type number. */
export type FrameTypeNumber = (typeof FrameType)[keyof typeof FrameType];

/** Frame types whose payload is UTF-8 JSON (at most {@link MAX_CONTROL_PAYLOAD} bytes). */
export const CONTROL_TYPES: ReadonlySet<number> = new Set([
  FrameType.hello,
  FrameType.auth,
  FrameType.session,
  FrameType.sessionOk,
  FrameType.openDisk,
  FrameType.diskOpened,
  FrameType.commit,
  FrameType.committed,
  FrameType.error,
  FrameType.request,
  FrameType.response,
]);

/** Exact payload sizes of the fixed-size binary frames. */
export const FIXED_PAYLOAD: ReadonlyMap<number, number> = new Map([
  [FrameType.zero, 20],
  [FrameType.flush, 4],
  [FrameType.ack, 12],
  [FrameType.digestsRequest, 16],
  [FrameType.closeDisk, 4],
  [FrameType.diskClosed, 12],
]);

/** Flag bit of a `block` frame: the payload is compressed with the frame's codec. */
export const BLOCK_FLAG_COMPRESSED = 1;

/**
 * Flag bit of a `block` frame: the payload is a delta (core's block-delta format: the new bytes of
 * the block's changed ranges) to apply to the replica's current block. Sent only to a target
 * whose `hello` lists the feature {@link FEATURE_DELTA}; never together with
 * {@link BLOCK_FLAG_COMPRESSED} (the delta format deflates itself).
 */
export const BLOCK_FLAG_DELTA = 2;

/** The `hello` feature of a target that applies delta blocks ({@link BLOCK_FLAG_DELTA}). */
export const FEATURE_DELTA = 'delta';

/** Most features a `hello` may list. */
export const MAX_FEATURES = 16;

/**
 * The `hello` feature of an agent that hosts the target side: it answers `request` frames (replica,
 * hold, marks, fingerprints, restore points, revert, power) on a connection whose first frame after
 * the handshake is a `request`. A source side that needs it refuses an agent that does not list it.
 */
export const FEATURE_TARGET = 'target';

/**
 * The `hello` feature of an agent that serves reads of its driver's disks (the source side of
 * the `abd` method: a delegate appliance reading the snapshot VDIs plugged into it): it answers
 * the `readDisk` and `readDigests` requests on a target-control connection (docs/protocol.md,
 * section 13). Off unless the agent is started with `--serve-reads`.
 */
export const FEATURE_SOURCE = 'source';

/**
 * The `hello` feature of an agent that answers `pullDisk`: it dials another agent that serves
 * reads and brings one of its replica disks up to date from it (docs/protocol.md, section 13).
 */
export const FEATURE_PULL_DISK = 'pull-disk';

/**
 * The `hello` feature of an agent whose `readDigests` (with {@link FEATURE_SOURCE}) also computes
 * the algorithms of its own block hasher (`xxh128`, the engine's default, besides node:crypto's
 * `sha256`…): a target appliance can then digest a replica for a run of any digest, and only the
 * digests cross (docs/protocol.md, section 13).
 */
export const FEATURE_READ_DIGESTS_HASHER = 'read-digests-hasher';

/**
 * The `hello` feature of an agent that serves the files of a Hyper-V host under its root to a
 * `hyperv` driver that controls the host through PowerShell remoting: reads of VHDX/VHD images
 * (a checkpoint's frozen differencing chain, opened on the agent) and the driver's small state
 * files (RCT reference points). Every path is confined to the agent's root. Off unless the agent
 * is started with `--host-files`.
 */
export const FEATURE_HOST_FILES = 'host-files';

/**
 * `@replikit/transport`: the replikit block-stream protocol over TCP and TLS. Push sessions dial
 * a target agent; pull sessions wait for the agent to dial in. Blocks are verified by digest,
 * written and acked in order; a dropped connection resumes from the last ack.
 *
 * @packageDocumentation
 */

export type { DropReason } from './admission.js';
export { type Agent, type AgentEvent, type AgentOptions, createAgent, DEFAULT_IDLE_TIMEOUT_MS } from './agent.js';
export { type AgentCliIO, runAgentCli } from './agent-cli.js';
export {
  type CodecEstimate,
  CodecGovernor,
  type CodecGovernorOptions,
  type CodecWindow,
  decideCompression,
} from './codec-governor.js';
export {
  AUTO_CODEC,
  availableCodecs,
  type BlockCodec,
  checkCodecChoice,
  codecByName,
  DEFAULT_CODEC,
  MIN_SAVING,
  maybeCompress,
  type NegotiatedCodec,
  negotiateCodec,
} from './codecs.js';
export { FrameConnection, RemoteError } from './connection.js';
export { type HandshakeOptions, type HandshakeResult, handshake, PROTOCOL_NAME } from './handshake.js';
export type { AnyHasherFactory } from './hasher.js';
export { type HostImageFacts, MAX_EXTENTS_PER_ANSWER, MAX_HOST_WRITE } from './host-file-ops.js';
export { HostFileRoot, type HostFileStat, MAX_HOST_LIST, MAX_HOST_TEXT } from './host-files.js';
export { createInProcessTransport, type InProcessTransportOptions, localTransport } from './inprocess-transport.js';
export {
  createNetworkTransport,
  createPullTransport,
  type NetworkTransportOptions,
  type PullTransport,
  type PullTransportOptions,
  type SessionTuning,
} from './network-transport.js';
export { type ArenaMemorySource, ArenaPool, BlockArena } from './protocol/block-arena.js';
export {
  FEATURE_HOST_FILES,
  FEATURE_PULL_DISK,
  FEATURE_READ_DIGESTS_HASHER,
  FEATURE_SOURCE,
  FEATURE_TARGET,
  FrameType,
  HEADER_BYTES,
  MAX_CONTROL_PAYLOAD,
  MAX_DIGESTS_PER_FRAME,
  PROTOCOL_VERSION,
} from './protocol/constants.js';
export { FrameDecoder, type RawFrame } from './protocol/frame-decoder.js';
export {
  type AckMessage,
  type AuthMessage,
  type BlockMessage,
  type CloseDiskMessage,
  type CommitMessage,
  type CommittedMessage,
  type DigestsMessage,
  type DigestsRequestMessage,
  type DiskClosedMessage,
  type DiskOpenedMessage,
  type ErrorMessage,
  encodeMessage,
  type FlushMessage,
  type HelloMessage,
  type Message,
  type OpenDiskMessage,
  parseFrame,
  type RequestMessage,
  type ResponseMessage,
  type Role,
  type SessionMessage,
  type SessionOkMessage,
  type ZeroMessage,
} from './protocol/messages.js';
export { isProtocolError, ProtocolError } from './protocol/protocol-error.js';
export { type PullDiskResult, pullDiskResultOf, runPullDisk, type SourceDialer } from './pull-disk-op.js';
export { RemoteDiskReader, type RemoteRead } from './remote-disk-reader.js';
export { RemoteHostFile, remoteByteSource } from './remote-host-file.js';
export { type HostFileCall, RemoteHostFiles, RemoteHostImage } from './remote-host-files.js';
export { isRemoteTarget, RemoteTargetDriver, type TargetLink } from './remote-target.js';
export { createPullRemoteTarget, createRemoteTarget, type RemoteKind } from './remote-target-link.js';
export {
  type Address,
  type CertificateCredentials,
  certificateFingerprint,
  createSecureServer,
  dial,
  type ListenHandlers,
  type PskCredentials,
  type Security,
} from './security.js';
export { MAX_DIGEST_SPAN, MAX_READ_BYTES, READ_DIGEST_ALGORITHMS, SourceReads } from './source-read-ops.js';
export type { ReconnectPolicy } from './source-session.js';
export { serveTargetControl, type TargetControlResult } from './target-control-server.js';
export { serveTargetSession, type TargetSessionOptions, type TargetSessionResult } from './target-session.js';
export type { EncodedDelta } from './wire/block-delta.js';
export { BlockTarget, TargetDisk } from './wire/block-target.js';

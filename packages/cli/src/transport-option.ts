import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import {
  type BlockHasher,
  type EngineOptions,
  InputError,
  type JobSpec,
  parseRate,
  type Transport,
} from '@replikit/core';
import {
  createInProcessTransport,
  createNetworkTransport,
  createPullRemoteTarget,
  createPullTransport,
  createRemoteTarget,
  type PullTransport,
  type RemoteTargetDriver,
  type Security,
} from '@replikit/transport';

/**
 * A job's `transport` section as the CLI reads it:
 *
 * ```yaml
 * transport:
 *   kind: tls                      # inprocess (default) | tcp | tls
 *   agent: 10.0.0.7:7400           # push: the target's replikit-agent
 *   pull: { listen: 0.0.0.0:7401 } # or pull: wait here for `replikit-agent --pull-from`
 *   psk: { identity: site-a, keyFile: ./site-a.psk }   # TLS-PSK (or keyEnv: VAR), key in hex
 *   certificate: { cert: me.pem, key: me.key, trust: [<sha256 of the agent's certificate>] }
 *   key: { keyEnv: REPLIKIT_TRANSPORT_KEY }            # plain tcp: a shared key proven in hello
 *   codec: auto                    # auto (default) | none | deflate | zlib-deflate | brotli | zstd (Node 22.15+)
 *   window: 32MiB
 *   bandwidthLimit: 50MB/s         # cap on wire bytes (the job's own option caps data bytes)
 * ```
 */
export interface TransportSection {
  kind: 'inprocess' | 'tcp' | 'tls';
  [field: string]: unknown;
}

/** Where relative file names and `keyEnv` variables of a transport section are looked up. */
export interface TransportContext {
  /** The job file's folder. */
  base: string;
  env: NodeJS.ProcessEnv;
}

function address(value: unknown, field: string): { host: string; port: number } {
  const match = typeof value === 'string' ? /^(.+):(\d{1,5})$/.exec(value) : null;
  if (!match || Number(match[2]) > 65535) throw new InputError(`transport.${field} must be "host:port", got ${value}`);
  return { host: match[1]!.replace(/^\[|\]$/g, ''), port: Number(match[2]) };
}

function record(value: unknown, field: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null) throw new InputError(`transport.${field} must be a mapping`);
  return value as Record<string, unknown>;
}

/**
 * Reads a key or certificate file named by `transport.<field>`: a file that cannot be read is a
 * one-line {@link InputError} naming the field and the file (exit status 2), not a raw `ENOENT`.
 */
function readNamedFile(path: string, field: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EACCES' || code === 'EPERM'
          ? 'permission denied'
          : code === 'EISDIR'
            ? 'it is a folder'
            : ((error as Error).message ?? String(error));
    throw new InputError(
      `transport.${field}: cannot read ${path}: ${why}; check the path (a relative one is taken from the job file's folder)`,
      { cause: error, details: { field, path } },
    );
  }
}

function secret(spec: Record<string, unknown>, field: string, context: TransportContext): Uint8Array {
  let hex: string | undefined;
  if (typeof spec.keyFile === 'string') {
    hex = readNamedFile(resolve(context.base, spec.keyFile), `${field}.keyFile`);
  } else if (typeof spec.keyEnv === 'string') {
    hex = context.env[spec.keyEnv];
    if (!hex) throw new InputError(`transport.${field}.keyEnv names ${spec.keyEnv}, which is not set`);
  } else {
    throw new InputError(`transport.${field} needs keyFile or keyEnv (keys are never written in a job file)`);
  }
  const clean = hex.trim();
  if (!/^([0-9a-fA-F]{2}){16,}$/.test(clean))
    throw new InputError(`the key of transport.${field} must be 16+ bytes of hex`);
  return Buffer.from(clean, 'hex');
}

function securityOf(section: TransportSection, context: TransportContext): Security {
  if (section.kind === 'tcp') {
    return { kind: 'tcp', ...(section.key ? { key: secret(record(section.key, 'key'), 'key', context) } : {}) };
  }
  if (section.psk) {
    const psk = record(section.psk, 'psk');
    return {
      kind: 'tls',
      psk: { identity: typeof psk.identity === 'string' ? psk.identity : 'replikit', key: secret(psk, 'psk', context) },
    };
  }
  if (section.certificate) {
    const cert = record(section.certificate, 'certificate');
    const file = (name: string) => {
      const value = cert[name];
      if (typeof value !== 'string') throw new InputError(`transport.certificate.${name} must be a file name`);
      return readNamedFile(isAbsolute(value) ? value : resolve(context.base, value), `certificate.${name}`);
    };
    if (!Array.isArray(cert.trust) || !cert.trust.every((t) => typeof t === 'string')) {
      throw new InputError('transport.certificate.trust must list the SHA-256 fingerprints of trusted peers');
    }
    return { kind: 'tls', certificate: { cert: file('cert'), key: file('key'), trust: cert.trust as string[] } };
  }
  throw new InputError('transport kind tls needs psk or certificate');
}

/** The codec, window and bandwidth cap a network section sets, for block sessions and control links alike. */
function linkTuningOf(section: TransportSection): { codec?: string; windowBytes?: number; bandwidthLimit?: number } {
  return {
    ...(typeof section.codec === 'string' ? { codec: section.codec } : {}),
    ...(section.window !== undefined ? { windowBytes: parseRate(section.window as string | number) } : {}),
    ...(section.bandwidthLimit !== undefined ? { bandwidthLimit: parseRate(section.bandwidthLimit as string) } : {}),
  };
}

/**
 * Builds the transport of one run from its job's `transport` section: in-process to the target
 * driver, or TCP/TLS to a `replikit-agent` (push), or waiting for one (pull).
 */
export function transportForJob(
  job: Pick<JobSpec, 'transport'>,
  target: Parameters<NonNullable<EngineOptions['transport']>>[0],
  context: TransportContext,
  hasher?: BlockHasher,
): Transport {
  const section = job.transport as TransportSection;
  if (section.kind === 'inprocess') {
    return createInProcessTransport({ target, ...(hasher ? { hasher: () => hasher } : {}) });
  }
  const tuning = { security: securityOf(section, context), ...linkTuningOf(section) };
  if (section.pull !== undefined) {
    const pull = record(section.pull, 'pull');
    return lazyPull(createPullTransport({ ...tuning, listen: address(pull.listen, 'pull.listen') }));
  }
  return createNetworkTransport({ ...tuning, address: address(section.agent, 'agent') });
}

/**
 * The target driver of a job whose `transport` section reaches a `replikit-agent` (kind `tcp` or
 * `tls`): the agent hosts the replica, and every target-side operation goes to it (push: this side
 * dials `agent`; pull: it waits on `pull.listen`). `undefined` for an in-process job, whose target
 * driver the registry makes. The driver's `transport` carries the job's block sessions.
 */
export function remoteTargetForJob(
  job: Pick<JobSpec, 'transport' | 'target'>,
  context: TransportContext,
): RemoteTargetDriver | undefined {
  const section = job.transport as TransportSection;
  if (section.kind === 'inprocess') return undefined;
  const tuning = { security: securityOf(section, context), kind: job.target.driver, ...linkTuningOf(section) };
  if (section.pull !== undefined) {
    const pull = record(section.pull, 'pull');
    return createPullRemoteTarget({ ...tuning, listen: address(pull.listen, 'pull.listen') });
  }
  return createRemoteTarget({ ...tuning, address: address(section.agent, 'agent') });
}

/** A pull transport that starts listening on its first session and stops after each one. */
function lazyPull(pull: PullTransport): Transport {
  return {
    name: pull.name,
    async open(spec, options) {
      await pull.listen();
      try {
        const channel = await pull.open(spec, options);
        return {
          openDisk: (disk, diskOptions) => channel.openDisk(disk, diskOptions),
          async close() {
            try {
              await channel.close();
            } finally {
              await pull.close();
            }
          },
        };
      } catch (error) {
        await pull.close();
        throw error;
      }
    },
  };
}

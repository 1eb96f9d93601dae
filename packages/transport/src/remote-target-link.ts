import type { Transport } from '@replikit/core';
import {
  createNetworkTransport,
  createPullTransport,
  type NetworkTransportOptions,
  type PullTransportOptions,
} from './network-transport.js';
import { RemoteTargetDriver } from './remote-target.js';
import type { Address } from './security.js';
import { dial } from './security.js';

/** What names the agent's driver kind (the job's `target.driver`). */
export interface RemoteKind {
  /**
   * The kind of the driver the agent runs (for the engine's rules and messages).
   * @default 'file'
   */
  kind?: string;
}

/**
 * Push: the target driver of a job whose replica lives beside a `replikit-agent` that this side
 * dials. Control operations and block sessions both go to `options.address`; use the driver's
 * `transport` as the run's transport.
 *
 * @example
 * ```ts
 * const target = createRemoteTarget({ address: { host: '10.0.0.7', port: 7400 }, security });
 * const engine = new ReplicationEngine({
 *   stateStore,
 *   targetDriver: () => target,
 *   transport: () => target.transport,
 * });
 * ```
 */
export function createRemoteTarget(options: NetworkTransportOptions & RemoteKind): RemoteTargetDriver {
  const transport = createNetworkTransport(options);
  return new RemoteTargetDriver(
    options.kind ?? 'file',
    {
      connect: (signal) => dial(options.address, options.security, { signal }),
      dialer: true,
      peer: `agent ${options.address.host}:${options.address.port}`,
      key: options.security.kind === 'tcp' ? options.security.key : undefined,
    },
    transport,
  );
}

/**
 * Pull: the target driver of a job whose agent dials this side (`replikit-agent --pull-from`).
 * It listens from its first call until it is closed; the agent's connections serve control
 * operations and block sessions alike (the agent dials again while a control connection is open).
 */
export function createPullRemoteTarget(options: PullTransportOptions & RemoteKind): RemoteTargetDriver {
  const pull = createPullTransport(options);
  let listening: Promise<Address> | undefined;
  const listen = () => {
    listening ??= pull.listen();
    return listening;
  };
  const transport: Transport = {
    name: pull.name,
    async open(spec, openOptions) {
      await listen();
      return pull.open(spec, openOptions);
    },
  };
  return new RemoteTargetDriver(
    options.kind ?? 'file',
    {
      async connect(signal) {
        await listen();
        return pull.accept(signal);
      },
      dialer: false,
      peer: `pulling agent on ${options.listen.host}:${options.listen.port}`,
      key: options.security.kind === 'tcp' ? options.security.key : undefined,
      async close() {
        if (listening) await pull.close();
      },
    },
    transport,
  );
}

import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import {
  FileStateStore,
  isReplikitError,
  type Replica,
  ReplicationEngine,
  type ReplikitError,
  type RunRecord,
} from '@replikit/core';
import { createFileDriver } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type AgentEvent, createAgent } from '../src/agent.js';
import { FrameConnection, RemoteError } from '../src/connection.js';
import { handshake } from '../src/handshake.js';
import type { RemoteTargetDriver } from '../src/remote-target.js';
import { createPullRemoteTarget, createRemoteTarget } from '../src/remote-target-link.js';
import { createSecureServer, dial } from '../src/security.js';
import {
  createMixedVm,
  createWorld,
  digestOf,
  jobFor,
  replicaMatches,
  scribble,
  startAgent,
  TLS_PSK,
  type World,
  waitFor,
} from './helpers/world.js';

/*
 * Issue 15, point 3: the agent hosts the whole target side. The engine's job names a target root
 * that does not exist on its side (the tests run as root, so a folder the engine is denied is
 * simulated by one that is not there); the agent writes under its own root (`world.replicas`).
 */

const MiB = 1024 * 1024;
let world: World;

beforeEach(async () => {
  world = await createWorld();
});
afterEach(async () => {
  await world.dispose();
});

/** The engine-side folder the job names as its target root: it must never appear. */
const engineSide = () => join(world.dir, 'engine-side');

/**
 * An engine whose target driver is a new remote one per run (the engine closes a run's drivers at
 * its end) and whose block transport is that driver's.
 */
function remoteEngine(makeRemote: () => RemoteTargetDriver): ReplicationEngine {
  return new ReplicationEngine({
    stateStore: new FileStateStore(join(world.dir, 'state')),
    drivers: world.registry,
    targetDriver: () => makeRemote(),
    transport: (target) => (target as RemoteTargetDriver).transport,
    checkpointEveryMs: 0,
  });
}

function remoteJob(vm: string, extra = {}) {
  const job = jobFor(world, vm, extra);
  return { ...job, target: { ...job.target, root: engineSide() } };
}

/** The replica as the agent's side sees it. */
async function replicaDigest(record: RunRecord): Promise<string> {
  const driver = createFileDriver({ root: world.replicas });
  try {
    return await digestOf(driver, record.replica!.disks[0]!);
  } finally {
    await driver.close();
  }
}

/** Two runs, restore points listed and one reverted through the agent; nothing on the engine's side. */
async function replicateListAndRevert(makeRemote: () => RemoteTargetDriver): Promise<void> {
  await createMixedVm(world, 'web', 2 * MiB);
  const first = await remoteEngine(makeRemote).run(remoteJob('web'));
  expect(first.state).toBe('completed');
  expect(await replicaMatches(world, first)).toBe(true);
  const firstDigest = await replicaDigest(first);
  await scribble(world, 'web', 2 * MiB, 4);
  const second = await remoteEngine(makeRemote).run(remoteJob('web'));
  expect(await replicaMatches(world, second)).toBe(true);

  const remote = makeRemote();
  try {
    const replica = second.replica!;
    const points = await remote.listRestorePoints(replica);
    expect(points.map((p) => p.label)).toEqual([first.runId, second.runId]);
    expect(await remote.replicaMark(replica)).toBe('ready');
    await remote.revertTo(replica, points[0]!);
    expect(await replicaDigest(second)).toBe(firstDigest);
    expect(await remote.listRestorePoints(replica)).toHaveLength(1);
  } finally {
    await remote.close();
  }
  // Hash-diff after the revert: the replica's digests come over the wire from the agent.
  const third = await remoteEngine(makeRemote).run(remoteJob('web'));
  expect(third.disks.map((d) => d.mode)).toEqual(['hash-diff']);
  expect(await replicaMatches(world, third)).toBe(true);
  expect(existsSync(engineSide())).toBe(false);
}

describe('remote target: the agent hosts the target side', () => {
  it('push: runs complete, the replica verifies on the agent, points and revert go through it', async () => {
    const { agent, address } = await startAgent(world, TLS_PSK);
    try {
      await replicateListAndRevert(() => createRemoteTarget({ address, security: TLS_PSK }));
    } finally {
      await agent.stop();
    }
  });

  it('pull: the same with an agent that dials the engine', async () => {
    const agent = createAgent({ target: createFileDriver({ root: world.replicas }), security: TLS_PSK });
    // A free port, where each run's remote target listens in turn and the agent dials.
    const server = createServer();
    const port = await new Promise<number>((resolve) =>
      server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
    );
    await new Promise<void>((resolve) => server.close(() => resolve()));
    agent.pullFrom({ host: '127.0.0.1', port });
    try {
      await replicateListAndRevert(() =>
        createPullRemoteTarget({ listen: { host: '127.0.0.1', port }, security: TLS_PSK }),
      );
    } finally {
      await agent.stop();
    }
  });

  it("the replica hold is the agent's: a run refuses a replica held through the agent", async () => {
    const { agent, address } = await startAgent(world, TLS_PSK);
    const makeRemote = () => createRemoteTarget({ address, security: TLS_PSK });
    const remote = makeRemote();
    try {
      await createMixedVm(world, 'db', 1 * MiB);
      const first = await remoteEngine(makeRemote).run(remoteJob('db'));
      const replica = first.replica!;
      const owner = { runId: 'other-run', host: 'elsewhere', pid: 1, startedAt: new Date().toISOString() };
      expect((await remote.claimReplica(replica, owner)).runId).toBe('other-run');
      expect((await remote.replicaOwner(replica))?.runId).toBe('other-run');
      const refused = await remoteEngine(makeRemote)
        .run(remoteJob('db'))
        .catch((error: unknown) => error);
      expect(isReplikitError(refused, 'E_CONFLICT'), String(refused)).toBe(true);
      await remote.releaseReplica(replica, 'other-run');
      expect(await remote.replicaOwner(replica)).toBeUndefined();
    } finally {
      await remote.close();
      await agent.stop();
    }
  });

  it("keeps the job's retention on the agent's side", async () => {
    const { agent, address } = await startAgent(world, TLS_PSK);
    const makeRemote = () => createRemoteTarget({ address, security: TLS_PSK });
    try {
      await createMixedVm(world, 'log', 1 * MiB);
      const runs: RunRecord[] = [];
      for (let i = 0; i < 3; i++) {
        await scribble(world, 'log', 1 * MiB, 2);
        runs.push(await remoteEngine(makeRemote).run(remoteJob('log', { options: { retention: 2 } })));
      }
      expect(await replicaMatches(world, runs[2]!)).toBe(true);
      const remote = makeRemote();
      try {
        const points = await remote.listRestorePoints(runs[2]!.replica!);
        expect(points.map((p) => p.label)).toEqual([runs[1]!.runId, runs[2]!.runId]);
      } finally {
        await remote.close();
      }
    } finally {
      await agent.stop();
    }
  });

  it('lists restore points whose answer is larger than a control frame (long labels, many points)', async () => {
    const { agent, address } = await startAgent(world, TLS_PSK);
    const remote = createRemoteTarget({ address, security: TLS_PSK });
    try {
      await createMixedVm(world, 'many', 1 * MiB);
      const run = await remoteEngine(() => createRemoteTarget({ address, security: TLS_PSK })).run(remoteJob('many'));
      const replica = run.replica!;
      // 120 points of ~1 KB each: about twice the 64 KiB bound of a control frame.
      const labels = Array.from({ length: 120 }, (_, i) => `${String(i).padStart(3, '0')}-${'x'.repeat(900)}`);
      for (const label of labels) await remote.createRestorePoint(replica, label, { retention: 1000 });
      const points = await remote.listRestorePoints(replica);
      expect(points.map((p) => p.label)).toEqual([run.runId, ...labels]);
    } finally {
      await remote.close();
      await agent.stop();
    }
  });

  it('rolls a cancelled run back through the agent: a first replica deleted, a later one reverted', async () => {
    const { agent, address } = await startAgent(world, TLS_PSK);
    const makeRemote = () => createRemoteTarget({ address, security: TLS_PSK });
    const cancelled = async () => {
      const engine = remoteEngine(makeRemote);
      const controller = new AbortController();
      engine.on('state', (event) => {
        if (event.to === 'transfer') controller.abort();
      });
      return engine.run(remoteJob('web'), { signal: controller.signal }).catch((error: unknown) => error);
    };
    try {
      await createMixedVm(world, 'web', 2 * MiB);
      const outcome = await cancelled();
      expect(isReplikitError(outcome, 'E_ABORTED'), JSON.stringify(outcome).slice(0, 600)).toBe(true);
      // The run created the replica and never completed it: the agent deleted it.
      expect(existsSync(join(world.replicas, 'web-replica'))).toBe(false);

      const first = await remoteEngine(makeRemote).run(remoteJob('web'));
      const firstDigest = await replicaDigest(first);
      await scribble(world, 'web', 2 * MiB, 8);
      expect(isReplikitError(await cancelled(), 'E_ABORTED')).toBe(true);
      expect(await replicaDigest(first)).toBe(firstDigest);
      const remote = makeRemote();
      try {
        expect(await remote.listRestorePoints(first.replica!)).toHaveLength(1);
        expect(await remote.replicaMark(first.replica!)).toBe('ready');
        expect(await remote.replicaOwner(first.replica!)).toBeUndefined();
      } finally {
        await remote.close();
      }
      expect(existsSync(engineSide())).toBe(false);
    } finally {
      await agent.stop();
    }
  });

  it('opens the control connection again after the agent closed it as idle', async () => {
    const events: AgentEvent[] = [];
    const agent = createAgent({
      target: createFileDriver({ root: world.replicas }),
      security: TLS_PSK,
      idleTimeoutMs: 50,
      onEvent: (event) => events.push(event),
    });
    const address = await agent.listen({ host: '127.0.0.1', port: 0 });
    const remote = createRemoteTarget({ address, security: TLS_PSK });
    try {
      const missing = (await remote.getVM('nothing').catch((e: unknown) => e)) as ReplikitError;
      expect(missing.code).toBe('E_NOT_FOUND');
      await waitFor(events, (event) => event.type === 'control');
      const again = (await remote.getVM('nothing').catch((e: unknown) => e)) as ReplikitError;
      expect(again.code).toBe('E_NOT_FOUND');
      expect(events.filter((event) => event.type === 'control')).toHaveLength(1);
    } finally {
      await remote.close();
      await agent.stop();
    }
  });

  it("carries the agent driver's error code: a missing restore point is E_NOT_FOUND", async () => {
    const { agent, address } = await startAgent(world, TLS_PSK);
    const makeRemote = () => createRemoteTarget({ address, security: TLS_PSK });
    const remote = makeRemote();
    try {
      await createMixedVm(world, 'app', 1 * MiB);
      const run = await remoteEngine(makeRemote).run(remoteJob('app'));
      const point = { id: 'no-such-point', replicaId: run.replica!.id, label: 'x', createdAt: run.startedAt };
      const error = (await remote.revertTo(run.replica!, point).catch((e: unknown) => e)) as ReplikitError;
      expect(error).toBeInstanceOf(RemoteError);
      expect(error.code).toBe('E_NOT_FOUND');
      // The connection goes on after a driver error.
      expect(await remote.listRestorePoints(run.replica!)).toHaveLength(1);
      const missing: Replica = { id: 'ghost', name: 'ghost', disks: [], created: false };
      const unknown = (await remote.getVM(missing.id).catch((e: unknown) => e)) as ReplikitError;
      expect(unknown.code).toBe('E_NOT_FOUND');
    } finally {
      await remote.close();
      await agent.stop();
    }
  });

  it('refuses an agent that does not host the target side with one clear line', async () => {
    // An agent of the previous version: its hello lists no 'target' feature.
    const server = createSecureServer(TLS_PSK, {
      onConnection(socket, peer) {
        const conn = new FrameConnection(socket, peer);
        void handshake(conn, { role: 'target', dialer: false, codecs: ['none'], features: ['delta'] })
          .then(() => conn.next())
          .catch(() => undefined);
      },
      onRefused: () => undefined,
    });
    const port = await new Promise<number>((resolve) =>
      server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
    );
    const remote = createRemoteTarget({ address: { host: '127.0.0.1', port }, security: TLS_PSK });
    try {
      const error = (await remote.getVM('web').catch((e: unknown) => e)) as ReplikitError;
      expect(error.code).toBe('E_TRANSPORT');
      expect(error.message).toMatch(/does not host the target side .*upgrade replikit-agent/);
      expect(error.message).not.toContain('\n');
    } finally {
      await remote.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('ends a connection whose request is malformed, and the driver never sees it', async () => {
    let calls = 0;
    const driver = createFileDriver({ root: world.replicas });
    const watched = new Proxy(driver, {
      get(target, key, receiver) {
        if (key !== 'revertTo' && key !== 'listRestorePoints') return Reflect.get(target, key, receiver);
        return (...args: unknown[]) => {
          calls++;
          return (Reflect.get(target, key, receiver) as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const agent = createAgent({ target: watched, security: TLS_PSK });
    const address = await agent.listen({ host: '127.0.0.1', port: 0 });
    try {
      const conn = new FrameConnection(await dial(address, TLS_PSK), 'agent');
      await handshake(conn, { role: 'source', dialer: true, codecs: ['none'] });
      conn.send({ type: 'request', id: 1, op: 'listRestorePoints', args: { replica: { id: 5 } } });
      const error = (await conn.next().catch((e: unknown) => e)) as ReplikitError;
      expect(error.code).toBe('E_TRANSPORT');
      expect(error.message).toMatch(/protocol error: replica\.id must be a string/);
      // An unknown operation is answered (a newer engine), not a protocol error.
      const again = new FrameConnection(await dial(address, TLS_PSK), 'agent');
      await handshake(again, { role: 'source', dialer: true, codecs: ['none'] });
      again.send({ type: 'request', id: 2, op: 'formatDisk', args: {} });
      const answer = await again.next();
      expect(answer).toMatchObject({ type: 'response', id: 2, error: { code: 'E_INPUT' } });
      again.send({ type: 'request', id: 3, op: 'revertTo', args: { replica: 'web', point: {} } });
      await expect(again.next()).rejects.toThrow(/protocol error/);
      expect(calls).toBe(0);
      await conn.close().catch(() => undefined);
      await again.close().catch(() => undefined);
    } finally {
      await agent.stop();
      await driver.close();
    }
  });
});

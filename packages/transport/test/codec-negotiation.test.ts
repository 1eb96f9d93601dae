import net from 'node:net';
import { isReplikitError } from '@replikit/core';
import { createNodeHasher } from '@replikit/core/internal';
import { createFileDriver } from '@replikit/driver-file';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { availableCodecs, checkCodecChoice, codecById, negotiateCodec } from '../src/codecs.js';
import { FrameConnection } from '../src/connection.js';
import { handshake } from '../src/handshake.js';
import { createNetworkTransport } from '../src/network-transport.js';
import type { Message } from '../src/protocol/messages.js';
import { serveTargetSession } from '../src/target-session.js';
import { startLinkEmulator } from '../src/testing/link-emulator.js';
import { BlockTarget } from '../src/wire/block-target.js';
import {
  createMixedVm,
  createWorld,
  engineFor,
  jobFor,
  replicaMatches,
  startAgent,
  TLS_PSK,
  type World,
} from './helpers/world.js';

const MiB = 1024 * 1024;
const HAS_ZSTD = availableCodecs().includes('zstd');
let world: World;

beforeEach(async () => {
  world = await createWorld();
});
afterEach(async () => {
  await world.dispose();
});

/** A connection that notes the codec of every compressed block the target reads. */
class TappedConnection extends FrameConnection {
  readonly codecs = new Set<string>();

  private note(message: Message | undefined): Message | undefined {
    if (message?.type === 'block' && message.compressed) this.codecs.add(codecById(message.codec).name);
    return message;
  }

  override poll(): Message | undefined {
    return this.note(super.poll());
  }

  override async nextOrInterrupt(): Promise<Message | undefined> {
    return this.note(await super.nextOrInterrupt());
  }
}

/**
 * A target agent that offers exactly `codecs` in its `hello` (an older agent, or one on a Node
 * without zstd) and writes into the world's replicas; tells which codec each session settled on.
 */
async function agentOffering(codecs: string[]) {
  const sessions: Array<{ codec: string; blockCodecs: Set<string> }> = [];
  const sockets = new Set<net.Socket>();
  const target = new BlockTarget(createFileDriver({ root: world.replicas }), createNodeHasher);
  const server = net.createServer(async (socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    const conn = new TappedConnection(socket, 'test source');
    try {
      await handshake(conn, { role: 'target', dialer: false, codecs });
      const first = await conn.expect('session');
      const seen = { codec: first.codec, blockCodecs: conn.codecs };
      sessions.push(seen);
      await serveTargetSession(conn, target, { first });
    } catch {
      conn.destroy();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = { host: '127.0.0.1', port: (server.address() as net.AddressInfo).port };
  const close = async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  };
  return { address, sessions, close };
}

const withoutZstd = availableCodecs().filter((c) => c !== 'zstd');
const withZstd = [...withoutZstd, 'zstd'];

describe('codec negotiation (pure)', () => {
  it('auto takes zstd only when both ends have it, else brotli, else the deflate both have', () => {
    if (HAS_ZSTD) {
      expect(negotiateCodec('auto', withZstd, withZstd)).toMatchObject({ adaptive: true, codec: { name: 'zstd' } });
    }
    expect(negotiateCodec('auto', withoutZstd, withZstd).codec?.name).toBe('brotli');
    expect(negotiateCodec('auto', withZstd, withoutZstd).codec?.name).toBe('brotli');
    expect(negotiateCodec('auto', ['none', 'deflate', 'zlib-deflate'], withoutZstd).codec?.name).toBe('zlib-deflate');
    expect(negotiateCodec('auto', ['none', 'deflate'], withoutZstd).codec?.name).toBe('deflate');
    expect(negotiateCodec('auto', ['none'], withoutZstd).codec).toBeUndefined();
    expect(negotiateCodec('none', withZstd, withZstd)).toEqual({ codec: undefined, adaptive: false });
    expect(negotiateCodec('brotli', withZstd, withZstd)).toMatchObject({ adaptive: false, codec: { name: 'brotli' } });
  });

  it('a codec named explicitly that the peer lacks is refused with E_INPUT, before any block', () => {
    let error: unknown;
    try {
      negotiateCodec('zstd', withoutZstd, withZstd);
    } catch (caught) {
      error = caught;
    }
    expect(isReplikitError(error, 'E_INPUT')).toBe(true);
    expect((error as Error).message).toMatch(/does not offer codec 'zstd'.*'auto'/);
  });
});

describe('a codec chosen in a job', () => {
  it('zstd on a runtime without it is refused with the Node version it needs; elsewhere it is taken', () => {
    if (HAS_ZSTD) expect(checkCodecChoice('zstd')).toBe('zstd');
    else expect(() => checkCodecChoice('zstd')).toThrow(/zstd' needs Node 22\.15 or later .*use auto/);
    expect(() => checkCodecChoice('lz5')).toThrow(/unknown codec 'lz5'/);
    expect(checkCodecChoice('auto')).toBe('auto');
  });
});

describe('codec negotiation (sessions to agents of each kind; the replica equal every time)', () => {
  const cases: Array<{ name: string; offers: string[]; choice?: string; settles: string }> = [
    {
      name: 'auto, an agent with every codec of this runtime',
      offers: availableCodecs(),
      settles: HAS_ZSTD ? 'zstd' : 'brotli',
    },
    { name: 'auto, an agent without zstd (Node 20, older versions)', offers: withoutZstd, settles: 'brotli' },
    {
      name: 'auto, an agent with zstd',
      offers: withZstd,
      settles: HAS_ZSTD ? 'zstd' : 'brotli',
    },
    ...availableCodecs()
      .filter((c) => c !== 'none')
      .map((codec) => ({ name: `explicit ${codec}`, offers: withZstd, choice: codec, settles: codec })),
    { name: 'explicit none', offers: withZstd, choice: 'none', settles: 'none' },
  ];

  for (const { name, offers, choice, settles } of cases) {
    it(`${name}: settles on ${settles}`, async () => {
      const agent = await agentOffering(offers);
      try {
        await createMixedVm(world, 'vm', 2 * MiB);
        const transport = createNetworkTransport({
          address: agent.address,
          security: { kind: 'tcp' },
          ...(choice ? { codec: choice } : {}),
        });
        const record = await engineFor(world, () => transport).run(jobFor(world, 'vm'));
        expect(await replicaMatches(world, record)).toBe(true);
        expect(agent.sessions.map((s) => s.codec)).toEqual([settles]);
        const used = [...agent.sessions[0]!.blockCodecs];
        if (choice && choice !== 'none') {
          // A codec named explicitly compresses every block that pays (the text blocks here).
          expect(used).toEqual([choice]);
          expect(record.stats.bytesSent).toBeLessThan(record.stats.bytesWritten);
        } else {
          // auto on loopback compresses samples at most, and only with the codec settled on.
          expect(used.every((c) => c === settles)).toBe(true);
        }
      } finally {
        await agent.close();
      }
    });
  }

  it.skipIf(!HAS_ZSTD)('explicit zstd to an agent without it fails the run with E_INPUT', async () => {
    const agent = await agentOffering(withoutZstd);
    try {
      await createMixedVm(world, 'vm', MiB);
      const transport = createNetworkTransport({ address: agent.address, security: { kind: 'tcp' }, codec: 'zstd' });
      const failure = await engineFor(world, () => transport)
        .run(jobFor(world, 'vm'))
        .then(
          () => undefined,
          (error: unknown) => error,
        );
      expect(isReplikitError(failure, 'E_INPUT'), String(failure)).toBe(true);
      expect(agent.sessions).toHaveLength(0);
    } finally {
      await agent.close();
    }
  });

  it.skipIf(HAS_ZSTD)('explicit zstd on a runtime without it is refused when the transport is made', () => {
    let error: unknown;
    try {
      createNetworkTransport({ address: { host: '127.0.0.1', port: 1 }, security: { kind: 'tcp' }, codec: 'zstd' });
    } catch (caught) {
      error = caught;
    }
    expect(isReplikitError(error, 'E_INPUT')).toBe(true);
  });
});

describe('the auto codec over a slow link', () => {
  it('compresses once the link is the bottleneck: fewer bytes on the wire, the replica equal', async () => {
    const { agent, address } = await startAgent(world, TLS_PSK);
    const link = await startLinkEmulator(address, { rttMs: 10, bitsPerSecond: 20e6 });
    try {
      // 10 MiB: 40 % random blocks, 40 % text, 20 % holes; 3 s raw at 20 Mbit/s.
      await createMixedVm(world, 'slow', 10 * MiB);
      const transport = createNetworkTransport({ address: link.address, security: TLS_PSK });
      const record = await engineFor(world, () => transport).run(jobFor(world, 'slow'));
      expect(await replicaMatches(world, record)).toBe(true);
      // Raw, the random half and the text half would cross whole; the first 1 MiB window goes
      // raw (but for samples) while the governor measures.
      expect(record.stats.bytesSent).toBeLessThan(0.8 * record.stats.bytesWritten);
    } finally {
      await link.close();
      await agent.stop();
    }
  });
});

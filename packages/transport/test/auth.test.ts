import { randomBytes } from 'node:crypto';
import type { ReplikitError, SessionSpec } from '@replikit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { availableCodecs } from '../src/codecs.js';
import { FrameConnection } from '../src/connection.js';
import { handshake } from '../src/handshake.js';
import { createNetworkTransport } from '../src/network-transport.js';
import { dial, type Security } from '../src/security.js';
import { makeCertificate, type TestCertificate } from './helpers/certificates.js';
import { createWorld, startAgent, TLS_PSK, type World, waitFor } from './helpers/world.js';

let world: World;
let agentCert: TestCertificate;
let sourceCert: TestCertificate;
let strangerCert: TestCertificate;

beforeAll(async () => {
  world = await createWorld();
  agentCert = makeCertificate('agent');
  sourceCert = makeCertificate('source');
  strangerCert = makeCertificate('stranger');
});
afterAll(async () => {
  await world.dispose();
});

const spec: SessionSpec = {
  runId: 'auth',
  blockSize: 65536,
  digest: 'sha256',
  replica: { id: 'none', name: 'none', disks: [], created: false } as never,
};

/**
 * Starts an agent with `agentSide`, opens a session with `sourceSide`, and returns both ends'
 * errors. The agent must report a refusal and never start a session (so it wrote nothing).
 */
async function refusal(agentSide: Security, sourceSide: Security) {
  const { agent, address, events } = await startAgent(world, agentSide);
  try {
    const transport = createNetworkTransport({
      address,
      security: sourceSide,
      reconnect: { attempts: 1, initialDelayMs: 1, maxDelayMs: 1 },
    });
    const error = (await transport.open(spec).then(
      () => undefined,
      (e: unknown) => e,
    )) as ReplikitError | undefined;
    const refused = await waitFor(events, (e) => e.type === 'refused');
    expect(events.some((e) => e.type === 'session-start')).toBe(false);
    return { source: error, agent: refused.type === 'refused' ? refused.error : undefined };
  } finally {
    await agent.stop();
  }
}

const certs = (mine: TestCertificate, trust: TestCertificate): Security => ({
  kind: 'tls',
  certificate: { cert: mine.cert, key: mine.key, trust: [trust.fingerprint] },
});

describe('refusals', () => {
  it('a wrong pre-shared key', async () => {
    const { source, agent } = await refusal(TLS_PSK, {
      kind: 'tls',
      psk: { identity: 'tests', key: randomBytes(32) },
    });
    expect(source?.code).toBe('E_AUTH');
    expect(source?.message).toMatch(/TLS handshake .* failed/);
    expect(agent?.code).toBe('E_AUTH');
  });

  it('an unknown PSK identity', async () => {
    const { source, agent } = await refusal(TLS_PSK, { kind: 'tls', psk: { identity: 'who', key: randomBytes(32) } });
    expect(source?.code).toBe('E_AUTH');
    expect(agent?.code).toBe('E_AUTH');
  });

  it('a client certificate the agent has not pinned', async () => {
    const { source, agent } = await refusal(certs(agentCert, sourceCert), certs(strangerCert, agentCert));
    expect(agent?.code).toBe('E_AUTH');
    expect(agent?.message).toMatch(/not pinned/);
    expect(source?.code).toBe('E_AUTH');
    expect(source?.message).toMatch(/not pinned/);
  });

  it('an agent certificate the source has not pinned', async () => {
    const { source, agent } = await refusal(certs(strangerCert, sourceCert), certs(sourceCert, agentCert));
    expect(source?.code).toBe('E_AUTH');
    expect(source?.message).toMatch(/not pinned/);
    expect(agent?.code).toBe('E_AUTH');
  });

  it('a plain TCP client at a TLS agent', async () => {
    const { source, agent } = await refusal(TLS_PSK, { kind: 'tcp' });
    expect(agent?.code).toBe('E_AUTH');
    expect(agent?.message).toMatch(/did not start a TLS handshake/);
    expect(source?.code).toMatch(/E_TRANSPORT|E_AUTH/);
    expect(source?.message).toMatch(/TLS|closed/);
  });

  it('a TLS client at a plain TCP agent', async () => {
    const { source, agent } = await refusal({ kind: 'tcp', key: randomBytes(32) }, TLS_PSK);
    expect(agent?.message).toMatch(/TLS records/);
    expect(source?.code).toMatch(/E_TRANSPORT|E_AUTH/);
  });

  it('a wrong transport key on plain TCP, either way round', async () => {
    const one = await refusal({ kind: 'tcp', key: randomBytes(32) }, { kind: 'tcp', key: randomBytes(32) });
    expect(one.source?.code).toBe('E_AUTH');
    expect(one.agent?.code).toBe('E_AUTH');
    const two = await refusal({ kind: 'tcp', key: randomBytes(32) }, { kind: 'tcp' });
    expect(two.source?.code).toBe('E_AUTH');
    expect(two.agent?.code).toBe('E_AUTH');
  });

  it('a wrong protocol version', async () => {
    const { agent, address, events } = await startAgent(world, TLS_PSK);
    try {
      const conn = new FrameConnection(await dial(address, TLS_PSK), 'agent');
      const error = await handshake(conn, {
        role: 'source',
        dialer: true,
        codecs: availableCodecs(),
        versions: [2, 3],
      }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect((error as ReplikitError).code).toBe('E_TRANSPORT');
      expect((error as Error).message).toMatch(/protocol version mismatch/);
      const refused = await waitFor(events, (e) => e.type === 'refused');
      expect(refused.type === 'refused' && refused.error.message).toMatch(/version mismatch/);
      expect(events.some((e) => e.type === 'session-start')).toBe(false);
    } finally {
      await agent.stop();
    }
  });
});

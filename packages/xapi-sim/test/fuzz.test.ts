import { connect } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawNbd } from './helpers/nbd-client.js';
import { type SimFixture, startSim } from './helpers/sim-fixture.js';

const RUNS = 10_000;
const BATCH = 10;
/** Enough for 10,000 HTTP round trips on a loaded two-core CI machine. */
const FUZZ_TIMEOUT = 300_000;

describe('fuzzing: malformed input gets XAPI-style errors or a closed connection, never a crash', () => {
  let fx: SimFixture;
  let methods: string[];
  beforeAll(async () => {
    fx = await startSim({ nbd: true });
    // event.from legitimately blocks for its timeout; session.logout with the shared session
    // legitimately ends it (the health checks need it); everything else answers at once
    methods = ((await fx.sim.call('system.listMethods')) as string[]).filter(
      (m) => !m.includes('event.from') && m !== 'session.logout',
    );
  });
  afterAll(async () => {
    await fx.close();
  });

  async function healthy(): Promise<void> {
    const r = await fetch(`${fx.sim.url}/jsonrpc`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', method: 'pool.get_all', params: [fx.session], id: 1 }),
    });
    expect(await r.json()).toEqual({ jsonrpc: '2.0', result: [fx.sim.refs.pool], id: 1 });
  }

  it(
    `${RUNS} malformed JSON-RPC bodies`,
    async () => {
      const value = fc.oneof(
        fc.jsonValue(),
        fc.constant(fx.session),
        fc.constant(fx.sim.refs.sr),
        fc.constant(fx.sim.refs.dom0),
      );
      const call = fc.record(
        {
          jsonrpc: fc.oneof(fc.constant('2.0'), fc.constant('1.0'), fc.jsonValue()),
          method: fc.oneof(fc.constantFrom(...methods), fc.string(), fc.jsonValue()),
          params: fc.oneof(
            fc.array(value, { maxLength: 5 }),
            fc.tuple(fc.constant(fx.session), value, value).map((t) => [...t]),
            fc.jsonValue(),
          ),
          id: fc.oneof(fc.integer(), fc.string(), fc.jsonValue()),
        },
        { requiredKeys: [] },
      );
      const body = fc.oneof(
        { weight: 4, arbitrary: call.map((c) => JSON.stringify(c)) },
        { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
        { weight: 1, arbitrary: call.map((c) => JSON.stringify(c).slice(0, -3)) },
      );
      let answered = 0;
      const check = async (text: string) => {
        const r = await fetch(`${fx.sim.url}/jsonrpc`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: text,
        });
        expect(r.headers.get('content-type')).toBe('application/json');
        const reply = (await r.json()) as { result?: unknown; error?: unknown };
        if ('error' in reply && reply.error !== null) {
          const e = reply.error as { code?: unknown; message?: unknown; data?: unknown } | unknown[];
          if (Array.isArray(e)) expect(typeof e[0]).toBe('string');
          else {
            expect(e.code).toBe(1);
            expect(typeof e.message).toBe('string');
            expect(Array.isArray(e.data)).toBe(true);
          }
        } else {
          expect('result' in reply).toBe(true);
        }
        answered++;
      };
      // ten bodies at a time, so that 10,000 fit in a CI run on a busy machine
      await fc.assert(
        fc.asyncProperty(fc.array(body, { minLength: BATCH, maxLength: BATCH }), async (texts) => {
          await Promise.all(texts.map(check));
        }),
        { numRuns: RUNS / BATCH },
      );
      expect(answered).toBe(RUNS);
      await healthy();
    },
    FUZZ_TIMEOUT,
  );

  it(
    `${RUNS} malformed NBD option sequences`,
    async () => {
      const port = fx.sim.state.nbd!.port;
      const option = fc.record({
        magic: fc.oneof(
          { weight: 9, arbitrary: fc.constant('IHAVEOPT') },
          { weight: 1, arbitrary: fc.string({ minLength: 8, maxLength: 8 }) },
        ),
        code: fc.oneof(fc.constantFrom(1, 2, 3, 5, 6, 7, 8, 10), fc.nat()),
        length: fc.oneof(fc.nat({ max: 64 }), fc.nat()),
        payload: fc.uint8Array({ maxLength: 64 }),
      });
      const sequence = fc.record({
        flags: fc.nat(),
        options: fc.array(option, { maxLength: 6 }),
        trailer: fc.uint8Array({ maxLength: 40 }),
      });
      await fc.assert(
        fc.asyncProperty(sequence, async ({ flags, options, trailer }) => {
          const socket = connect(port, '127.0.0.1');
          socket.on('error', () => undefined);
          const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
          const head = Buffer.alloc(4);
          head.writeUInt32BE(flags >>> 0);
          const parts = [head];
          for (const o of options) {
            const h = Buffer.alloc(16);
            h.write(o.magic, 0, 8, 'latin1');
            h.writeUInt32BE(o.code >>> 0, 8);
            h.writeUInt32BE(o.length >>> 0, 12);
            // STARTTLS would wait for a TLS hello; keep the sequences in clear text
            if (o.code !== 5) parts.push(h, Buffer.from(o.payload));
          }
          parts.push(Buffer.from(trailer));
          socket.end(Buffer.concat(parts));
          socket.resume();
          await closed;
        }),
        { numRuns: RUNS },
      );
      // still serving: a proper handshake goes through
      const c = await RawNbd.open(port);
      await c.read(18);
      c.write(Buffer.from([0, 0, 0, 1]));
      c.option(5);
      expect(await c.reply()).toEqual({ option: 5, type: 1 });
      await healthy();
    },
    FUZZ_TIMEOUT,
  );
});

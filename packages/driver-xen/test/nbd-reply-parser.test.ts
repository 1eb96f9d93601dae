import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdConnection, NbdExport } from '../src/index.js';
import { NBD } from '../src/nbd/nbd-constants.js';
import { type PendingRead, ReplyParser } from '../src/nbd/reply-parser.js';
import { startHostileNbdServer } from './helpers/hostile-nbd-server.js';
import { startPool, type TestPool } from './helpers/xen-pool.js';

function reply(handle: bigint, errno: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.alloc(16 + payload.length);
  b.writeUInt32BE(NBD.SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(errno, 4);
  b.writeBigUInt64BE(handle, 8);
  b.set(payload, 16);
  return b;
}

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

/** A parser over reads of the given lengths (handles 1, 2, …), recording what the server did. */
function harness(lengths: number[]) {
  const pending = new Map<bigint, PendingRead>();
  const outcome = new Map<bigint, string>();
  const violations: string[] = [];
  lengths.forEach((length, i) => {
    const handle = BigInt(i + 1);
    pending.set(handle, {
      target: new Uint8Array(length),
      offset: 0,
      resolve: () => outcome.set(handle, 'ok'),
      reject: (e) => outcome.set(handle, e.message),
    });
  });
  const targets = new Map([...pending].map(([h, r]) => [h, r.target]));
  const parser = new ReplyParser({
    take: (handle) => pending.get(handle),
    done: (handle, read, errno) => {
      pending.delete(handle);
      if (errno === 0) read.resolve();
      else read.reject(new Error(`errno ${errno}`));
    },
    violation: (message) => violations.push(message),
  });
  return { parser, outcome, violations, targets, pending };
}

function feed(parser: ReplyParser, stream: Buffer, chunk: number): void {
  for (let at = 0; at < stream.length; at += chunk) parser.push(stream.subarray(at, at + chunk));
}

describe('NBD reply parser (replies parsed as the TLS chunks arrive)', () => {
  it.each([1, 5, 16, 17, 4096, 16_384, 1 << 20])(
    'copies every payload into its own read, in any order, whatever the chunk size (%i bytes)',
    (chunk) => {
      const a = pattern(70_000, 1);
      const b = pattern(512, 2);
      const c = pattern(16_384, 3);
      const { parser, outcome, violations, targets } = harness([a.length, b.length, c.length]);
      // replies out of order, split wherever the chunks end
      feed(parser, Buffer.concat([reply(3n, 0, c), reply(1n, 0, a), reply(2n, 0, b)]), chunk);
      expect(violations).toEqual([]);
      expect([...outcome.values()]).toEqual(['ok', 'ok', 'ok']);
      expect(Buffer.compare(targets.get(1n)!, a)).toBe(0);
      expect(Buffer.compare(targets.get(2n)!, b)).toBe(0);
      expect(Buffer.compare(targets.get(3n)!, c)).toBe(0);
    },
  );

  it('fails a refused read with its errno and reads the next reply after it (no payload follows an error)', () => {
    const b = pattern(1024, 9);
    const { parser, outcome, violations, targets } = harness([4096, b.length]);
    feed(parser, Buffer.concat([reply(1n, 22), reply(2n, 0, b)]), 7);
    expect(violations).toEqual([]);
    expect(outcome.get(1n)).toBe('errno 22');
    expect(outcome.get(2n)).toBe('ok');
    expect(Buffer.compare(targets.get(2n)!, b)).toBe(0);
  });

  it('reports a bad magic, a handle never sent and a second reply to one request, and parses nothing after', () => {
    const bad = reply(1n, 0, pattern(512, 1));
    bad.writeUInt32BE(0xdeadbeef, 0);
    for (const [stream, message] of [
      [bad, 'bad reply magic'],
      [reply(99n, 0, pattern(512, 1)), 'never sent'],
      [Buffer.concat([reply(1n, 0, pattern(512, 1)), reply(1n, 0, pattern(512, 1))]), 'never sent'],
    ] as const) {
      const { parser, violations, pending } = harness([512, 512]);
      feed(parser, Buffer.concat([stream, reply(2n, 0, pattern(512, 2))]), 3);
      expect(violations).toHaveLength(1);
      expect(violations[0]).toContain(message);
      expect(pending.has(2n)).toBe(true); // the read after the violation is left to the connection to fail
    }
  });
});

describe('a server that breaks the NBD protocol mid-export', () => {
  const size = 64 * 1024;
  const data = (offset: number, length: number) => Buffer.from(pattern(size, 7).subarray(offset, offset + length));
  let pool: TestPool;
  beforeAll(async () => {
    pool = await startPool();
  });
  afterAll(async () => {
    await pool.close();
  });

  it.each([
    [
      'a bad reply magic',
      'bad reply magic',
      (handle: Buffer, o: number, n: number) => {
        const r = Buffer.concat([Buffer.alloc(16), data(o, n)]);
        r.writeUInt32BE(0x12345678, 0);
        handle.copy(r, 8);
        return r;
      },
    ],
    [
      'an answer to a request never sent',
      'never sent',
      (_handle: Buffer, o: number, n: number) => {
        const r = Buffer.concat([Buffer.alloc(16), data(o, n)]);
        r.writeUInt32BE(NBD.SIMPLE_REPLY_MAGIC, 0);
        r.writeBigUInt64BE(0xffffn, 8);
        return r;
      },
    ],
  ] as const)(
    'drops the connection on %s, and the export reads the right bytes on a fresh one',
    async (_what, message, broken) => {
      const tls = pool.sim.tls!;
      const server = await startHostileNbdServer(tls, size, (connection, handle, offset, length) => {
        if (connection < 2) return broken(handle, offset, length); // the lone connection, the export's first
        const r = Buffer.concat([Buffer.alloc(16), data(offset, length)]);
        r.writeUInt32BE(NBD.SIMPLE_REPLY_MAGIC, 0);
        handle.copy(r, 8);
        return r;
      });
      try {
        const endpoint = { host: '127.0.0.1', port: server.port, exportName: '/x', cert: tls.cert };
        const one = await NbdConnection.open(endpoint);
        await expect(one.read(0, new Uint8Array(4096))).rejects.toThrow(message);
        expect(one.isBroken).toBe(true);
        const nbd = await NbdExport.open(endpoint, { connections: 1, retry: { baseDelayMs: 1 } });
        try {
          const got = new Uint8Array(size);
          await nbd.readInto(0, got);
          expect(Buffer.compare(got, data(0, size))).toBe(0);
          expect(nbd.reconnects).toBe(1);
          expect(server.connections()).toBe(3);
        } finally {
          nbd.close();
        }
      } finally {
        await server.close();
      }
    },
  );
});

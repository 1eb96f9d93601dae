import { randomBytes } from 'node:crypto';
import { ERROR_CODES } from '@replikit/core';
import { describe, expect, it } from 'vitest';
import { availableCodecs, codecByName, maybeCompress } from '../src/codecs.js';
import {
  FRAME_MAGIC,
  FrameType,
  HEADER_BYTES,
  MAX_CONTROL_PAYLOAD,
  MAX_RESPONSE_PAYLOAD,
} from '../src/protocol/constants.js';
import { crc32 } from '../src/protocol/crc32.js';
import { coveredLength } from '../src/protocol/frame-check.js';
import { FrameDecoder, payloadBound } from '../src/protocol/frame-decoder.js';
import { encodeMessage, type Message, parseFrame } from '../src/protocol/messages.js';
import { isProtocolError } from '../src/protocol/protocol-error.js';

const spec = {
  runId: 'r1',
  blockSize: 65536,
  digest: 'sha256',
  replica: { id: 'rep', name: 'rep', disks: [{ id: 'd0', vmId: 'rep', size: 1 << 20 }], created: false },
};

const samples: Message[] = [
  { type: 'hello', protocol: 'replikit-blocks', versions: [1, 1], role: 'source', nonce: 'ab', codecs: ['none'] },
  {
    type: 'hello',
    protocol: 'replikit-blocks',
    versions: [1, 1],
    role: 'target',
    nonce: 'ef',
    codecs: ['none'],
    features: ['delta'],
  },
  { type: 'auth', proof: 'cd' },
  { type: 'session', sessionId: 's', spec: spec as never, resume: false, codec: 'none' },
  { type: 'session-ok', sessionId: 's' },
  { type: 'open-disk', stream: 1, disk: { id: 'd0', vmId: 'rep', size: 1 << 20 } },
  { type: 'disk-opened', stream: 1, blockCount: 16 },
  {
    type: 'block',
    stream: 1,
    index: 2 ** 40 + 3,
    codec: 0,
    compressed: false,
    delta: false,
    rawLength: 5,
    digest: new Uint8Array(32).fill(9),
    payload: new Uint8Array([1, 2, 3, 4, 5]),
  },
  {
    type: 'block',
    stream: 1,
    index: 4,
    codec: 0,
    compressed: false,
    delta: true,
    rawLength: 65536,
    digest: new Uint8Array(16).fill(7),
    payload: new Uint8Array([1, 0, 3, 9, 9, 9]),
  },
  { type: 'zero', stream: 1, index: 7, count: 2 ** 33 },
  { type: 'flush', stream: 3 },
  { type: 'ack', stream: 3, end: 99 },
  { type: 'digests-request', stream: 1, from: 5, count: 100 },
  { type: 'digests', stream: 1, from: 5, digests: [new Uint8Array(32).fill(1), null], last: true },
  { type: 'close-disk', stream: 1 },
  { type: 'disk-closed', stream: 1, bytesWritten: 123 },
  { type: 'commit' },
  { type: 'committed' },
  { type: 'error', code: 'E_AUTH', message: 'no', retry: false },
  { type: 'request', id: 7, op: 'listRestorePoints', args: { replica: { id: 'r' } } },
  { type: 'response', id: 7, result: [] },
  { type: 'response', id: 8, error: { code: 'E_NOT_FOUND', message: 'no such point' } },
];

function concat(chunks: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(chunks));
}

function decodeAll(bytes: Uint8Array, decoder = new FrameDecoder(1 << 20)): Message[] {
  return decoder.push(bytes).map(parseFrame);
}

/** Recomputes a frame's header check after a test changed its header. */
function reseal(bytes: Uint8Array): void {
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(12, crc32(bytes.subarray(0, 12)));
}

function normalize(message: Message): unknown {
  // Buffers turn into { type: 'Buffer', data } before a replacer sees them: compare bytes only.
  return JSON.parse(
    JSON.stringify(message, (_k, v) => {
      if (v instanceof Uint8Array) return [...v];
      if (v && typeof v === 'object' && v.type === 'Buffer' && Array.isArray(v.data)) return v.data;
      return v;
    }),
  );
}

describe('frames', () => {
  it('round-trips every message type, whole and split at every byte', () => {
    const wire = concat(samples.flatMap(encodeMessage));
    expect(decodeAll(wire).map(normalize)).toEqual(samples.map(normalize));
    for (let cut = 1; cut < wire.length; cut += 7) {
      const decoder = new FrameDecoder(1 << 20);
      const out = [...decoder.push(wire.subarray(0, cut)), ...decoder.push(wire.subarray(cut))].map(parseFrame);
      expect(out.map(normalize)).toEqual(samples.map(normalize));
    }
  });

  it("carries every one of core's error codes across, and turns an unknown one into E_TRANSPORT", () => {
    const carried = (code: string) => {
      const frames = [
        { type: 'error', code, message: 'm', retry: false },
        { type: 'response', id: 1, error: { code, message: 'm' } },
      ] as Message[];
      return decodeAll(concat(frames.flatMap(encodeMessage))).map((m) =>
        m.type === 'error' ? m.code : m.type === 'response' ? m.error?.code : undefined,
      );
    };
    for (const code of ERROR_CODES) expect(carried(code)).toEqual([code, code]);
    expect(carried('E_FROM_THE_FUTURE')).toEqual(['E_TRANSPORT', 'E_TRANSPORT']);
  });

  it('refuses a bad magic, a future version, an unknown type and an oversized length before buffering', () => {
    const good = concat(encodeMessage({ type: 'flush', stream: 1 }));
    const cases: Array<[string, (b: Uint8Array) => void, RegExp]> = [
      ['magic', (b) => (b[0] = 0x16), /TLS records/],
      ['version', (b) => (b[2] = 2), /version 2/],
      ['type', (b) => (b[3] = 200), /unknown frame type 200/],
      ['fixed length', (b) => new DataView(b.buffer).setUint32(4, 5), /bound is 4/],
      ['damaged header', (b) => (b[5]! ^= 1), /header arrived damaged/],
      ['damaged body', (b) => (b[HEADER_BYTES + 1]! ^= 1), /arrived damaged/],
    ];
    for (const [name, mutate, message] of cases) {
      const bytes = good.slice();
      mutate(bytes);
      if (!name.startsWith('damaged')) reseal(bytes);
      const decoder = new FrameDecoder();
      let error: unknown;
      try {
        decoder.push(bytes);
      } catch (e) {
        error = e;
      }
      expect(isProtocolError(error)).toBe(true);
      expect((error as Error).message).toMatch(message);
      expect(decoder.buffered).toBe(0);
    }
    // A block frame claiming 4 GiB is refused from its header alone.
    const header = new Uint8Array(HEADER_BYTES);
    const view = new DataView(header.buffer);
    view.setUint16(0, FRAME_MAGIC);
    view.setUint8(2, 1);
    view.setUint8(3, FrameType.block);
    view.setUint32(4, 0xffffffff);
    reseal(header);
    expect(() => new FrameDecoder(1 << 20).push(header)).toThrow(/bound is 1048576/);
  });

  it('bounds a response frame like any control frame until its reader raises the bound', () => {
    const big: Message = { type: 'response', id: 1, result: { labels: 'x'.repeat(200_000) } };
    const bytes = concat(encodeMessage(big));
    expect(() => new FrameDecoder().push(bytes)).toThrow(new RegExp(`bound is ${MAX_CONTROL_PAYLOAD}`));
    const decoder = new FrameDecoder();
    decoder.setMaxResponsePayload(MAX_RESPONSE_PAYLOAD);
    const frames = decoder.push(bytes);
    expect(frames.map((frame) => parseFrame(frame))).toEqual([big]);
    const tooBig: Message = { type: 'response', id: 2, result: 'y'.repeat(MAX_RESPONSE_PAYLOAD) };
    expect(() => encodeMessage(tooBig)).toThrow(/too large/);
    expect(() => encodeMessage({ type: 'request', id: 3, op: 'x', args: { a: 'z'.repeat(70_000) } })).toThrow(
      /too large/,
    );
  });

  it('refuses a block frame that is both compressed and a delta, or a delta not shorter than its block', () => {
    const block = (flags: number, payload: number) => {
      const bytes = concat(
        encodeMessage({
          type: 'block',
          stream: 1,
          index: 0,
          codec: 1,
          compressed: false,
          rawLength: 16,
          digest: new Uint8Array(16),
          payload: new Uint8Array(payload).fill(1),
        }),
      );
      bytes[HEADER_BYTES + 12] = flags;
      // the flags lie in the covered part: recompute the body check, then the header check
      const view = new DataView(bytes.buffer, bytes.byteOffset);
      view.setUint32(8, crc32(bytes.subarray(HEADER_BYTES, HEADER_BYTES + 20 + 16)));
      reseal(bytes);
      return bytes;
    };
    expect(() => decodeAll(block(3, 8))).toThrow(/both compressed and a delta/);
    expect(() => decodeAll(block(2, 16))).toThrow(/delta of block 0 holds 16 bytes/);
    expect(() => decodeAll(block(4, 16))).toThrow(/unknown flags/);
    expect(decodeAll(block(2, 8))[0]).toMatchObject({ type: 'block', delta: true, compressed: false, rawLength: 16 });
  });

  it('fuzz: random and mutated frames never crash the decoder nor buffer beyond the bound', () => {
    const wire = concat(samples.flatMap(encodeMessage));
    const bound = 1 << 16;
    for (let round = 0; round < 3000; round++) {
      const decoder = new FrameDecoder(bound);
      let input: Uint8Array;
      if (round % 3 === 0) {
        input = randomBytes(HEADER_BYTES + (round % 300));
        if (round % 2 === 0) {
          // A valid header in front of random bytes, so the parsers see hostile payloads too.
          input.set([0x52, 0x4b, 1, 1 + (round % 17)]);
          const view = new DataView(input.buffer, input.byteOffset);
          view.setUint32(4, input.length - HEADER_BYTES);
          const payload = input.subarray(HEADER_BYTES);
          view.setUint32(8, crc32(payload.subarray(0, coveredLength(input[3]!, payload))));
          reseal(input);
        }
      } else {
        input = wire.slice();
        for (let flips = 1 + (round % 4); flips > 0; flips--) {
          input[Math.floor(Math.random() * input.length)] = Math.floor(Math.random() * 256);
        }
      }
      let at = 0;
      try {
        while (at < input.length) {
          const step = 1 + Math.floor(Math.random() * 64);
          for (const frame of decoder.push(input.subarray(at, at + step))) {
            expect(frame.payload.length).toBeLessThanOrEqual(Math.max(bound, MAX_CONTROL_PAYLOAD * 5));
            expect(frame.payload.length).toBeLessThanOrEqual(payloadBound(frame.type, bound));
            parseFrame(frame);
          }
          expect(decoder.buffered).toBeLessThanOrEqual(HEADER_BYTES + MAX_CONTROL_PAYLOAD * 5);
          at += step;
        }
      } catch (error) {
        // Anything wrong is a protocol error, never a crash of another kind.
        expect(isProtocolError(error), String(error)).toBe(true);
      }
    }
  });
});

describe('codecs', () => {
  it('round-trip, send incompressible blocks raw, and refuse a payload that decodes too long', () => {
    const text = Buffer.from('2026-11-25 host=demo status=200 bytes=1234\n'.repeat(2000)).subarray(0, 65536);
    const noise = randomBytes(65536);
    for (const name of availableCodecs().filter((n) => n !== 'none')) {
      const codec = codecByName(name)!;
      const packed = maybeCompress(codec, text)!;
      expect(packed.length).toBeLessThan(text.length / 2);
      expect(Buffer.from(codec.decode(packed, text.length)).equals(text)).toBe(true);
      expect(maybeCompress(codec, noise)).toBeUndefined();
      let error: unknown;
      try {
        codec.decode(packed, text.length - 1);
      } catch (e) {
        error = e;
      }
      expect(isProtocolError(error)).toBe(true);
      expect(() => codec.decode(randomBytes(100), 65536)).toThrow();
    }
  });

  it("decode a disk's short last block, down to one byte (zlib's output chunk has a 64-byte floor)", () => {
    for (const name of availableCodecs().filter((n) => n !== 'none')) {
      const codec = codecByName(name)!;
      for (const length of [1, 11, 63, 64, 65]) {
        const block = Buffer.alloc(length, 0x61);
        const packed = codec.encode(block);
        expect(Buffer.from(codec.decode(packed, length)).equals(block), `${name}, ${length} bytes`).toBe(true);
        expect(() => codec.decode(packed, length - 1), `${name}, ${length} bytes, one too many`).toThrow();
      }
    }
  });
});

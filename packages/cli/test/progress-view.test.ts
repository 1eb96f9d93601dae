import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import type { ReplicationEngine } from '@replikit/core';
import { describe, expect, it } from 'vitest';
import { attachProgressView } from '../src/output/progress-view.js';

/** A stream that passes for a terminal (what the bar library asks of one), recording what is written. */
function capture() {
  const pass = Object.assign(new PassThrough(), {
    isTTY: true,
    columns: 200,
    cursorTo: (_x: number, _y?: number) => true,
    moveCursor: (_dx: number, _dy: number) => true,
    clearLine: (_dir: number) => true,
    clearScreenDown: () => true,
  });
  const stream = pass as unknown as NodeJS.WriteStream;
  let text = '';
  (stream as unknown as PassThrough).on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
  return { stream, text: () => text };
}

const stats = { bytesScanned: 64 * 1024, bytesTotal: 128 * 1024, bytesSent: 4096 };

describe('the progress view', () => {
  it('draws a bar on a terminal (its library loaded on the first bar)', () => {
    const engine = new EventEmitter();
    const out = capture();
    const detach = attachProgressView(engine as unknown as ReplicationEngine, { stream: out.stream, tty: true });
    engine.emit('state', { runId: 'r1', from: 'plan', to: 'transfer' });
    engine.emit('progress', { runId: 'r1', stats, scanRate: 1024 });
    engine.emit('state', { runId: 'r1', from: 'transfer', to: 'commit' });
    detach();
    expect(out.text()).toContain('transfer [');
    expect(out.text()).toContain('[r1] commit');
  });

  it('prints plain lines to a pipe', () => {
    const engine = new EventEmitter();
    const out = capture();
    const detach = attachProgressView(engine as unknown as ReplicationEngine, { stream: out.stream, tty: false });
    engine.emit('state', { runId: 'r1', from: 'plan', to: 'transfer' });
    engine.emit('progress', { runId: 'r1', stats: { ...stats, bytesScanned: stats.bytesTotal }, scanRate: 1024 });
    detach();
    expect(out.text()).toContain('[r1] transfer 100%');
    expect(out.text()).not.toContain('transfer [');
  });
});

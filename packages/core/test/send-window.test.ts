import { describe, expect, it } from 'vitest';
import { SendWindow } from '../src/engine/send-window.js';

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('send window', () => {
  it('keeps at most `limit` sends pending and drains them all', async () => {
    const window = new SendWindow(3);
    let pending = 0;
    let most = 0;
    let done = 0;
    for (let i = 0; i < 20; i++) {
      await window.start(async () => {
        pending++;
        most = Math.max(most, pending);
        await tick();
        pending--;
        done++;
      });
    }
    await window.drain();
    expect(most).toBe(3);
    expect(done).toBe(20);
  });

  it('throws a failed send at the next start or drain, and starts nothing after it', async () => {
    const window = new SendWindow(4);
    await window.start(async () => {
      await tick();
      throw new Error('disk full');
    });
    await tick();
    await tick();
    let started = false;
    await expect(
      window.start(async () => {
        started = true;
      }),
    ).rejects.toThrow('disk full');
    expect(started).toBe(false);
    await expect(window.drain()).rejects.toThrow('disk full');
  });

  it('with limit 1 runs each send to completion', async () => {
    const window = new SendWindow(1);
    let finished = false;
    await window.start(async () => {
      await tick();
      finished = true;
    });
    expect(finished).toBe(true);
  });
});

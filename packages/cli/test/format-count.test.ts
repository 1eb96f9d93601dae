import { describe, expect, it } from 'vitest';
import { formatCount } from '../src/output/format.js';

describe('formatCount', () => {
  it('groups the digits of whole numbers by thousands with commas, as en-US does', () => {
    const values = [0, 7, 999, 1000, 19712, 123456, 1000000, 2 ** 31, Number.MAX_SAFE_INTEGER, -1, -1234, -1000000];
    for (let n = 1; n < 1e15; n = n * 7 + 3) values.push(n, -n);
    for (const value of values) expect(formatCount(value), String(value)).toBe(value.toLocaleString('en-US'));
  });

  it('writes other numbers as en-US does', () => {
    for (const value of [-0, 1.5, 1234.5678, -0.25, Number.NaN, Number.POSITIVE_INFINITY, 1e21]) {
      expect(formatCount(value), String(value)).toBe(value.toLocaleString('en-US'));
    }
  });
});

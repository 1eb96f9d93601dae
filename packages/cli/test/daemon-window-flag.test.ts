import { describe, expect, it } from 'vitest';
import { windowOf } from '../src/commands/daemon.js';

describe('replikit daemon --window', () => {
  it("reads 'CRON for DURATION [in TIME-ZONE]'", () => {
    expect(windowOf('0 22 * * 1-5 for 8h in Europe/Paris')).toEqual({
      cron: '0 22 * * 1-5',
      duration: '8h',
      timezone: 'Europe/Paris',
    });
    expect(windowOf('*/30 0 2 * * * for 90m')).toEqual({ cron: '*/30 0 2 * * *', duration: '90m' });
  });

  it('refuses a flag of another shape (usage, exit 2) and a bad window (E_JOB)', () => {
    expect(() => windowOf('0 22 * * *')).toThrow(/--window takes 'CRON for DURATION \[in TIME-ZONE\]'/);
    expect(() => windowOf('0 25 * * * for 1h')).toThrow(expect.objectContaining({ code: 'E_JOB' }));
    expect(() => windowOf('0 1 * * * for 1h in Mars/Olympus')).toThrow(expect.objectContaining({ code: 'E_JOB' }));
    expect(() => windowOf('0 1 * * * for 0s')).toThrow(/at least 1s/);
  });
});

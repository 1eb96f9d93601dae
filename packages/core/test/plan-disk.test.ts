import { describe, expect, it } from 'vitest';
import { type DiskFacts, PLAN_REASON_CODES, type PlanReasonCode, planDisk } from '../src/index.js';

/** A disk of a normal incremental push run with a tracker and a trusted cache: planned `tracked`. */
const normal: DiskFacts = {
  forced: false,
  methodAlwaysFull: false,
  method: 'qhybrid',
  firstSeed: false,
  baseSnapshotMissing: false,
  size: 1024,
  baseSize: 1024,
  backupBaseMissing: false,
  replicaModified: undefined,
  direction: 'push',
  cache: { status: 'ok' },
  cacheRequested: true,
  tracker: 'ok',
};

type Row = [name: string, facts: Partial<DiskFacts>, code: PlanReasonCode, mode: string, digests: string | undefined];

// Each row changes the normal facts and says the plan; later rows show the order of the checks.
const table: Row[] = [
  ['normal tracked run with a cache', {}, 'TRACKED', 'tracked', 'cache'],
  ['tracked run without a cache', { cache: { status: 'off' }, cacheRequested: false }, 'TRACKED', 'tracked', undefined],
  [
    'pull run with a tracker (cache asked for, unused): every block compared',
    { direction: 'pull', cache: { status: 'off' } },
    'PULL_IGNORES_CACHE',
    'hash-diff',
    'replica',
  ],
  [
    'pull run without a cache',
    { direction: 'pull', cache: { status: 'off' }, cacheRequested: false },
    'PULL_HASH_DIFF',
    'hash-diff',
    'replica',
  ],
  ['forced', { forced: true }, 'FORCED', 'full', undefined],
  ['forced wins over a first seed', { forced: true, firstSeed: true }, 'FORCED', 'full', undefined],
  ['xva', { methodAlwaysFull: true, method: 'xva' }, 'METHOD_ALWAYS_FULL', 'full', undefined],
  ['first seed', { firstSeed: true, tracker: 'not-asked' }, 'FIRST_SEED', 'full', undefined],
  [
    'first seed wins over a missing cache',
    { firstSeed: true, cache: { status: 'missing' } },
    'FIRST_SEED',
    'full',
    undefined,
  ],
  [
    'base snapshot missing',
    { baseSnapshotMissing: true, tracker: 'not-asked' },
    'BASE_SNAPSHOT_MISSING',
    'full',
    undefined,
  ],
  ['disk added', { baseSize: undefined }, 'DISK_SET_CHANGED', 'hash-diff', 'cache'],
  [
    'disk resized',
    { size: 2048, cache: { status: 'invalid', reason: 'block count' } },
    'DISK_RESIZED',
    'hash-diff',
    'replica',
  ],
  ['single pass without a base version', { backupBaseMissing: true }, 'BACKUP_BASE_MISSING', 'hash-diff', 'cache'],
  [
    'replica booted',
    { replicaModified: 'booted', cache: { status: 'invalid', reason: 'fingerprint' } },
    'REPLICA_MODIFIED',
    'hash-diff',
    'replica',
  ],
  [
    'replica written outside',
    { replicaModified: 'written', cache: { status: 'off' } },
    'REPLICA_MODIFIED',
    'hash-diff',
    'replica',
  ],
  ['cache missing (tracker ok)', { cache: { status: 'missing' } }, 'CACHE_MISSING', 'hash-diff', 'replica'],
  [
    'cache invalid (tracker ok)',
    { cache: { status: 'invalid', reason: 'corrupt' } },
    'CACHE_INVALID',
    'hash-diff',
    'replica',
  ],
  [
    'pull without a tracker answer',
    { direction: 'pull', cache: { status: 'off' }, tracker: 'reset' },
    'PULL_IGNORES_CACHE',
    'hash-diff',
    'replica',
  ],
  ['tracking reset, cache trusted', { tracker: 'reset' }, 'TRACKING_RESET', 'hash-diff', 'cache'],
  [
    'tracking reset, no cache',
    { tracker: 'reset', cache: { status: 'off' }, cacheRequested: false },
    'TRACKING_RESET',
    'hash-diff',
    'replica',
  ],
  [
    'no tracker, no cache',
    { tracker: 'unavailable', cache: { status: 'off' }, cacheRequested: false },
    'TRACKING_UNAVAILABLE',
    'hash-diff',
    'replica',
  ],
  ['no tracker, trusted cache', { tracker: 'unavailable' }, 'INCREMENTAL', 'hash-diff', 'cache'],
];

describe('planDisk: the decision table', () => {
  it.each(table)('%s → %s', (_name, change, code, mode, digests) => {
    const plan = planDisk({ ...normal, ...change });
    expect(plan.reason.code).toBe(code);
    expect(plan.mode).toBe(mode);
    expect(plan.digestSource).toBe(digests);
    expect(plan.writesCache).toBe((change.cache ?? normal.cache).status !== 'off');
    expect(plan.reason.message).toMatch(/\S/);
  });

  it('covers every reason code', () => {
    expect(new Set(table.map((row) => row[2]))).toEqual(new Set(PLAN_REASON_CODES));
  });

  it('gives evidence: how the replica changed, the sizes of a resized disk, why the cache was refused', () => {
    expect(planDisk({ ...normal, replicaModified: 'booted' }).reason.evidence).toEqual({ change: 'booted' });
    expect(planDisk({ ...normal, size: 4096 }).reason.evidence).toEqual({ baseSize: 1024, size: 4096 });
    expect(planDisk({ ...normal, cache: { status: 'invalid', reason: 'bad magic' } }).reason.evidence).toEqual({
      cache: 'bad magic',
    });
  });
});

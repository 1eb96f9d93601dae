import { localTransport } from '@replikit/transport';
import { describe, expect, it } from 'vitest';
import {
  type ConformanceCheckContext,
  ConformanceCheckError,
  checkAbortHonoured,
  checkChangeTrackerModel,
  checkCloseReleases,
  checkEngineEndToEnd,
  createMemoryDriver,
  type MemoryDriverFaults,
  memoryFixtures,
  runDriverConformance,
} from '../src/testing/index.js';

const MiB = 1024 * 1024;

// The reference driver runs the whole suite.
runDriverConformance({
  name: 'memory (reference)',
  create: async () => createMemoryDriver(),
  fixtures: memoryFixtures,
  trackedVMs: true,
  transport: localTransport(),
});

const transport = localTransport();
let n = 0;
const context = (faults: MemoryDriverFaults = {}): ConformanceCheckContext => ({
  hv: createMemoryDriver({ faults }),
  fixtures: memoryFixtures,
  name: `mutant-${n++}`,
  size: 4 * MiB,
});

// Mutation checks: each fault injected into the reference driver must make its check fail.
describe('conformance checks catch a faulty driver', () => {
  it('a tracker that drops one extent', async () => {
    expect(await checkChangeTrackerModel(context())).toEqual({ answered: 9 }); // all 10 pairs but (0 → 1), whose data is gone
    await expect(checkChangeTrackerModel(context({ dropExtent: true }))).rejects.toThrow(
      /changed but no tracked extent covers it/,
    );
  });

  it('a tracker that drops the last partial block', async () => {
    await expect(checkChangeTrackerModel(context({ dropTailBlock: true }))).rejects.toThrow(
      /byte 4199\d\d\d changed but no tracked extent covers it/,
    );
  });

  it('a long method that ignores its signal', async () => {
    await checkAbortHonoured(context());
    await expect(checkAbortHonoured(context({ ignoreSignal: true }))).rejects.toThrow(
      /snapshot ignored its aborted signal/,
    );
  });

  it('a close() that leaves a writer open', async () => {
    await checkCloseReleases(context());
    await expect(checkCloseReleases(context({ leaveWriterOpen: true }))).rejects.toThrow(ConformanceCheckError);
    await expect(checkCloseReleases(context({ leaveWriterOpen: true }))).rejects.toThrow(/writer.write still works/);
  });

  it('a tracker that drops one extent corrupts the replica of a tracked engine run (and not of a hash-diff one)', async () => {
    expect(await checkEngineEndToEnd(context(), { tracked: true, requireTracked: true, transport })).toEqual([
      'full',
      'tracked',
    ]);
    expect(await checkEngineEndToEnd(context({ dropExtent: true }), { tracked: false, transport })).toEqual([
      'full',
      'hash-diff',
    ]);
    await expect(
      checkEngineEndToEnd(context({ dropExtent: true }), { tracked: true, requireTracked: true, transport }),
    ).rejects.toThrow(/after the tracked run, the replica differs from the source snapshot/);
  });
});

import { join } from 'node:path';
import { context, trace } from '@opentelemetry/api';
import {
  Daemon,
  type DiskReader,
  DriverRegistry,
  defineDriver,
  FakeClock,
  FileStateStore,
  type Hypervisor,
  IoError,
  parseJob,
  ReplicationEngine,
} from '@replikit/core';
import { testPattern } from '@replikit/core/testing';
import { localTransport } from '@replikit/transport';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createFileVM, fileDriver, openGuestDisk } from '../src/index.js';
import { RecordingTracerProvider } from './helpers/recording-tracer.js';
import { makeTempRoot, removeTempRoots } from './helpers/temp-root.js';

const MiB = 1024 * 1024;

/** The file driver, whose source reads of disk `d1` fail with `E_IO` when `failD1` is set. */
function registry(failD1: boolean): DriverRegistry {
  const failing = (reader: DiskReader): DiskReader =>
    new Proxy(reader, {
      get(target, prop, receiver) {
        if (prop === 'fileSpans') return undefined; // read through read(), which fails
        if (prop === 'read' || prop === 'readInto')
          return async () => {
            throw new IoError('disk d1 cannot be read (a test fault)');
          };
        return Reflect.get(target, prop, receiver);
      },
    });
  return new DriverRegistry().register(
    defineDriver({
      ...fileDriver,
      async create(options, context) {
        const hv = await fileDriver.create(options, context);
        if (!failD1 || context.side !== 'source') return hv;
        return new Proxy(hv, {
          get(target, prop, receiver) {
            if (prop !== 'openReader') return Reflect.get(target, prop, receiver);
            const open: Hypervisor['openReader'] = async (disk, opts) => {
              const reader = await target.openReader(disk, opts);
              return disk.id.endsWith('d1') ? failing(reader) : reader;
            };
            return open;
          },
        });
      },
    }),
  );
}

describe('OpenTelemetry: a replikit.disk span per disk transfer, under the run span', () => {
  let provider: RecordingTracerProvider | undefined;
  afterEach(() => provider?.unregister());
  afterAll(removeTempRoots);

  async function world(failD1: boolean) {
    const dir = await makeTempRoot('rk-spans-');
    const vms = join(dir, 'vms');
    await createFileVM(vms, {
      name: 'web',
      disks: [
        { id: 'd0', size: 4 * MiB },
        { id: 'd1', size: 2 * MiB },
      ],
    });
    const guest = await openGuestDisk(vms, 'web', 'd0');
    await guest.write(MiB, testPattern(1, 300_000));
    await guest.close();
    const other = await openGuestDisk(vms, 'web', 'd1');
    await other.write(0, testPattern(2, 70_000));
    await other.close();
    const engine = new ReplicationEngine({
      transport: localTransport(),
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers: registry(failD1),
    });
    const job = {
      name: 'web-dr',
      source: { driver: 'file', root: vms, vm: 'web', reflink: false },
      target: { driver: 'file', root: join(dir, 'replicas'), reflink: false },
      method: 'qhybrid',
      options: { parallelDisks: 1, schedule: { every: '10s' } },
    };
    return { engine, job };
  }

  it('a run of 2 disks: two completed disk spans, children of the run span, with bytes, blocks and mode', async () => {
    provider = new RecordingTracerProvider().register();
    const { engine, job } = await world(false);
    const runSpan = trace.getTracer('test').startSpan('replikit.run');
    const run = await engine.run(job, { traceContext: trace.setSpan(context.active(), runSpan) });
    runSpan.end();
    await engine.close();
    expect(run.state).toBe('completed');
    const parent = provider.spans.find((s) => s.name === 'replikit.run')!;
    const disks = provider.spans.filter((s) => s.name === 'replikit.disk');
    expect(disks.map((s) => s.attributes['replikit.disk.id'])).toEqual(['d0', 'd1']);
    for (const [i, span] of disks.entries()) {
      const record = run.disks[i]!;
      expect(span).toMatchObject({ scope: '@replikit/core', parentSpanId: parent.spanId, traceId: parent.traceId });
      expect(span).toMatchObject({ ended: true, status: { code: 0 }, exceptions: [] });
      expect(span.attributes).toEqual({
        'replikit.run_id': run.runId,
        'replikit.job': 'web-dr',
        'replikit.disk.position': i,
        'replikit.disk.id': record.sourceDiskId,
        'replikit.disk.replica_id': record.replicaDiskId,
        'replikit.disk.mode': 'full',
        'replikit.disk.size_bytes': i === 0 ? 4 * MiB : 2 * MiB,
        'replikit.disk.read_bytes': record.stats.bytesRead,
        'replikit.disk.sent_bytes': record.stats.bytesSent,
        'replikit.disk.written_bytes': record.stats.bytesWritten,
        'replikit.disk.blocks_changed': record.stats.blocksChanged,
        'replikit.disk.blocks_zero': record.stats.blocksZero,
        'replikit.disk.blocks_scanned': record.stats.blocksScanned,
        'replikit.disk.outcome': 'completed',
      });
      // Bytes, not blocks or KiB: the data the guest wrote was sent.
      expect(span.attributes['replikit.disk.sent_bytes']).toBeGreaterThanOrEqual(i === 0 ? 300_000 : 70_000);
      expect(span.attributes['replikit.disk.blocks_changed']).toBeGreaterThan(0);
    }
  });

  it('a disk whose reads fail: its span ends failed with E_IO and the exception; the disk before it completed', async () => {
    provider = new RecordingTracerProvider().register();
    const { engine, job } = await world(true);
    const runSpan = trace.getTracer('test').startSpan('replikit.run');
    const run = await engine
      .run(job, { traceContext: trace.setSpan(context.active(), runSpan) })
      .catch((error: unknown) => error);
    runSpan.end();
    await engine.close();
    expect(run).toMatchObject({ code: 'E_IO' });
    const parent = provider.spans.find((s) => s.name === 'replikit.run')!;
    const disks = provider.spans.filter((s) => s.name === 'replikit.disk');
    expect(disks.map((s) => [s.attributes['replikit.disk.id'], s.attributes['replikit.disk.outcome']])).toEqual([
      ['d0', 'completed'],
      ['d1', 'failed'],
    ]);
    expect(disks.every((s) => s.ended && s.parentSpanId === parent.spanId)).toBe(true);
    const failed = disks[1]!;
    expect(failed.status).toEqual({ code: 2, message: 'E_IO: disk d1 cannot be read (a test fault)' });
    expect(failed.exceptions).toEqual([expect.objectContaining({ code: 'E_IO' })]);
    expect(failed.attributes['replikit.disk.sent_bytes']).toBe(0);
  });

  it("a daemon run: the daemon's replikit.run span (job, reason, run id, outcome) is the parent of both disk spans", async () => {
    provider = new RecordingTracerProvider().register();
    const { engine, job } = await world(false);
    const clock = new FakeClock(1_800_000_000_000);
    const daemon = new Daemon({ engine, jobs: [parseJob(job)], clock });
    const ended = new Promise((done) => daemon.once('run-end', done));
    await daemon.start();
    await clock.whenSleeping(1);
    clock.advanceToNext();
    expect(await ended).toMatchObject({ outcome: 'completed' });
    await daemon.stop();
    await engine.close();
    const runs = provider.spans.filter((s) => s.name === 'replikit.run');
    expect(runs).toHaveLength(1);
    const run = runs[0]!;
    expect(run).toMatchObject({ scope: '@replikit/core', ended: true, status: { code: 0 } });
    expect(run.attributes).toMatchObject({
      'replikit.job': 'web-dr',
      'replikit.reason': 'slot',
      'replikit.outcome': 'completed',
    });
    const disks = provider.spans.filter((s) => s.name === 'replikit.disk');
    expect(disks.map((s) => [s.attributes['replikit.disk.id'], s.parentSpanId, s.traceId])).toEqual([
      ['d0', run.spanId, run.traceId],
      ['d1', run.spanId, run.traceId],
    ]);
    expect(disks.map((s) => s.attributes['replikit.run_id'])).toEqual([
      run.attributes['replikit.run_id'],
      run.attributes['replikit.run_id'],
    ]);
  });
});

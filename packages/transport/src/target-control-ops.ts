import type { Hypervisor, OperationOptions } from '@replikit/core';
import { ProtocolError } from './protocol/protocol-error.js';
import {
  fingerprintOf,
  integerOf,
  markOf,
  ownerOf,
  replicaOf,
  replicaSpecOf,
  restorePointOf,
  restorePointsOf,
  stringOf,
  vmInfoOf,
} from './target-control-shapes.js';

/** One operation of the target-control protocol: how the agent runs it, how the source checks its result. */
interface TargetOp {
  /** Runs the operation on the agent's driver with checked arguments; resolves with its JSON result. */
  run(target: Hypervisor, args: Record<string, unknown>, options: OperationOptions): Promise<unknown>;
  /** Checks the result a source side receives (a protocol error when malformed). */
  result(value: unknown): unknown;
}

const none = (value: unknown): null => {
  if (value !== null) throw new ProtocolError('the response of an operation without a result must be null');
  return null;
};

const done = async (work: Promise<void>): Promise<null> => {
  await work;
  return null;
};

/**
 * The operations an agent that lists the `target` feature answers, by name (docs/protocol.md,
 * section 12). Their arguments and results are those of the same {@link Hypervisor} methods.
 */
export const TARGET_OPS: Readonly<Record<string, TargetOp>> = {
  ensureReplica: {
    run: (t, a, o) => t.ensureReplica(replicaSpecOf(a.spec, 'spec'), o),
    result: (v) => replicaOf(v),
  },
  deleteReplica: { run: (t, a, o) => done(t.deleteReplica(replicaOf(a.replica), o)), result: none },
  getVM: { run: (t, a, o) => t.getVM(stringOf(a.id, 'id'), o), result: (v) => vmInfoOf(v) },
  claimReplica: {
    run: (t, a, o) => t.claimReplica(replicaOf(a.replica), ownerOf(a.owner), o),
    result: (v) => ownerOf(v),
  },
  releaseReplica: {
    run: (t, a, o) => done(t.releaseReplica(replicaOf(a.replica), stringOf(a.runId, 'runId'), o)),
    result: none,
  },
  replicaOwner: {
    run: async (t, a, o) => (await t.replicaOwner(replicaOf(a.replica), o)) ?? null,
    result: (v) => (v === null ? undefined : ownerOf(v)),
  },
  replicaState: { run: (t, a, o) => t.replicaState(replicaOf(a.replica), o), result: (v) => fingerprintOf(v) },
  markReplica: {
    run: (t, a, o) => done(t.markReplica(replicaOf(a.replica), markOf(a.state), o)),
    result: none,
  },
  replicaMark: { run: (t, a, o) => t.replicaMark(replicaOf(a.replica), o), result: (v) => markOf(v, 'mark') },
  createRestorePoint: {
    run: (t, a, o) =>
      t.createRestorePoint(replicaOf(a.replica), stringOf(a.label, 'label'), {
        ...o,
        ...(a.retention === undefined ? {} : { retention: integerOf(a.retention, 'retention', 1) }),
      }),
    result: (v) => restorePointOf(v),
  },
  listRestorePoints: {
    run: (t, a, o) => t.listRestorePoints(replicaOf(a.replica), o),
    result: (v) => restorePointsOf(v),
  },
  revertTo: {
    run: (t, a, o) => done(t.revertTo(replicaOf(a.replica), restorePointOf(a.point), o)),
    result: none,
  },
  power: {
    run: (t, a, o) => {
      if (a.op !== 'start' && a.op !== 'shutdown') throw new ProtocolError('power.op must be start or shutdown');
      return done(t.power(stringOf(a.vmId, 'vmId'), a.op, o));
    },
    result: none,
  },
};

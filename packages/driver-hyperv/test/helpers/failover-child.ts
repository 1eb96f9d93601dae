/**
 * Child process of the Hyper-V failover crash check: one FailoverEngine operation of a job on the
 * simulated host (its own fake `pwsh` on the host's folder): test, planned or unplanned failover,
 * undo, commit, permanent failover, reverse replication or failback. Usage:
 *
 *   node --import tsx failover-child.ts <request.json>
 *
 * It prints `point <name>` at each fault point (the engine's `<kind>:<step>` and the driver's
 * failover steps) and kills itself with SIGKILL at the `killAtHit`-th one it reaches (1-based), or
 * at the first one named `killAt`.
 */
import { readFileSync } from 'node:fs';
import {
  DriverRegistry,
  defineDriver,
  FailoverEngine,
  FileFailoverStore,
  FileStateStore,
  type JobSpecInput,
  parseJob,
  ReplicationEngine,
} from '@replikit/core';
import { localTransport } from '@replikit/transport';
import { HYPERV_KIND_CAPABILITIES, HyperVDriver, hypervDriverOptionsSchema, PowerShellLink } from '../../src/index.js';

/** What the parent asks for. */
interface ChildRequest {
  pwsh: string;
  stateDir: string;
  job: JobSpecInput;
  op: 'test' | 'planned' | 'unplanned' | 'undo' | 'commit' | 'permanent' | 'reverse' | 'failback';
  killAtHit?: number;
  /** Kills at the first fault point of this name instead. */
  killAt?: string;
}

const request = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as ChildRequest;
let hits = 0;
const point = (name: string) => {
  hits += 1;
  process.stdout.write(`point ${name}\n`);
  if (hits === request.killAtHit || name === request.killAt) process.kill(process.pid, 'SIGKILL');
};
const link = new PowerShellLink({ executable: request.pwsh, timeoutMs: 60_000 });
const drivers = new DriverRegistry().register(
  defineDriver({
    kind: 'hyperv',
    capabilities: HYPERV_KIND_CAPABILITIES,
    options: hypervDriverOptionsSchema,
    create: (options) =>
      new HyperVDriver({
        link,
        sharedLink: true,
        rct: options.rct,
        target: { replicaPath: options.replicaPath, networkMap: options.networkMap, onWarning: () => undefined },
        failoverFaultHook: point,
      }),
  }),
);
const stateStore = new FileStateStore(request.stateDir);
const replication = new ReplicationEngine({ stateStore, drivers, ruleSets: [], transport: localTransport() });
const failover = new FailoverEngine({
  stateStore,
  failoverStore: new FileFailoverStore(request.stateDir),
  drivers,
  replication,
  faultHook: point,
});
const job = parseJob(request.job);
try {
  if (request.op === 'test') await failover.test(job, {});
  else if (request.op === 'planned') await failover.planned(job, { shutdownTimeoutMs: 60_000 });
  else if (request.op === 'unplanned') await failover.unplanned(job, { force: true });
  else if (request.op === 'undo') await failover.undo(job);
  else if (request.op === 'commit') await failover.commit(job);
  else if (request.op === 'permanent') await failover.permanent(job);
  else if (request.op === 'reverse') await failover.reverse(job);
  else await failover.failback(job, { shutdownTimeoutMs: 60_000 });
  process.stdout.write('result ok\n');
} catch (error) {
  const { code, message } = error as { code?: string; message?: string };
  process.stdout.write(`error ${JSON.stringify({ code, message })}\n`);
}
await replication.close();
await link.close();
process.exit(0);

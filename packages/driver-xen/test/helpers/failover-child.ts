/**
 * Child process of the xen failover crash check: one FailoverEngine operation of a job (a failover,
 * undo, commit, permanent failover, reverse replication or failback) against a simulated pool the
 * parent serves on loopback. Usage:
 *
 *   node failover-child.mjs <request.json>
 *
 * It prints `point <name>` at each fault point (the engine's `<kind>:<step>` and the Xen
 * driver's failover steps) and kills itself with SIGKILL at the point the request names
 * (`killAt`, its first hit) or at the `killAtHit`-th fault point it reaches (1-based).
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
import { createXenDriver, XEN_KIND_CAPABILITIES, xenDriverOptionsSchema } from '../../src/index.js';

/** What the parent asks for. */
interface ChildRequest {
  stateDir: string;
  job: JobSpecInput;
  op: 'test' | 'planned' | 'unplanned' | 'undo' | 'commit' | 'permanent' | 'reverse' | 'failback';
  killAt?: string;
  killAtHit?: number;
}

const request = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as ChildRequest;
let hits = 0;
const point = (name: string) => {
  hits += 1;
  process.stdout.write(`point ${name}\n`);
  if (name === request.killAt || hits === request.killAtHit) process.kill(process.pid, 'SIGKILL');
};
const drivers = new DriverRegistry().register(
  defineDriver({
    kind: 'xen',
    capabilities: XEN_KIND_CAPABILITIES,
    options: xenDriverOptionsSchema,
    create: (options, context) =>
      createXenDriver(options, { method: context.method, side: context.side, failoverFaultHook: point }),
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
// The XAPI client's event long-poll may hold the process: exit now that everything is said.
process.exit(0);

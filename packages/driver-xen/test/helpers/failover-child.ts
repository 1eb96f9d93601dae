/**
 * Child process of the xen failover crash check: one FailoverEngine operation of a job against a
 * simulated pool the parent serves on loopback. Usage:
 *
 *   node failover-child.mjs <request.json>
 *
 * It prints `point <name>` at each fault point (the engine's `<kind>:<step>` and the Xen
 * driver's failover steps) and kills itself with SIGKILL at the point the request names.
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
} from '@replikit/core';
import { createXenDriver, XEN_KIND_CAPABILITIES, xenDriverOptionsSchema } from '../../src/index.js';

/** What the parent asks for. */
interface ChildRequest {
  stateDir: string;
  job: JobSpecInput;
  op: 'unplanned' | 'undo';
  killAt?: string;
}

const request = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as ChildRequest;
const point = (name: string) => {
  process.stdout.write(`point ${name}\n`);
  if (name === request.killAt) process.kill(process.pid, 'SIGKILL');
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
const failover = new FailoverEngine({
  stateStore: new FileStateStore(request.stateDir),
  failoverStore: new FileFailoverStore(request.stateDir),
  drivers,
  faultHook: point,
});
const job = parseJob(request.job);
try {
  if (request.op === 'unplanned') await failover.unplanned(job, { force: true });
  else await failover.undo(job);
  process.stdout.write('result ok\n');
} catch (error) {
  const { code, message } = error as { code?: string; message?: string };
  process.stdout.write(`error ${JSON.stringify({ code, message })}\n`);
}
// The XAPI client's event long-poll may hold the process: exit now that everything is said.
process.exit(0);

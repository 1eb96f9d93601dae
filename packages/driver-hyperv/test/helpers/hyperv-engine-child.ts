/**
 * Child process of the Hyper-V crash matrix: one engine run, or the resume (or rollback) of one,
 * against a simulated Hyper-V host (the job names its fake `pwsh`). Usage:
 *
 *   node hyperv-engine-child.mjs <request.json>
 *
 * It speaks the protocol of driver-xen's engine-child-runner: `started`, `state <to> <ms>` at each
 * transition, then `result {…}` or `error {…}`. The parent SIGKILLs it wherever it likes.
 */
import { readFileSync } from 'node:fs';
import { DriverRegistry, FileStateStore, type JobSpecInput, ReplicationEngine } from '@replikit/core';
import { localTransport } from '@replikit/transport';
import { hypervDriver } from '../../src/index.js';

interface ChildRequest {
  stateDir: string;
  job?: JobSpecInput;
  resume?: string;
  rollback?: boolean;
}

const request = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as ChildRequest;
const engine = new ReplicationEngine({
  stateStore: new FileStateStore(request.stateDir),
  drivers: new DriverRegistry().register(hypervDriver),
  ruleSets: [],
  transport: localTransport(),
});
engine.on('state', (event) => process.stdout.write(`state ${event.to} ${Math.round(performance.now())}\n`));
process.stdout.write('started\n');
try {
  const record = request.resume
    ? await engine.resume(request.resume, { rollback: request.rollback === true })
    : await engine.run(request.job!);
  const { runId, state, outcome, error } = record;
  process.stdout.write(`result ${JSON.stringify({ runId, state, outcome, error })}\n`);
} catch (error) {
  const { code, message } = error as { code?: string; message?: string };
  process.stdout.write(`error ${JSON.stringify({ code, message })}\n`);
} finally {
  await engine.close();
}
process.exit(0);

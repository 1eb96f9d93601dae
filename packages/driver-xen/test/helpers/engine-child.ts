/**
 * Child process of the xen crash matrix: one engine run, or the resume (or rollback) of one,
 * against a simulated pool the parent serves on loopback. Usage:
 *
 *   node engine-child.mjs <request.json>
 *
 * It prints `started` once its modules are loaded, `state <to> <ms since it started>` at every
 * transition of the run,
 * and at the end one `result {…}` line (or `error {…}` when the engine threw). The parent kills
 * it with SIGKILL wherever it likes: nothing here catches that.
 */
import { readFileSync } from 'node:fs';
import { DriverRegistry, FileStateStore, type JobSpecInput, ReplicationEngine } from '@replikit/core';
import { localTransport } from '@replikit/transport';
import { xenDriver } from '../../src/index.js';

/** What the parent asks for. */
interface ChildRequest {
  stateDir: string;
  /** Start a run of this job… */
  job?: JobSpecInput;
  /** …or resume this run. */
  resume?: string;
  rollback?: boolean;
}

const request = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as ChildRequest;
const engine = new ReplicationEngine({
  stateStore: new FileStateStore(request.stateDir),
  drivers: new DriverRegistry().register(xenDriver),
  ruleSets: [],
  transport: localTransport(),
});
engine.on('state', (event) => process.stdout.write(`state ${event.to} ${Math.round(performance.now())}\n`));
process.stdout.write('started\n');
try {
  const record = request.resume
    ? await engine.resume(request.resume, { rollback: request.rollback === true })
    : await engine.run(request.job!);
  const summary = { runId: record.runId, state: record.state, outcome: record.outcome, error: record.error };
  process.stdout.write(`result ${JSON.stringify(summary)}\n`);
} catch (error) {
  const { code, message } = error as { code?: string; message?: string };
  process.stdout.write(`error ${JSON.stringify({ code, message })}\n`);
} finally {
  await engine.close();
}
// The XAPI client's event long-poll (event.from, 60 s) may still be in flight after the driver
// closed its connection, and holds the process: exit now that everything is said.
process.exit(0);

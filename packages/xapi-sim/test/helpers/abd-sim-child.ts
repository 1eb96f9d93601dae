/**
 * A simulator in a process of its own, for the test that kills it with SIGKILL:
 *   node --conditions=@replikit/source --import tsx abd-sim-child.ts <dir>
 * It starts an appliance, prints `{"pid": <agent pid>}` and runs until killed.
 */
import { startXapiSim } from '../../src/index.js';
import { makeAppliance, makeTemplate } from './appliance.js';
import type { SimFixture } from './sim-fixture.js';

const dir = process.argv[2]!;
const sim = await startXapiSim({ dir });
const session = (await sim.call('session.login_with_password', 'root', 'password')) as string;
const fx: SimFixture = {
  sim,
  dir,
  session,
  call: async <T>(method: string, ...args: unknown[]) => (await sim.call(method, session, ...args)) as T,
  close: () => sim.close(),
};
const abd = await makeAppliance(fx, await makeTemplate(fx), 'abd-orphan');
await fx.call('VM.start', abd.vm, false, false);
process.stdout.write(`${JSON.stringify({ pid: sim.appliance(abd.vm)?.pid })}\n`);

#!/usr/bin/env node
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { populateDemo } from './demo-pool.js';
import { startXapiSim } from './simulator.js';

const USAGE = `usage: replikit-xapi-sim demo [--dir DIR] [--port N] [--password PW] [--https] [--no-nbd]
Starts a simulated XenServer pool on loopback with a few VMs (CBT on) and prints how to connect.
It is a simulator: see the @replikit/xapi-sim README for what it models.`;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      dir: { type: 'string' },
      port: { type: 'string' },
      password: { type: 'string' },
      https: { type: 'boolean' },
      'no-nbd': { type: 'boolean' },
      help: { type: 'boolean' },
    },
  });
  if (values.help || positionals[0] !== 'demo') {
    console.error(USAGE);
    return values.help ? 0 : 2;
  }
  const port = values.port === undefined ? 0 : Number(values.port);
  if (!Number.isSafeInteger(port) || port < 0 || port > 65535) {
    console.error(`replikit-xapi-sim: --port ${values.port} is not a port number (0-65535)`);
    return 2;
  }
  const ownDir = values.dir === undefined;
  const dir = values.dir ?? (await mkdtemp(join(tmpdir(), 'xapi-sim-demo-')));
  const password = values.password ?? 'password';
  const sim = await startXapiSim({ dir, port, password, https: values.https === true, nbd: values['no-nbd'] !== true });
  const demo = await populateDemo(sim);
  console.log(`xapi-sim demo pool (a simulator, not a XenServer)
  url:      ${sim.url}
  user:     root
  password: ${password}
  SRs:      ${dir}
  VMs:      ${Object.keys(demo.vms).join(', ')} (CBT on; web-01 running)
  ABD:      clone 'replikit delegate appliance', set its xenstore_data vm-data/ip (127.x.y.z) and
            vm-data/replikit/psk (hex key), VM.start: a replikit-agent listens there on port 7400
  NBD:      ${sim.state.nbd === undefined ? 'off' : `port ${sim.state.nbd.port}, certificate in ${sim.tls?.dir}`}
  connect:  createClient({ url: '${sim.url}', auth: { user: 'root', password: '${password}' }, allowUnauthorized: true })
Press Ctrl-C to stop.`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await sim.close();
  if (ownDir) await rm(dir, { recursive: true, force: true });
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    console.error(`replikit-xapi-sim: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  },
);

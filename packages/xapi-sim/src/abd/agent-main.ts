#!/usr/bin/env node
// The agent of a simulated delegate appliance: `replikit-agent` (the transport package's agent)
// with the appliance-side driver, started by the simulator at `VM.start`. Arguments are those of
// `replikit-agent` (the simulator passes --driver xen-abd --root <appliance folder> --listen …);
// the pre-shared key comes in REPLIKIT_AGENT_PSK. It stops on SIGTERM/SIGINT and when its stdin
// ends: the simulator holds the other end, so a simulator that dies (even by SIGKILL) leaves no
// agent behind.
import { DriverRegistry, isReplikitError } from '@replikit/core';
import { createHashingPool } from '@replikit/dedup';
import { runAgentCli } from '@replikit/transport';
import { xenAbdDriver } from './abd-driver.js';
import { AGENT_READY_PREFIX } from './agent-ready.js';

const controller = new AbortController();
const stop = () => controller.abort();
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();

const drivers = new DriverRegistry();
drivers.register(xenAbdDriver);
let code: number;
try {
  code = await runAgentCli(process.argv.slice(2), {
    env: process.env,
    log: (line) => process.stdout.write(`${new Date().toISOString()} ${line}\n`),
    drivers,
    // As the CLI's replikit-agent: its block hasher (xxh128…) also serves readDigests.
    hasher: (algorithm) => createHashingPool({ algorithm }),
    signal: controller.signal,
    onReady: (address) => process.stdout.write(`${AGENT_READY_PREFIX}${address?.host}:${address?.port}\n`),
  });
} catch (error) {
  const message = isReplikitError(error) ? `${error.code}: ${error.message}` : `unexpected error: ${String(error)}`;
  process.stderr.write(`xapi-sim appliance agent: ${message}\n`);
  code = isReplikitError(error) && error.code === 'E_INPUT' ? 2 : 1;
}
// The agent has stopped; nothing of it must keep the process (and its address) alive.
process.exit(code);

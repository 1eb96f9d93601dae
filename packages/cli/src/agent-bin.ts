#!/usr/bin/env node
// `replikit-agent`: hosts the target side of replikit jobs (push or pull), for the drivers
// the CLI ships with. Flags and REPLIKIT_AGENT_* variables: `replikit-agent --help`.
import { defaultDriverRegistry, isReplikitError } from '@replikit/core';
import { createHashingPool } from '@replikit/dedup';
import { runAgentCli } from '@replikit/transport';
import { exitCodeOf } from './cli-error.js';
import { registerBuiltinDrivers } from './drivers.js';

const controller = new AbortController();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  });
}

registerBuiltinDrivers();
try {
  process.exitCode = await runAgentCli(process.argv.slice(2), {
    env: process.env,
    log: (line) => process.stdout.write(`${new Date().toISOString()} ${line}\n`),
    print: (text) => process.stdout.write(`${text}\n`),
    drivers: defaultDriverRegistry,
    hasher: (algorithm) => createHashingPool({ algorithm }),
    signal: controller.signal,
  });
} catch (error) {
  // The same exit statuses as `replikit`: 2 for wrong input (E_INPUT), 1 for a failure.
  const code = exitCodeOf(error);
  const message = isReplikitError(error)
    ? `${error.code}: ${error.message}`
    : `unexpected error: ${(error as Error).message}`;
  const hint = code === 2 ? ' (see `replikit-agent --help`)' : '';
  process.stderr.write(`replikit-agent: ${message}${hint}\n`);
  process.exitCode = code;
}

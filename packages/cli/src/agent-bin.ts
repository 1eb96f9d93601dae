#!/usr/bin/env node
// `replikit-agent`: serves replica writes for replikit sessions (push or pull), for the drivers
// the CLI ships with. Flags and REPLIKIT_AGENT_* variables: `replikit-agent --help`.
import { defaultDriverRegistry, isReplikitError } from '@replikit/core';
import { createHashingPool } from '@replikit/dedup';
import { runAgentCli } from '@replikit/transport';
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
    drivers: defaultDriverRegistry,
    hasher: (algorithm) => createHashingPool({ algorithm }),
    signal: controller.signal,
  });
} catch (error) {
  const message = isReplikitError(error) ? `${error.code}: ${error.message}` : (error as Error).message;
  process.stderr.write(`replikit-agent: ${message} (see \`replikit-agent --help\`)\n`);
  process.exitCode = 2;
}

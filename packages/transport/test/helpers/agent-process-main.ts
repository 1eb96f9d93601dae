// A real `replikit-agent` process for tests: the transport's agent CLI with the file driver,
// started by `startAgentProcess`. It prints `READY host:port` once it listens, and stops on
// SIGTERM or when its stdin ends (a test runner that dies leaves no agent behind).
import { DriverRegistry } from '@replikit/core';
import { fileDriver } from '@replikit/driver-file';
import { runAgentCli } from '../../src/index.js';

const controller = new AbortController();
process.on('SIGTERM', () => controller.abort());
process.stdin.on('end', () => controller.abort());
process.stdin.resume();
const code = await runAgentCli(process.argv.slice(2), {
  env: process.env,
  log: (line) => process.stderr.write(`${line}\n`),
  drivers: new DriverRegistry().register(fileDriver),
  signal: controller.signal,
  onReady: (address) => process.stdout.write(`READY ${address?.host}:${address?.port}\n`),
});
process.exit(code);

#!/usr/bin/env node
import { checkpointsOn, interruptNotice, main } from './main.js';

const argv = process.argv.slice(2);
const controller = new AbortController();
const stop = new AbortController();
let interrupted = 0;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    interrupted++;
    if (interrupted > 1) process.exit(130);
    process.stderr.write(interruptNotice(argv, signal));
    if (checkpointsOn(argv, signal)) stop.abort();
    else controller.abort();
  });
}

const code = await main(argv, {
  stdout: process.stdout,
  stderr: process.stderr,
  cwd: process.cwd(),
  env: process.env,
  signal: controller.signal,
  stop: stop.signal,
  oneShot: true,
});
process.exitCode = code;

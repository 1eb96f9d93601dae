#!/usr/bin/env node
import { checkpointsOn, interruptNotice, main } from './main.js';

const argv = process.argv.slice(2);
// `replikit … | head`: once the reader is gone, output is dropped and the command finishes its work
// (a run is not cut short by its reader); any other error of the stream stays fatal.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
});
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

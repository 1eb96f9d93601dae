#!/usr/bin/env node
import { dirname, resolve } from 'node:path';
/**
 * The fake `pwsh`: reads node-powershell's lines from stdin (it is started with
 * `-NoExit -Command -`, whose flags it ignores) and answers them against a simulated host.
 * The host folder comes from `--sim-host <dir>`, else from the launcher's path
 * (`<host>/.pwsh/pwsh`, which passes itself as the first argument).
 */
import { createInterface } from 'node:readline';
import { PwshSession } from './session.js';

function hostRoot(argv: string[]): string {
  const flag = argv.indexOf('--sim-host');
  if (flag >= 0 && argv[flag + 1]) return resolve(argv[flag + 1] as string);
  const launcher = argv[2];
  if (!launcher || launcher.startsWith('-')) {
    process.stderr.write('replikit-hyperv-pwsh: give the host folder with --sim-host <dir>\n');
    process.exit(2);
  }
  return dirname(dirname(resolve(launcher)));
}

const session = new PwshSession(hostRoot(process.argv), {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
});
const lines = createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY });
let hung = false;
for await (const line of lines) {
  if (hung) continue;
  try {
    if ((await session.line(line)) === 'hang') hung = true;
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  }
}

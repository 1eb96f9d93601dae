import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NotFoundError, RuleError } from '@replikit/core';
import { startXapiSim, type XapiSim } from '@replikit/xapi-sim';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { describeForUser } from '../src/cli-error.js';
import { vmCommand } from '../src/commands/vm.js';
import type { CliContext } from '../src/context.js';
import { Capture } from './helpers/cli-harness.js';

/*
 * A VM name is anybody's text on a pool: printed by the CLI, it must neither break a listing into
 * lines that look like other VMs nor reach the terminal as an escape sequence.
 */

const HOSTILE = 'web\nfake-vm  running  \u001b[2J\u001b[31mred\r\u009b';

describe('hostile VM names in what the CLI prints', () => {
  let dir: string;
  let sim: XapiSim;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rk-cli-hostile-'));
    sim = await startXapiSim({ dir });
    const session = (await sim.call('session.login_with_password', 'root', sim.credentials.password)) as string;
    await sim.call('VM.create', session, { name_label: HOSTILE });
    await sim.call('VM.create', session, { name_label: 'plain' });
  });
  afterAll(async () => {
    await sim?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('vm list --job prints one line per VM, the name with its control characters escaped', async () => {
    const credentialsFile = join(dir, 'password');
    await writeFile(credentialsFile, `${sim.credentials.password}\n`, { mode: 0o600 });
    const file = join(dir, 'job.yaml');
    const xen = { driver: 'xen', url: sim.url, credentialsFile };
    await writeFile(
      file,
      stringify({
        name: 'listing',
        source: { ...xen, vm: 'plain' },
        target: { driver: 'file', root: join(dir, 'r') },
        method: 'qhybrid',
      }),
    );
    const out = new Capture();
    const ctx: CliContext = {
      stdout: out as unknown as NodeJS.WriteStream,
      stderr: new Capture() as unknown as NodeJS.WriteStream,
      cwd: dir,
      env: {},
      signal: new AbortController().signal,
    };
    expect(await vmCommand(ctx, ['list'], { job: file, json: false, copy: false })).toBe(0);
    const lines = out.text.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines.sort()[1]).toMatch(/^web\\nfake-vm {2}running {2}\\u001b\[2J\\u001b\[31mred\\r\\u009b {2}stopped/);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: none may be printed
    expect(out.text).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
  });

  it('an error naming such a VM is one line, with no escape sequence; broken rules keep a line each', () => {
    const line = describeForUser(new NotFoundError(`no VM '${HOSTILE}' on this pool`), false);
    expect(line).toBe(
      `replikit: E_NOT_FOUND: no VM 'web\\nfake-vm  running  \\u001b[2J\\u001b[31mred\\r\\u009b' on this pool`,
    );
    const rules = describeForUser(new RuleError('the job breaks 2 rules:\nerror a\nerror b \u001b[2J'), false);
    expect(rules).toBe('replikit: E_RULE: the job breaks 2 rules:\nerror a\nerror b \\u001b[2J');
  });
});

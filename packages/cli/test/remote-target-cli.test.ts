import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createHashingPool } from '@replikit/dedup';
import { createFileDriver, writeGuestDisk } from '@replikit/driver-file';
import { type Agent, createAgent, type Security } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { binSource, runCli, waitForExit } from './helpers/cli-harness.js';
import { createRandomVm } from './helpers/file-vm.js';

/*
 * The agent hosts the whole target side (issue 15, point 3). The engine's host cannot see the
 * agent's folder: the job's `target.root` names a folder that does not exist on the engine's side
 * (the tests run as root, so a denied folder is simulated by one that is not there), and the
 * agent serves another folder of its own. Runs, restore points and reverts must go through the
 * agent, and nothing may appear under the engine's `target.root`.
 */

const MiB = 1024 * 1024;
const key = randomBytes(32);
const security: Security = { kind: 'tls', psk: { identity: 'site-b', key } };

let dir: string;
let agentRoot: string;
let agent: Agent | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'replikit-remote-cli-'));
  agentRoot = join(dir, 'agent-side');
  await mkdir(agentRoot);
  await writeFile(join(dir, 'site-b.psk'), key.toString('hex'));
});
afterEach(async () => {
  await agent?.stop();
  agent = undefined;
  await rm(dir, { recursive: true, force: true });
});

/** An agent confined to its own root, as `replikit-agent --root` runs it. */
function newAgent(): Agent {
  agent = createAgent({
    target: createFileDriver({ root: agentRoot, confine: true }),
    security,
    hasher: (algorithm) => createHashingPool({ algorithm }),
  });
  return agent;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return typeof address === 'object' && address ? address.port : 0;
}

async function jobFile(transport: Record<string, unknown>, targetRoot = './engine-side'): Promise<string> {
  const path = join(dir, 'job.yaml');
  await writeFile(
    path,
    stringify({
      name: 'remote',
      source: { driver: 'file', root: './vms', vm: 'web' },
      target: { driver: 'file', root: targetRoot },
      method: 'qhybrid',
      transport: { kind: 'tls', psk: { identity: 'site-b', keyFile: './site-b.psk' }, ...transport },
    }),
  );
  return path;
}

const replicaDisk = () => readFile(join(agentRoot, 'web-replica', 'd0.raw'));
const sourceDisk = () => readFile(join(dir, 'vms', 'web', 'd0.raw'));

/** Two runs, then the restore points listed and the replica reverted to the first, all through the agent. */
async function runsPointsAndRevert(job: string): Promise<void> {
  await createRandomVm(join(dir, 'vms'), 'web', [{ id: 'd0', size: 2 * MiB }]);
  const first = await runCli(['run', job], { cwd: dir });
  expect(first.code, first.stderr).toBe(0);
  const firstBytes = await replicaDisk();
  expect(firstBytes.equals(await sourceDisk())).toBe(true);

  await writeGuestDisk(join(dir, 'vms'), 'web', 'd0', 65536, Buffer.alloc(65536, 9));
  const second = await runCli(['run', job], { cwd: dir });
  expect(second.code, second.stderr).toBe(0);
  expect((await replicaDisk()).equals(await sourceDisk())).toBe(true);

  const listed = await runCli(['points', 'list', job, '--json'], { cwd: dir });
  expect(listed.code, listed.stderr).toBe(0);
  const points = JSON.parse(listed.stdout) as Array<{ id: string }>;
  expect(points).toHaveLength(2);

  const reverted = await runCli(['points', 'revert', job, points[0]!.id], { cwd: dir });
  expect(reverted.code, reverted.stderr).toBe(0);
  expect((await replicaDisk()).equals(firstBytes)).toBe(true);
  const after = JSON.parse((await runCli(['points', 'list', job, '--json'], { cwd: dir })).stdout) as unknown[];
  expect(after).toHaveLength(1);

  // After a revert the next run compares the whole replica: its digests come from the agent.
  const third = await runCli(['run', job], { cwd: dir });
  expect(third.code, third.stderr).toBe(0);
  expect((await replicaDisk()).equals(await sourceDisk())).toBe(true);

  // The engine's host never touched the replica's storage.
  expect(existsSync(join(dir, 'engine-side'))).toBe(false);
}

describe('a job with a transport section: the agent hosts the target side', () => {
  it('push: runs, points list and revert go through the agent; nothing is created on the engine side', async () => {
    const address = await newAgent().listen({ host: '127.0.0.1', port: 0 });
    await runsPointsAndRevert(await jobFile({ agent: `127.0.0.1:${address.port}` }));
  });

  it('pull: the same through an agent that dials the engine', async () => {
    const port = await freePort();
    newAgent().pullFrom({ host: '127.0.0.1', port });
    await runsPointsAndRevert(await jobFile({ pull: { listen: `127.0.0.1:${port}` } }));
  });
});

/*
 * The same with the engine's process really denied the agent's folder: the CLI runs as the
 * unprivileged user `nobody` (through `setpriv`), the agent (in this root test process) serves a
 * folder only root may enter, and the job's `target.root` names that very folder. Every file under
 * it must be the agent's (root's): the engine's process created nothing there.
 */
const NOBODY = 65534;
const canDrop = process.getuid?.() === 0 && existsSync('/usr/bin/setpriv');
const tsxLoader = pathToFileURL(
  join(dirname(createRequire(import.meta.url).resolve('tsx/package.json')), 'dist', 'loader.mjs'),
).href;

/** `replikit <args>` as `nobody`, from source through tsx. */
function runAsNobody(args: string[]) {
  const child = spawn(
    '/usr/bin/setpriv',
    [
      `--reuid=${NOBODY}`,
      `--regid=${NOBODY}`,
      '--clear-groups',
      process.execPath,
      '--conditions=@replikit/source',
      '--import',
      tsxLoader,
      binSource,
      ...args,
    ],
    {
      cwd: dir,
      env: { ...process.env, HOME: dir, REPLIKIT_STATE_DIR: join(dir, '.replikit'), NODE_OPTIONS: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  return waitForExit(child as never);
}

/** Files and folders under `root`, recursively, with their owners. */
async function owners(root: string): Promise<Array<{ path: string; uid: number }>> {
  const entries = await readdir(root, { recursive: true });
  return Promise.all(entries.map(async (path) => ({ path, uid: (await stat(join(root, path))).uid })));
}

describe.skipIf(!canDrop)("the engine as an unprivileged user, denied the agent's folder", () => {
  for (const mode of ['push', 'pull'] as const) {
    it(`${mode}: runs, points and revert work through the agent; the engine creates nothing there`, async () => {
      await createRandomVm(join(dir, 'vms'), 'web', [{ id: 'd0', size: 2 * MiB }]);
      await mkdir(join(dir, '.replikit'));
      await chmod(dir, 0o755);
      for (const path of [join(dir, 'vms'), join(dir, 'vms', 'web'), join(dir, '.replikit'), join(dir, 'site-b.psk')]) {
        await chown(path, NOBODY, NOBODY);
      }
      for (const disk of await readdir(join(dir, 'vms', 'web')))
        await chown(join(dir, 'vms', 'web', disk), NOBODY, NOBODY);
      await chmod(agentRoot, 0o700);
      let transport: Record<string, unknown>;
      if (mode === 'push') {
        const address = await newAgent().listen({ host: '127.0.0.1', port: 0 });
        transport = { agent: `127.0.0.1:${address.port}` };
      } else {
        const port = await freePort();
        newAgent().pullFrom({ host: '127.0.0.1', port });
        transport = { pull: { listen: `127.0.0.1:${port}` } };
      }
      const job = await jobFile(transport, agentRoot);
      await chown(job, NOBODY, NOBODY);
      // The engine's process cannot see the folder.
      const peek = await runAsNobody(['vm', 'list', '--root', agentRoot]);
      expect(peek.code).not.toBe(0);

      const first = await runAsNobody(['run', job]);
      expect(first.code, first.stderr).toBe(0);
      const firstBytes = await replicaDisk();
      expect(firstBytes.equals(await sourceDisk())).toBe(true);
      await writeGuestDisk(join(dir, 'vms'), 'web', 'd0', 0, Buffer.alloc(65536, 3));
      const second = await runAsNobody(['run', job]);
      expect(second.code, second.stderr).toBe(0);
      expect((await replicaDisk()).equals(await sourceDisk())).toBe(true);

      const listed = await runAsNobody(['points', 'list', job, '--json']);
      expect(listed.code, listed.stderr).toBe(0);
      const points = JSON.parse(listed.stdout) as Array<{ id: string }>;
      expect(points).toHaveLength(2);
      const reverted = await runAsNobody(['points', 'revert', job, points[0]!.id]);
      expect(reverted.code, reverted.stderr).toBe(0);
      expect((await replicaDisk()).equals(firstBytes)).toBe(true);

      const created = await owners(agentRoot);
      expect(created.length).toBeGreaterThan(0);
      expect(created.filter((entry) => entry.uid !== 0)).toEqual([]);
    });
  }
});

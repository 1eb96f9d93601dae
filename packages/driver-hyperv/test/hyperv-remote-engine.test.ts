import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type DiskRef,
  DriverRegistry,
  defineDriver,
  FileStateStore,
  isReplikitError,
  ReplicationEngine,
  type RunRecord,
} from '@replikit/core';
import { compareBytes, readWholeDisk, testPattern } from '@replikit/core/testing';
import { createFileDriver } from '@replikit/driver-file';
import { addRemoteHost, createSimulatedHost, rebootHost, type SimulatedHyperVHost } from '@replikit/hyperv-sim';
import { type Agent, createAgent, createRemoteTarget, localTransport, type Security } from '@replikit/transport';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createHyperVDriver,
  envelopedScript,
  HYPERV_KIND_CAPABILITIES,
  HyperVDriver,
  hypervDriverOptionsSchema,
  REMOTE_SESSION_SCRIPTS,
  SOURCE_SCRIPTS,
} from '../src/index.js';
import { type SimHost, startSimHost } from './helpers/sim-host.js';

const MiB = 2 ** 20;
const USER = 'CORP\\replikit';
/** A password with what would break a script if it were ever interpolated into one. */
const PASSWORD = `p'a"s$(Stop-Computer)\`;Grüße`;
const KEY = randomBytes(32);
const SECURITY: Security = { kind: 'tls', psk: { identity: 'hv-src', key: KEY } };
/** A VM name with quotes, `$()`, a backtick, `;`, a newline and non-ASCII characters. */
const VM = `web 'r' "x" $(Remove-Item C:\\) \`n;\nRücken 日本`;

describe('a Hyper-V source reached through PowerShell remoting and a replikit-agent', { timeout: 300_000 }, () => {
  let sim: SimHost;
  let controller: SimulatedHyperVHost;
  let agent: Agent;
  let address: string;
  let dir: string;
  /** Requests the agent answered on each control connection that ended (host-file reads among them). */
  const controlEnded: number[] = [];
  let onControl: (() => void) | undefined;
  const env = { RK_HV_PASSWORD: PASSWORD, RK_HV_WRONG: 'not-it', RK_HV_KEY: KEY.toString('hex') };
  const remoteOptions = (passwordEnv = 'RK_HV_PASSWORD') =>
    hypervDriverOptionsSchema.parse({
      pwsh: controller.pwsh,
      callTimeoutMs: 60_000,
      host: {
        computerName: 'HV-SRC',
        user: USER,
        passwordEnv,
        agent: { address, pskIdentity: 'hv-src', pskKeyEnv: 'RK_HV_KEY' },
      },
    });

  beforeAll(async () => {
    sim = await startSimHost();
    dir = await mkdtemp(join(tmpdir(), 'rk-hyperv-remote-'));
    // The machine replikit runs on: its own fake pwsh, which knows the host as 'hv-src'.
    controller = await createSimulatedHost(join(dir, 'controller'));
    await addRemoteHost(controller.root, 'hv-src', { root: sim.host.root, user: USER, password: PASSWORD });
    // The agent on the host: its root is the simulated host's folder.
    agent = createAgent({
      target: createFileDriver({ root: join(dir, 'agent-replicas') }),
      security: SECURITY,
      hostFilesRoot: sim.host.root,
      onEvent: (event) => {
        if (event.type === 'control') {
          controlEnded.push(event.requests);
          onControl?.();
        }
      },
    });
    const bound = await agent.listen({ host: '127.0.0.1', port: 0 });
    address = `127.0.0.1:${bound.port}`;
  }, 120_000);
  afterAll(async () => {
    await agent?.stop();
    await sim?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('replicates to a local Hyper-V replica: full, then incremental through RCT; replica equal to each checkpoint', async () => {
    const size = 8 * MiB + 512;
    await sim.makeVM(VM, [size, 2 * MiB], { generation: 2, cpus: 2 });
    const write = (disk: number, offset: number, length: number, seed: number) =>
      sim.host.guestWrite(VM, disk, offset, testPattern(seed, length));
    await write(0, 4095, 2 * MiB, 1);
    await write(1, 0, 512, 2);

    const drivers = new DriverRegistry().register(
      defineDriver({
        kind: 'hyperv',
        capabilities: HYPERV_KIND_CAPABILITIES,
        options: hypervDriverOptionsSchema,
        create: (options, context) =>
          context.side === 'source'
            ? createHyperVDriver(options, { env })
            : new HyperVDriver({
                link: sim.link,
                sharedLink: true,
                rct: options.rct,
                target: { replicaPath: options.replicaPath, onWarning: () => undefined },
              }),
      }),
    );
    const engine = new ReplicationEngine({
      stateStore: new FileStateStore(join(dir, 'state')),
      drivers,
      transport: localTransport(),
    });
    const source = remoteOptions();
    const job = {
      name: 'remote-hyperv-to-hyperv',
      source: { driver: 'hyperv', vm: VM, ...source },
      target: { driver: 'hyperv', replicaPath: join(sim.host.root, 'replicas'), replicaName: 'web-replica' },
      method: 'qhybrid',
    };
    const local = sim.sharedDriver();
    const replicate = async (): Promise<RunRecord> => {
      const record = await engine.run(job);
      expect(record.outcome, JSON.stringify(record.error)).toBe('completed');
      for (const [i, disk] of record.snapshot!.disks.entries()) {
        const replicaDisk: DiskRef = record.replica!.disks[i]!;
        expect(compareBytes(await readWholeDisk(local, replicaDisk), await readWholeDisk(local, disk))).toBe('equal');
      }
      return record;
    };
    const first = await replicate();
    expect(first.disks.map((d) => d.mode)).toEqual(['full', 'full']);
    await write(0, MiB - 7, Math.round(size / 100), 3);
    await write(0, size - 100, 100, 4);
    const second = await replicate();
    expect(second.disks.map((d) => d.mode)).toEqual(['tracked', 'tracked']);
    // The source's disks were read through the agent: its control connections end as the engine
    // closes the source drivers (waited for, as events).
    const ended = new Promise<void>((resolve) => {
      onControl = () => {
        if (controlEnded.reduce((a, b) => a + b, 0) > 10) resolve();
      };
      onControl();
    });
    await engine.close();
    await ended;

    // The source side's scripts reached the host through the session (logged by the host's side);
    // the controller's shell received only the session's own scripts. The password is in none.
    const hostScripts = (await sim.host.scriptLog()).filter((e) => e.kind === 'script').map((e) => e.text);
    const controllerScripts = (await controller.scriptLog()).filter((e) => e.kind === 'script').map((e) => e.text);
    const sourceScripts = new Set(SOURCE_SCRIPTS.map(envelopedScript));
    expect(hostScripts.some((s) => sourceScripts.has(s))).toBe(true);
    const sessionScripts = new Set(REMOTE_SESSION_SCRIPTS.map(envelopedScript));
    expect(controllerScripts.filter((s) => !sessionScripts.has(s))).toEqual([]);
    for (const text of [...hostScripts, ...controllerScripts]) {
      for (const part of ['Stop-Computer', 'Grüße', 'Remove-Item', 'Rücken', '日本'])
        expect(text.includes(part)).toBe(false);
    }
  });

  it('a wrong password fails with one clear line (E_AUTH) that never holds the password', async () => {
    const hv = await createHyperVDriver(remoteOptions('RK_HV_WRONG'), { env });
    try {
      const error = await hv.listVMs().catch((e: unknown) => e);
      expect(isReplikitError(error, 'E_AUTH'), String(error)).toBe(true);
      const message = (error as Error).message;
      expect(message).toMatch(
        /^could not open a PowerShell remoting session to 'HV-SRC' as user 'CORP\\replikit': .*Access is denied/,
      );
      expect(message).not.toContain('\n');
      expect(message).not.toContain('not-it');
      expect(JSON.stringify((error as { details?: unknown }).details)).not.toContain('not-it');
    } finally {
      await hv.close();
    }
  });

  it('a broken session (the host rebooted) fails that call, and the next call opens a new one', async () => {
    const hv = await createHyperVDriver(remoteOptions(), { env });
    try {
      expect((await hv.listVMs()).some((vm) => vm.name === VM)).toBe(true);
      await rebootHost(sim.host.root);
      const broken = await hv.listVMs().catch((e: unknown) => e);
      expect(String((broken as Error).message)).toMatch(/session state is Broken/);
      expect((await hv.listVMs()).some((vm) => vm.name === VM)).toBe(true);
    } finally {
      await hv.close();
    }
  });

  it('the agent refuses paths outside its root: absolute, through .., and through a symbolic link', async () => {
    const outside = join(dir, 'outside');
    await writeFile(`${outside}.json`, '{}');
    await symlink(dir, join(sim.host.root, 'escape'));
    const target = createRemoteTarget({
      kind: 'hyperv',
      address: { host: '127.0.0.1', port: Number(address.split(':')[1]) },
      security: SECURITY,
    });
    const files = target.hostFiles();
    try {
      for (const attempt of [
        files.openImage(`${outside}.json`),
        files.openImage(join(sim.host.root, '..', 'outside.json')),
        files.readText(join(sim.host.root, 'escape', 'outside.json')),
        files.writeText(join(sim.host.root, 'escape', 'planted.json'), 'x'),
        files.readText('relative/path.json'),
      ]) {
        const error = await attempt.then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(isReplikitError(error, 'E_INPUT'), String(error)).toBe(true);
        expect((error as Error).message).toMatch(/outside the agent's root/);
      }
      // Inside the root it serves: a state file round-trips.
      await files.writeText(join(sim.host.root, 'state', 'probe.json'), '{"ok":true}');
      expect(await files.readText(join(sim.host.root, 'state', 'probe.json'))).toBe('{"ok":true}');
    } finally {
      await target.close();
    }
  });
});

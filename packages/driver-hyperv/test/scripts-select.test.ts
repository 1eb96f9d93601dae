import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adminCmdlet, createSimulatedHost, populateDemoHost, type SimulatedHyperVHost } from '@replikit/hyperv-sim';
import { PowerShell } from 'node-powershell';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  callLine,
  FAILOVER_SCRIPTS,
  type PsScript,
  REMOTE_SESSION_SCRIPTS,
  SOURCE_SCRIPTS,
  TARGET_SCRIPTS,
} from '../src/index.js';

// Every script the driver can send that projects its output with Select-Object runs on the
// simulated host as written (each projection evaluated), and once per property it names with that
// name misspelled: the simulator refuses each misspelling, where a real host would answer null.

let dir: string;
let host: SimulatedHyperVHost;
let shell: PowerShell;
/** The parameters each projecting script runs with, by script name (filled once the host is set up). */
let params: Record<string, Record<string, unknown>>;

type Envelope = {
  ok: boolean;
  data?: Record<string, unknown>[];
  category?: string;
  errorId?: string;
  message?: string;
};

async function run(script: PsScript): Promise<Envelope> {
  const result = await shell.invoke(callLine(script, params[script.name] ?? {}));
  return JSON.parse(result.raw) as Envelope;
}

/** Each property name a script's body reads: the quoted entries of -Property lists and every `$_.<name>`. */
function propertyReferences(body: string): { index: number; name: string }[] {
  const found: { index: number; name: string }[] = [];
  for (const m of body.matchAll(/(?<=-Property |, )'([A-Za-z]+)'/g))
    found.push({ index: m.index + 1, name: m[1] as string });
  for (const m of body.matchAll(/\$_\.([A-Za-z]+)/g)) found.push({ index: m.index + 3, name: m[1] as string });
  return found;
}

/** `name` with its last two letters swapped (`Path` → `Paht`). */
function misspelled(name: string): string {
  const swapped = `${name.slice(0, -2)}${name.at(-1)}${name.at(-2)}`;
  return swapped === name ? `${name}x` : swapped;
}

const ALL = [...SOURCE_SCRIPTS, ...TARGET_SCRIPTS, ...FAILOVER_SCRIPTS, ...REMOTE_SESSION_SCRIPTS];
const PROJECTING = ALL.filter((s) => s.body.includes('Select-Object'));

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hyperv-select-'));
  host = await createSimulatedHost(dir);
  const demo = await populateDemoHost(host);
  await adminCmdlet(host.root, 'Checkpoint-VM', { Name: demo.vm, SnapshotName: 'cp1' });
  const vm = (await host.state()).vms.find((v) => v.name === demo.vm);
  const disk = demo.disks[0]?.path as string;
  shell = new PowerShell({ executable: host.pwsh, throwOnInvocationError: false });
  // Two RCT reference points of the VM (one for destroy-reference-point to destroy, one for
  // list-reference-points), a recovery checkpoint for convert-to-reference-point, and a finished
  // CreateSnapshot job for the job scripts.
  const script = (name: string) => SOURCE_SCRIPTS.find((s) => s.name === name) as PsScript;
  const call = async (name: string, p: Record<string, unknown>) => {
    const answer = JSON.parse((await shell.invoke(callLine(script(name), p))).raw) as Envelope;
    expect(answer.ok, `${name}: ${answer.message}`).toBe(true);
    return answer.data?.[0] ?? {};
  };
  const recoveryCheckpoint = async () => (await call('create-recovery-checkpoint', { vmId: vm?.id })).Result;
  const points: unknown[] = [];
  for (let i = 0; i < 2; i++) {
    points.push((await call('convert-to-reference-point', { snapshot: await recoveryCheckpoint() })).Result);
  }
  const snapshot = await recoveryCheckpoint();
  await host.armFaults({ wmiJobs: { polls: 0, methods: ['CreateSnapshot'] } });
  const job = (await call('create-recovery-checkpoint', { vmId: vm?.id })).Job;
  await host.armFaults({});
  params = {
    'list-vms': {},
    'get-vm': { id: vm?.id },
    'vm-drives': { vm: demo.vm },
    'get-vhd': { path: disk },
    'vm-nics': { vm: demo.vm },
    'vm-firmware': { vm: demo.vm },
    'list-checkpoints': { vm: demo.vm },
    // An RCT id the host never issued: the method fails (ReturnValue not 0), the projection still runs.
    'get-virtual-disk-changes': { path: disk, limitId: 'rctX:none:0', offset: 0, length: 8 * 2 ** 20 },
    'list-vm-notes': {},
    'host-disk-folder': {},
    'list-reference-points': {},
    'create-recovery-checkpoint': { vmId: vm?.id },
    'convert-to-reference-point': { snapshot },
    'destroy-reference-point': { point: points[0] },
    'wmi-job-state': { job },
    'wmi-job-result': { job, resultClass: 'Msvm_VirtualSystemSettingData' },
  };
}, 120_000);

afterAll(async () => {
  await shell?.dispose();
  await rm(dir, { recursive: true, force: true });
});

describe('the driver’s Select-Object projections on the simulated host', () => {
  it('covers every projecting script the driver can send', () => {
    expect(PROJECTING.map((s) => s.name).sort()).toEqual(Object.keys(params).sort());
  });

  it('runs each projecting script as written, every selected property coming back', async () => {
    for (const script of PROJECTING) {
      const answer = await run(script);
      expect(answer, script.name).toMatchObject({ ok: true });
      expect(answer.data?.length, script.name).toBeGreaterThan(0);
    }
    const [checkpoint] = (await run(PROJECTING.find((s) => s.name === 'list-checkpoints') as PsScript)).data ?? [];
    // Enums and Guids through .ToString() are text; the nested projection keeps Path only.
    expect(checkpoint).toMatchObject({
      SnapshotType: 'Standard',
      Name: 'cp1',
      Id: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    expect(checkpoint?.HardDrives).toEqual([
      { Path: expect.stringMatching(/system\.vhdx$/) },
      { Path: expect.stringMatching(/data\.vhdx$/) },
    ]);
    expect(String(checkpoint?.CreationTime)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
  }, 300_000);

  it('refuses each property of each projection once misspelled', async () => {
    let mutants = 0;
    for (const script of PROJECTING) {
      const references = propertyReferences(script.body);
      expect(references.length, script.name).toBeGreaterThan(0);
      for (const { index, name } of references) {
        const body = `${script.body.slice(0, index)}${misspelled(name)}${script.body.slice(index + name.length)}`;
        const answer = await run({ name: script.name, body });
        expect(answer, `${script.name}: ${name} → ${misspelled(name)}`).toMatchObject({
          ok: false,
          category: 'InvalidArgument',
          errorId: expect.stringMatching(/^SimulatorPropertyNotFound/),
        });
        mutants++;
      }
    }
    expect(mutants).toBeGreaterThan(30);
  }, 600_000);
});

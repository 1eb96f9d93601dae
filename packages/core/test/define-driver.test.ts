import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localTransport } from '@replikit/transport';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import type { Capabilities } from '../src/contracts/capabilities.js';
import type { Hypervisor } from '../src/contracts/hypervisor.js';
import { type DriverContext, defineDriver } from '../src/drivers/define-driver.js';
import { DriverRegistry } from '../src/engine/driver-registry.js';
import { FileStateStore } from '../src/engine/file-state-store.js';
import { ReplicationEngine } from '../src/engine/run-engine.js';
import { isReplikitError } from '../src/errors.js';
import type { EndpointSpec } from '../src/job/job-spec.js';
import { parseJob } from '../src/job/parse-job.js';
import { createMemoryDriver } from './helpers/memory-driver.js';

const caps: Capabilities = {
  methods: ['qhybrid'],
  canBeSource: true,
  canBeTarget: true,
  changeTracking: false,
  formats: ['raw'],
  restorePoints: false,
};

/** A driver `acme` whose create records what it was given. */
function acme() {
  const calls: Array<{ options: unknown; context: DriverContext }> = [];
  const definition = defineDriver({
    kind: 'acme',
    capabilities: caps,
    options: z.strictObject({ host: z.string().min(1), port: z.number().int().default(443) }),
    create: (options, context) => {
      calls.push({ options, context });
      return createMemoryDriver() as Hypervisor;
    },
  });
  return { definition, calls };
}

/** The error a promise or a function ends with. */
async function failure(work: () => unknown): Promise<unknown> {
  try {
    await work();
  } catch (error) {
    return error;
  }
  throw new Error('expected a failure');
}

describe('defineDriver', () => {
  it('gives create the typed options, defaults applied, and the side it serves', async () => {
    const { definition, calls } = acme();
    const registry = new DriverRegistry().register(definition);
    await registry.create({ driver: 'acme', vm: 'web', host: 'h1' }, { side: 'source' });
    await registry.create(
      { driver: 'acme', replicaName: 'r', host: 'h2', port: 8443 },
      { side: 'target', method: 'abd', direction: 'pull' },
    );
    expect(calls).toEqual([
      { options: { host: 'h1', port: 443 }, context: { kind: 'acme', side: 'source' } },
      {
        options: { host: 'h2', port: 8443 },
        context: { kind: 'acme', side: 'target', method: 'abd', direction: 'pull' },
      },
    ]);
    expect(Object.isFrozen(definition)).toBe(true);
  });

  it('names an unknown or wrong field of a side in one line (E_JOB), listing the fields it takes', async () => {
    const registry = new DriverRegistry().register(acme().definition);
    const unknown = await failure(() => registry.create({ driver: 'acme', vm: 'w', hots: 'h' }, { side: 'source' }));
    expect(isReplikitError(unknown, 'E_JOB')).toBe(true);
    expect((unknown as Error).message).toBe(
      "source.host: expected string, got nothing; source.hots: unknown field (driver 'acme' takes host, port)",
    );
    const wrong = await failure(() =>
      registry.parseOptions({ driver: 'acme', host: 'h', port: 1.5 }, { side: 'target' }),
    );
    expect((wrong as Error).message).toBe('target.port: expected a whole number, got number 1.5');
    expect((wrong as Error).message).not.toContain('\n');
  });

  it("refuses a target's `vm`: core owns `vm` on the source side only", () => {
    const registry = new DriverRegistry().register(acme().definition);
    expect(() =>
      registry.parseOptions({ driver: 'acme', host: 'h', vm: 'x' } as EndpointSpec, { side: 'target' }),
    ).toThrow(/^target\.vm: unknown field/);
  });

  it('says E_INPUT, not E_JOB, for options that do not come from a job (an agent)', async () => {
    const registry = new DriverRegistry().register(acme().definition);
    const error = await failure(() => registry.create({ driver: 'acme', host: '' }));
    expect(isReplikitError(error, 'E_INPUT')).toBe(true);
    expect((error as Error).message).toMatch(/^host: /);
  });

  it('takes no options when it declares none: any field is unknown', () => {
    const registry = new DriverRegistry().register(
      defineDriver({ kind: 'bare', capabilities: caps, create: () => createMemoryDriver() }),
    );
    expect(registry.parseOptions({ driver: 'bare', vm: 'w' }, { side: 'source' })).toEqual({});
    expect(() => registry.parseOptions({ driver: 'bare', vm: 'w', root: '/x' }, { side: 'source' })).toThrow(
      /^source\.root: unknown field$/,
    );
  });

  it('refuses a malformed definition, and the old (kind, factory) registration, with what to do', () => {
    expect(() => defineDriver({ kind: 'Acme', capabilities: caps, create: () => createMemoryDriver() })).toThrow(
      /lower-case/,
    );
    expect(() =>
      defineDriver({ kind: 'acme', capabilities: caps, options: {} as never, create: () => createMemoryDriver() }),
    ).toThrow(/must be a zod schema/);
    const registry = new DriverRegistry();
    expect(() => (registry.register as (...args: unknown[]) => unknown)('acme', () => createMemoryDriver())).toThrow(
      /defineDriver/,
    );
    registry.register(acme().definition);
    expect(() => registry.register(acme().definition)).toThrow(/already registered.*replace: true/);
    registry.register(acme().definition, { replace: true });
  });

  it('says no driver of a kind is registered, naming the known ones (E_NOT_FOUND)', async () => {
    const registry = new DriverRegistry().register(acme().definition);
    const error = await failure(() => registry.create({ driver: 'xen', vm: 'db' }, { side: 'source' }));
    expect(isReplikitError(error, 'E_NOT_FOUND')).toBe(true);
    expect((error as Error).message).toMatch(/'xen'.*known: acme/);
  });
});

describe('DriverRegistry.checkJob', () => {
  const job = (source: Record<string, unknown>, target: Record<string, unknown>) =>
    parseJob({ name: 'j', source: { vm: 'w', ...source }, target, method: 'qhybrid' });

  it('reports the bad fields of both sides in one line and leaves unregistered kinds to the rules', () => {
    const registry = new DriverRegistry().register(acme().definition);
    expect(() =>
      registry.checkJob(job({ driver: 'acme', host: 'h', x: 1 }, { driver: 'acme', host: 'h', y: 2 })),
    ).toThrow(/^source\.x: unknown field.*; target\.y: unknown field/);
    expect(() =>
      registry.checkJob(job({ driver: 'xen', pool: 'p', anything: true }, { driver: 'acme', host: 'h' })),
    ).not.toThrow();
  });
});

describe('ReplicationEngine with a misspelt driver field', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'replikit-define-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('stops with E_JOB naming the field before it journals a run', async () => {
    const store = new FileStateStore(join(dir, 'state'));
    const { definition, calls } = acme();
    const engine = new ReplicationEngine({
      transport: localTransport(),
      stateStore: store,
      drivers: new DriverRegistry().register(definition),
    });
    const error = await failure(() =>
      engine.run({
        name: 'typo',
        source: { driver: 'acme', vm: 'w', host: 'h', prot: 22 },
        target: { driver: 'acme', host: 'h' },
        method: 'qhybrid',
      }),
    );
    expect(isReplikitError(error, 'E_JOB')).toBe(true);
    expect((error as Error).message).toMatch(/^source\.prot: unknown field/);
    expect(await store.listRuns()).toEqual([]);
    expect(calls).toEqual([]);
  });
});

import { describe, expect, it } from 'vitest';
import type { Capabilities } from '../src/contracts/capabilities.js';
import { defineDriver } from '../src/drivers/define-driver.js';
import { DriverRegistry, driverKinds, registerDriver } from '../src/engine/driver-registry.js';
import { InputError, isReplikitError } from '../src/errors.js';
import type { JobSpecInput } from '../src/job/job-spec.js';
import { parseJob } from '../src/job/parse-job.js';
import {
  assertValid,
  BUILTIN_DRIVER_KINDS,
  defaultRuleSets,
  formatViolations,
  type Rule,
  type RuleSet,
  seedRules,
  type ValidateJobOptions,
  validateJob,
} from '../src/rules/index.js';

type JobOverrides = Omit<Partial<JobSpecInput>, 'source' | 'target'> & {
  source?: Partial<JobSpecInput['source']>;
  target?: Partial<JobSpecInput['target']>;
};

/** A valid Xen ► Xen qhybrid job in two pools, changed by `overrides`. */
function job(overrides: JobOverrides = {}) {
  return parseJob({
    name: 'web-nightly',
    method: 'qhybrid',
    ...overrides,
    source: { driver: 'xen', pool: 'pool-a', vm: 'web01', sr: 'sr-a', ...overrides.source },
    target: { driver: 'xen', pool: 'pool-b', sr: 'sr-b', abd: { ips: ['10.0.0.5'] }, ...overrides.target },
  });
}

/** The messages of the violations of one rule. */
function messagesOf(ruleId: string, spec: ReturnType<typeof job>, options?: ValidateJobOptions): string[] {
  return validateJob(spec, options)
    .violations.filter((violation) => violation.ruleId === ruleId)
    .map((violation) => violation.message);
}

const vmware: Capabilities = {
  methods: ['qhybrid'],
  canBeSource: true,
  canBeTarget: false,
  changeTracking: true,
  formats: ['vmdk'],
  restorePoints: false,
};

/** A driver of `kind` that only declares its capabilities (these tests never create it). */
function declared(kind: string, capabilities: Capabilities) {
  return defineDriver({
    kind,
    capabilities,
    create: () => {
      throw new Error(`the '${kind}' driver is only declared here`);
    },
  });
}

describe('driver kinds', () => {
  it('declares xen, hyperv and file', () => {
    expect(BUILTIN_DRIVER_KINDS.get('xen')?.methods).toEqual(['xva', 'abd', 'qhybrid', 'cbt']);
    expect(BUILTIN_DRIVER_KINDS.get('hyperv')).toMatchObject({ methods: ['qhybrid', 'cbt'], formats: ['vhdx', 'vhd'] });
    expect(BUILTIN_DRIVER_KINDS.get('file')).toMatchObject({ methods: ['qhybrid'], changeTracking: true });
  });

  it("judges with a registered driver's capabilities, in place of its kind's built-in row", () => {
    const registry = new DriverRegistry().register(declared('vmware', vmware));
    expect(registry.capabilities().get('vmware')?.formats).toEqual(['vmdk']);
    expect(() => registry.register(declared('vmware', vmware))).toThrow(/already registered.*replace: true/);
    registry.register(declared('xen', vmware));
    expect(registry.capabilities().get('xen')?.methods).toEqual(['qhybrid']);
    expect(BUILTIN_DRIVER_KINDS.get('xen')?.methods).toHaveLength(4);
    expect(new DriverRegistry().capabilities()).toEqual(BUILTIN_DRIVER_KINDS);
  });

  it('rejects a bad kind name or malformed capabilities', () => {
    expect(() => declared('VMware', vmware)).toThrow(InputError);
    const bad = { ...vmware, methods: 'qhybrid', canBeTarget: 'no' } as unknown as Capabilities;
    expect(() => declared('vmware', bad)).toThrow(/methods must be a list.*canBeTarget must be true or false/);
  });

  it('keeps registered drivers in the process-wide registry used by default', () => {
    registerDriver(declared('test-kind', vmware));
    expect(driverKinds().get('test-kind')).toEqual(vmware);
    const spec = job({ source: { driver: 'test-kind' }, target: { driver: 'file' } });
    expect(messagesOf('unknown-driver-kind', spec)).toEqual([]);
  });
});

describe('seed rules', () => {
  describe('xen-target-needs-abd', () => {
    it('fails a Xen target without target.abd', () => {
      expect(messagesOf('xen-target-needs-abd', job({ target: { abd: undefined } }))).toEqual([
        "the target is 'xen' (pool 'pool-b') but the job has no target.abd section, so no ABD can write the replica",
      ]);
    });
    it('passes with target.abd, or with a source ABD in the same pool', () => {
      expect(messagesOf('xen-target-needs-abd', job())).toEqual([]);
      const shared = job({ source: { pool: 'pool-b', abd: { ips: ['10.0.0.9'] } }, target: { abd: undefined } });
      expect(messagesOf('xen-target-needs-abd', shared)).toEqual([]);
    });
  });

  describe('xen-to-hyperv-needs-qhybrid', () => {
    it('fails Xen ► Hyper-V with cbt', () => {
      expect(messagesOf('xen-to-hyperv-needs-qhybrid', job({ method: 'cbt', target: { driver: 'hyperv' } }))).toEqual([
        "XenServer ► Hyper-V works only with method 'qhybrid', but the job's method is 'cbt'",
      ]);
    });
    it('passes Xen ► Hyper-V with qhybrid', () => {
      expect(messagesOf('xen-to-hyperv-needs-qhybrid', job({ target: { driver: 'hyperv' } }))).toEqual([]);
    });
  });

  describe('xva-abd-xen-only', () => {
    it('names every side that is not XenServer', () => {
      const spec = job({ method: 'xva', source: { driver: 'file' }, target: { driver: 'hyperv' } });
      expect(messagesOf('xva-abd-xen-only', spec)).toEqual([
        "method 'xva' needs XenServer on both sides, but the source is 'file' and the target is 'hyperv'",
      ]);
    });
    it('passes abd on Xen ► Xen and qhybrid anywhere', () => {
      expect(messagesOf('xva-abd-xen-only', job({ method: 'abd' }))).toEqual([]);
      expect(messagesOf('xva-abd-xen-only', job({ target: { driver: 'file' } }))).toEqual([]);
    });
  });

  describe('method-locked', () => {
    it('fails when earlier runs used another method', () => {
      expect(messagesOf('method-locked', job({ method: 'cbt' }), { history: { method: 'qhybrid' } })).toEqual([
        "earlier runs of job 'web-nightly' used method 'qhybrid', but its method is now 'cbt'",
      ]);
    });
    it('passes with the same method or no history', () => {
      expect(messagesOf('method-locked', job(), { history: { method: 'qhybrid' } })).toEqual([]);
      expect(messagesOf('method-locked', job(), { history: {} })).toEqual([]);
    });
  });

  describe('cbt-exclusive', () => {
    const cbt = job({ name: 'web-cbt', method: 'cbt' });

    it('fails a cbt job next to a regular job of the same source VM', () => {
      const regular = job({ name: 'web-hourly', target: { pool: 'pool-c' } });
      expect(messagesOf('cbt-exclusive', cbt, { otherJobs: [regular] })).toEqual([
        "job 'web-cbt' (method 'cbt') and job 'web-hourly' (method 'qhybrid') both replicate source VM 'web01' on 'xen' (pool 'pool-a')",
      ]);
    });
    it('fails a regular job writing the replica of a cbt job, named by default', () => {
      const regular = job({ name: 'db-into-web', source: { vm: 'db01' }, target: { replicaName: 'web01-replica' } });
      expect(messagesOf('cbt-exclusive', regular, { otherJobs: [cbt] })).toEqual([
        "job 'db-into-web' (method 'qhybrid') and job 'web-cbt' (method 'cbt') both replicate replica 'web01-replica' on 'xen' (pool 'pool-b')",
      ]);
    });
    it('passes for other VMs, other pools, two cbt jobs, and the job itself', () => {
      const otherVm = job({ name: 'db', source: { vm: 'db01' } });
      const otherPool = job({ name: 'web-elsewhere', source: { pool: 'pool-z' }, target: { pool: 'pool-y' } });
      const secondCbt = job({ name: 'web-cbt-2', method: 'cbt' });
      const itself = job({ name: 'web-cbt', method: 'qhybrid' });
      expect(messagesOf('cbt-exclusive', cbt, { otherJobs: [otherVm, otherPool, secondCbt, itself] })).toEqual([]);
    });
  });

  describe('single-pass-not-cbt', () => {
    it('fails single-pass on a cbt job', () => {
      expect(messagesOf('single-pass-not-cbt', job({ method: 'cbt', options: { singlePass: true } }))).toEqual([
        "options.singlePass is true, but method 'cbt' cannot record a backup version in the same pass",
      ]);
    });
    it('passes single-pass on qhybrid', () => {
      expect(messagesOf('single-pass-not-cbt', job({ options: { singlePass: true } }))).toEqual([]);
    });
  });

  describe('pull-abd-only', () => {
    it('fails pull on qhybrid', () => {
      expect(messagesOf('pull-abd-only', job({ options: { direction: 'pull' } }))).toEqual([
        "options.direction is 'pull', but only method 'abd' can pull and the job's method is 'qhybrid'",
      ]);
    });
    it('passes pull on abd', () => {
      expect(messagesOf('pull-abd-only', job({ method: 'abd', options: { direction: 'pull' } }))).toEqual([]);
    });
  });

  describe('cache-ignored-for-pull', () => {
    it('warns when a pull job sets the replication cache', () => {
      const spec = job({ method: 'abd', options: { direction: 'pull', replicationCache: true } });
      const result = validateJob(spec, { facts: {} });
      expect(result.violations.find((v) => v.ruleId === 'cache-ignored-for-pull')).toMatchObject({
        severity: 'warning',
        message: "options.replicationCache is true, but it is ignored because options.direction is 'pull'",
      });
    });
    it('passes the cache on a push job', () => {
      expect(messagesOf('cache-ignored-for-pull', job({ options: { replicationCache: true } }))).toEqual([]);
    });
  });

  describe('xva-needs-staging', () => {
    const xva = job({ method: 'xva' });
    it('fails when the staging store has less free space than the VM', () => {
      const facts = { vmSizeBytes: 40 * 1024 ** 3, stagingFreeBytes: 12 * 1024 ** 3 };
      expect(messagesOf('xva-needs-staging', xva, { facts })).toEqual([
        "method 'xva' stages the whole VM 'web01' (40.0 GiB) each run, but the staging data store has only 12.0 GiB free",
      ]);
    });
    it('passes with enough space, or when the facts are missing', () => {
      expect(messagesOf('xva-needs-staging', xva, { facts: { vmSizeBytes: 10, stagingFreeBytes: 10 } })).toEqual([]);
      expect(messagesOf('xva-needs-staging', xva, { facts: { vmSizeBytes: 10 } })).toEqual([]);
      expect(messagesOf('xva-needs-staging', xva)).toEqual([]);
    });
  });

  describe('abd-needs-ip', () => {
    it('fails each abd section without an address', () => {
      const spec = job({ method: 'abd', source: { abd: {} }, target: { abd: { ips: [] } } });
      expect(messagesOf('abd-needs-ip', spec)).toEqual([
        'source.abd.ips is empty, so the source ABD would have no address',
        'target.abd.ips is empty, so the target ABD would have no address',
      ]);
    });
    it('passes with an address or dhcp', () => {
      expect(messagesOf('abd-needs-ip', job({ source: { abd: { ips: ['dhcp'] } } }))).toEqual([]);
    });
  });

  describe('abd-sees-srs', () => {
    it('fails when the job lists SRs the ABD sees and its side SR is not among them', () => {
      const spec = job({ target: { abd: { ips: ['10.0.0.5'], srs: ['sr-x', 'sr-y'] } } });
      expect(messagesOf('abd-sees-srs', spec)).toEqual([
        "the target ABD sees only 'sr-x', 'sr-y' (per target.abd.srs), not 'sr-b' (target.sr)",
      ]);
    });
    it('prefers the environment facts over the job', () => {
      const spec = job({ target: { abd: { ips: ['10.0.0.5'], srs: ['sr-b'] } } });
      const facts = { abdVisibleSrs: { target: [] } };
      expect(messagesOf('abd-sees-srs', spec, { facts })).toEqual([
        "the target ABD sees no SR (as the environment reports), not 'sr-b' (target.sr)",
      ]);
    });
    it('asks a shared ABD in one pool to see both SRs', () => {
      const spec = job({
        method: 'abd',
        source: { pool: 'pool-b' },
        target: { abd: { ips: ['dhcp'], srs: ['sr-b'] } },
      });
      expect(messagesOf('abd-sees-srs', spec)).toEqual([
        "the target ABD sees only 'sr-b' (per target.abd.srs), not 'sr-a' (source.sr)",
      ]);
    });
    it('fails when hosts do not see the SR of the ABD image', () => {
      const spec = job({ target: { abd: { ips: ['10.0.0.5'], imageSr: 'local-sr' } } });
      expect(messagesOf('abd-sees-srs', spec, { facts: { hostsSeeAbdImageSr: { target: false } } })).toEqual([
        "not every host of the target pool sees the SR holding the target ABD's image ('local-sr', target.abd.imageSr)",
      ]);
    });
    it('passes when the ABDs see their SRs, and when nothing is known', () => {
      const spec = job({ method: 'abd', source: { abd: { ips: ['10.0.0.4'], srs: ['sr-a'] } } });
      const facts = { abdVisibleSrs: { target: ['sr-b', 'sr-c'] }, hostsSeeAbdImageSr: { source: true } };
      expect(messagesOf('abd-sees-srs', spec, { facts })).toEqual([]);
      expect(messagesOf('abd-sees-srs', job())).toEqual([]);
    });
  });

  describe('one-abd-same-pool', () => {
    it('informs when both sides are in one Xen pool', () => {
      const result = validateJob(job({ target: { pool: 'pool-a' } }));
      expect(result.violations).toEqual([
        {
          ruleId: 'one-abd-same-pool',
          severity: 'info',
          message: "source and target are both in XenServer pool 'pool-a', so one ABD can serve both sides",
          fix: expect.stringContaining('target.abd'),
        },
      ]);
      expect(result.ok).toBe(true);
    });
    it('stays silent for two pools or an unnamed pool', () => {
      expect(messagesOf('one-abd-same-pool', job())).toEqual([]);
      expect(
        messagesOf('one-abd-same-pool', job({ source: { pool: undefined }, target: { pool: undefined } })),
      ).toEqual([]);
    });
  });

  describe('unknown-driver-kind', () => {
    it('warns about a kind nobody registered', () => {
      const kinds = new DriverRegistry().capabilities();
      expect(messagesOf('unknown-driver-kind', job({ source: { driver: 'vmware' } }), { kinds })).toEqual([
        "source.driver 'vmware' is not a known driver kind (known: 'file', 'hyperv', 'xen')",
      ]);
    });
    it('passes known kinds', () => {
      expect(messagesOf('unknown-driver-kind', job({ target: { driver: 'file' } }))).toEqual([]);
    });
  });

  describe('method-supported', () => {
    it('fails a method or a role the kind does not offer', () => {
      const registry = new DriverRegistry().register(declared('vmware', vmware));
      const spec = job({ method: 'cbt', source: { driver: 'file' }, target: { driver: 'vmware' } });
      expect(messagesOf('method-supported', spec, { kinds: registry.capabilities() })).toEqual([
        "the source driver 'file' does not support method 'cbt' (it supports 'qhybrid')",
        "driver 'vmware' cannot be a replication target",
        "the target driver 'vmware' does not support method 'cbt' (it supports 'qhybrid')",
      ]);
    });
    it('passes cbt (RCT) on Hyper-V and skips unknown kinds', () => {
      expect(messagesOf('method-supported', job({ method: 'cbt', source: { driver: 'hyperv' } }))).toEqual([]);
      expect(messagesOf('method-supported', job({ method: 'cbt', source: { driver: 'vmware' } }))).toEqual([]);
    });
  });

  it('has one description and one fix sentence per rule', () => {
    for (const rule of seedRules.rules) {
      expect(rule.description).toMatch(/^[A-Z].*\.$/);
      expect(rule.fix).toMatch(/^[A-Z].*\.$/);
    }
  });
});

describe('validateJob', () => {
  it('passes a well-formed job with no violation', () => {
    expect(validateJob(job())).toEqual({ ok: true, violations: [] });
  });

  it('lists all three rules a Xen ► Hyper-V abd job breaks, with ids and fixes', () => {
    const result = validateJob(job({ method: 'abd', target: { driver: 'hyperv', abd: undefined } }));
    expect(result.ok).toBe(false);
    expect(result.violations.map((v) => v.ruleId)).toEqual([
      'xen-to-hyperv-needs-qhybrid',
      'xva-abd-xen-only',
      'method-supported',
    ]);
    expect(result.violations[1]?.message).toBe(
      "method 'abd' needs XenServer on both sides, but the target is 'hyperv'",
    );
    for (const violation of result.violations) expect(violation.fix).not.toBe('');
  });

  it('orders errors, then warnings, then info, keeping rule order within a severity', () => {
    const spec = job({
      method: 'cbt',
      source: { pool: 'pool-b', driver: 'xen' },
      target: { pool: 'pool-b' },
      options: { direction: 'pull', replicationCache: true, singlePass: true },
    });
    const result = validateJob(spec);
    expect(result.violations.map((v) => `${v.severity} ${v.ruleId}`)).toEqual([
      'error single-pass-not-cbt',
      'error pull-abd-only',
      'warning cache-ignored-for-pull',
      'info one-abd-same-pool',
    ]);
  });

  it('applies extra rule sets after the defaults', () => {
    const driverRules: RuleSet = {
      name: 'xen',
      rules: [
        {
          id: 'xen-no-raw-sr',
          severity: 'error',
          description: 'The target SR must not be raw.',
          fix: 'Set target.sr to another SR.',
          check: ({ job }) => (job.target.sr === 'sr-b' ? `target.sr '${job.target.sr}' is raw` : undefined),
        },
      ],
    };
    const result = validateJob(job({ options: { singlePass: true } }), {
      ruleSets: [...defaultRuleSets(), driverRules],
    });
    expect(result.violations).toEqual([
      {
        ruleId: 'xen-no-raw-sr',
        severity: 'error',
        message: "target.sr 'sr-b' is raw",
        fix: 'Set target.sr to another SR.',
      },
    ]);
    expect(validateJob(job(), { ruleSets: [driverRules] }).violations).toHaveLength(1);
  });

  it('refuses two rules with one id', () => {
    const copy: RuleSet = { name: 'copy', rules: [seedRules.rules[0]!] };
    expect(() => validateJob(job(), { ruleSets: [seedRules, copy] })).toThrow(
      /rule id 'xen-target-needs-abd' appears in rule set 'seed' and again in 'copy'/,
    );
    expect(() => validateJob(job(), { ruleSets: [seedRules, copy] })).toThrow(InputError);
  });

  it('reports a crashing rule as an error and still runs the others', () => {
    const crashing: Rule = {
      id: 'crashes',
      severity: 'warning',
      description: 'Always throws.',
      fix: 'Nothing.',
      check: () => {
        throw new Error('boom');
      },
    };
    const returnsNonsense = { ...crashing, id: 'nonsense', check: () => 42 } as unknown as Rule;
    const result = validateJob(job({ options: { direction: 'pull' } }), {
      ruleSets: [seedRules, { name: 'broken', rules: [crashing, returnsNonsense] }],
    });
    expect(result.ok).toBe(false);
    expect(result.violations.map((v) => v.ruleId)).toEqual([
      'pull-abd-only',
      'rule-crashed:crashes',
      'rule-crashed:nonsense',
    ]);
    expect(result.violations[1]?.message).toBe(
      "rule 'crashes' of rule set 'broken' failed, so the job was not fully checked: boom",
    );
  });
});

describe('formatViolations and assertValid', () => {
  const broken = job({ method: 'xva', target: { driver: 'file' }, options: { direction: 'pull' } });

  it('formats two lines per violation', () => {
    const text = formatViolations(validateJob(job({ method: 'xva', target: { driver: 'file' } })).violations);
    expect(text.split('\n')).toEqual([
      "error   xva-abd-xen-only: method 'xva' needs XenServer on both sides, but the target is 'file'",
      `        fix: Set method to 'qhybrid', or make both source.driver and target.driver 'xen'.`,
      "error   method-supported: the target driver 'file' does not support method 'xva' (it supports 'qhybrid')",
      '        fix: Set method to one both drivers support, or change source.driver / target.driver.',
    ]);
    expect(formatViolations([])).toBe('');
  });

  it('throws E_RULE listing the errors, with every violation in details', () => {
    const result = validateJob(broken);
    let thrown: unknown;
    try {
      assertValid(result);
    } catch (error) {
      thrown = error;
    }
    expect(isReplikitError(thrown, 'E_RULE')).toBe(true);
    const error = thrown as Error & { details: Record<string, unknown> };
    expect(error.message).toMatch(/^the job breaks 3 rules:\nerror {3}xva-abd-xen-only: /);
    expect(error.message).toContain('pull-abd-only');
    expect(error.details.violations).toEqual(result.violations);
  });

  it('does not throw for warnings and info', () => {
    expect(() => assertValid(validateJob(job({ target: { pool: 'pool-a' } })))).not.toThrow();
  });
});

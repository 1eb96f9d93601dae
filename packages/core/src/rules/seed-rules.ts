import { type EndpointSpec, type JobSpec, replicaNameOf } from '../job/job-spec.js';
import { formatBytes } from '../util/sizes.js';
import { abdOf, poolOf, srOf } from './platform-fields.js';
import type { Rule, RuleSet } from './rule.js';

type Side = 'source' | 'target';
const SIDES: readonly Side[] = ['source', 'target'];

function quoted(values: readonly string[]): string {
  return values.map((value) => `'${value}'`).join(', ');
}

/** `'xen' (pool 'p1')`, or just `'xen'` when the endpoint names no pool. */
function placeOf(endpoint: EndpointSpec): string {
  const pool = poolOf(endpoint);
  return pool === undefined ? `'${endpoint.driver}'` : `'${endpoint.driver}' (pool '${pool}')`;
}

/** The pool both sides share when both are XenServer and name the same pool. */
function sharedXenPool(job: JobSpec): string | undefined {
  const { source, target } = job;
  const bothXen = source.driver === 'xen' && target.driver === 'xen';
  const pool = poolOf(source);
  return bothXen && pool !== undefined && pool === poolOf(target) ? pool : undefined;
}

/** Whether a side needs an ABD: a Xen target always, a Xen source when the method is `abd`. */
function needsAbd(job: JobSpec, side: Side): boolean {
  return job[side].driver === 'xen' && (side === 'target' || job.method === 'abd');
}

/** Whether the two `abd` sections name the same appliance: they share an address other than `dhcp`. */
function sameAppliance(job: JobSpec): boolean {
  const sourceIps = new Set(abdOf(job.source)?.ips.filter((ip) => ip !== 'dhcp'));
  return abdOf(job.target)?.ips.some((ip) => sourceIps.has(ip)) ?? false;
}

/**
 * For each side that declares an `abd` section, the sides its ABD serves. Its own side always;
 * in a shared Xen pool also the other side, when that side needs an ABD and declares none, or when
 * both sections name the same appliance.
 */
function abdServes(job: JobSpec): Map<Side, Side[]> {
  const serves = new Map<Side, Side[]>();
  for (const side of SIDES) if (abdOf(job[side])) serves.set(side, [side]);
  if (sharedXenPool(job) === undefined) return serves;
  for (const [side, served] of serves) {
    const other: Side = side === 'source' ? 'target' : 'source';
    const otherNeedsThisOne = abdOf(job[other]) === undefined && needsAbd(job, other);
    if (otherNeedsThisOne || sameAppliance(job)) served.push(other);
  }
  return serves;
}

const xenTargetNeedsAbd: Rule = {
  id: 'xen-target-needs-abd',
  severity: 'error',
  description: 'A XenServer destination always needs an ABD deployed on its pool.',
  fix: 'Add a target.abd section (with at least one address in target.abd.ips) so an ABD can be deployed on the target pool.',
  check({ job }) {
    if (job.target.driver !== 'xen' || abdOf(job.target)) return undefined;
    if (sharedXenPool(job) !== undefined && abdOf(job.source)) return undefined;
    return `the target is ${placeOf(job.target)} but the job has no target.abd section, so no ABD can write the replica`;
  },
};

const xenToHypervNeedsQhybrid: Rule = {
  id: 'xen-to-hyperv-needs-qhybrid',
  severity: 'error',
  description: 'Replication from XenServer to Hyper-V works only with the Q-Hybrid method.',
  fix: "Set method to 'qhybrid'.",
  check({ job }) {
    if (job.source.driver !== 'xen' || job.target.driver !== 'hyperv' || job.method === 'qhybrid') return undefined;
    return `XenServer ► Hyper-V works only with method 'qhybrid', but the job's method is '${job.method}'`;
  },
};

const xvaAbdXenOnly: Rule = {
  id: 'xva-abd-xen-only',
  severity: 'error',
  description: 'The XVA and ABD methods need XenServer on both sides; Q-Hybrid works on every kind.',
  fix: "Set method to 'qhybrid', or make both source.driver and target.driver 'xen'.",
  check({ job }) {
    if (job.method !== 'xva' && job.method !== 'abd') return undefined;
    const others = SIDES.filter((side) => job[side].driver !== 'xen');
    if (others.length === 0) return undefined;
    const what = others.map((side) => `the ${side} is '${job[side].driver}'`).join(' and ');
    return `method '${job.method}' needs XenServer on both sides, but ${what}`;
  },
};

const methodLocked: Rule = {
  id: 'method-locked',
  severity: 'error',
  description: 'A job cannot switch replication method between runs.',
  fix: 'Set method back to the one earlier runs used, or give the job a new name to seed a new replica with the new method.',
  check({ job, history }) {
    if (history?.method === undefined || history.method === job.method) return undefined;
    return `earlier runs of job '${job.name}' used method '${history.method}', but its method is now '${job.method}'`;
  },
};

function sameSourceVm(a: JobSpec, b: JobSpec): boolean {
  return a.source.driver === b.source.driver && poolOf(a.source) === poolOf(b.source) && a.source.vm === b.source.vm;
}

function sameReplica(a: JobSpec, b: JobSpec): boolean {
  const sameTarget = a.target.driver === b.target.driver && poolOf(a.target) === poolOf(b.target);
  return sameTarget && replicaNameOf(a) === replicaNameOf(b);
}

/**
 * Reading of the specification ("a CBT job is incompatible with regular replication of the same
 * VM/replica"): two jobs clash when exactly one of them uses `cbt` and they share the source VM
 * (same source driver, pool and VM) or the replica (same target driver, pool and replica name).
 * A job listed among `otherJobs` under the job's own name is the job itself and is skipped. Two
 * CBT jobs, or two regular jobs, on one VM are not this rule's concern. Pools compare strictly: a
 * job that names no pool matches only another job that names none.
 */
const cbtExclusive: Rule = {
  id: 'cbt-exclusive',
  severity: 'error',
  description: 'A CBT job is incompatible with regular replication of the same VM or replica.',
  fix: "Give the jobs different source.vm or target.replicaName values, or make both jobs use method 'cbt', or neither.",
  check({ job, otherJobs = [] }) {
    const messages: string[] = [];
    for (const other of otherJobs) {
      if (other.name === job.name || (job.method === 'cbt') === (other.method === 'cbt')) continue;
      const shared = [
        sameSourceVm(job, other) && `source VM '${job.source.vm}' on ${placeOf(job.source)}`,
        sameReplica(job, other) && `replica '${replicaNameOf(job)}' on ${placeOf(job.target)}`,
      ].filter((what): what is string => typeof what === 'string');
      if (shared.length === 0) continue;
      messages.push(
        `job '${job.name}' (method '${job.method}') and job '${other.name}' (method '${other.method}') ` +
          `both replicate ${shared.join(' and ')}`,
      );
    }
    return messages;
  },
};

const singlePassNotCbt: Rule = {
  id: 'single-pass-not-cbt',
  severity: 'error',
  description: 'Single-pass backup and replication is not available for CBT jobs.',
  fix: "Set options.singlePass to false, or use method 'qhybrid'.",
  check({ job }) {
    if (job.method !== 'cbt' || !job.options.singlePass) return undefined;
    return "options.singlePass is true, but method 'cbt' cannot record a backup version in the same pass";
  },
};

const pullAbdOnly: Rule = {
  id: 'pull-abd-only',
  severity: 'error',
  description: 'The pull direction exists only for ABD jobs; push is the default.',
  fix: "Set options.direction to 'push' (or remove it), or use method 'abd'.",
  check({ job }) {
    if (job.options.direction !== 'pull' || job.method === 'abd') return undefined;
    return `options.direction is 'pull', but only method 'abd' can pull and the job's method is '${job.method}'`;
  },
};

const cacheIgnoredForPull: Rule = {
  id: 'cache-ignored-for-pull',
  severity: 'warning',
  description: 'The replication cache option has no effect on pull jobs.',
  fix: "Remove options.replicationCache (or set it to false), or set options.direction to 'push'.",
  check({ job }) {
    if (job.options.direction !== 'pull' || !job.options.replicationCache) return undefined;
    return "options.replicationCache is true, but it is ignored because options.direction is 'pull'";
  },
};

const pullNeedsDriverSupport: Rule = {
  id: 'pull-needs-driver-support',
  severity: 'error',
  description: 'A pull job needs a target driver that can pull a disk itself and a source driver that can serve one.',
  fix: "Set options.direction to 'push' (or remove it), or use drivers that can pull (xen on both sides, with an abd section).",
  check({ job, facts }) {
    if (job.options.direction !== 'pull') return undefined;
    const messages: string[] = [];
    if (facts?.pullSupport?.target === false) {
      messages.push(`options.direction is 'pull', but the target driver '${job.target.driver}' cannot pull a disk`);
    }
    if (facts?.pullSupport?.source === false) {
      messages.push(`options.direction is 'pull', but the source driver '${job.source.driver}' cannot serve a pull`);
    }
    return messages;
  },
};

const xvaNeedsStaging: Rule = {
  id: 'xva-needs-staging',
  severity: 'error',
  description: 'XVA transfers the whole VM each run and needs as much temporary space in the data store.',
  fix: "Free space in the staging data store (at least the VM's size), or set method to 'qhybrid', which needs no staging.",
  check({ job, facts }) {
    const size = facts?.vmSizeBytes;
    const free = facts?.stagingFreeBytes;
    if (job.method !== 'xva' || size === undefined || free === undefined || free >= size) return undefined;
    return (
      `method 'xva' stages the whole VM '${job.source.vm}' (${formatBytes(size)}) each run, ` +
      `but the staging data store has only ${formatBytes(free)} free`
    );
  },
};

const abdNeedsIp: Rule = {
  id: 'abd-needs-ip',
  severity: 'error',
  description: 'Every deployed ABD needs at least one IP address.',
  fix: "Add an address (or 'dhcp') to the ips list of every abd section (source.abd.ips, target.abd.ips).",
  check({ job }) {
    return SIDES.filter((side) => abdOf(job[side])?.ips.length === 0).map(
      (side) => `${side}.abd.ips is empty, so the ${side} ABD would have no address`,
    );
  },
};

/**
 * Reading of the specification ("ABDs must see every SR involved; hosts must see the SR holding the
 * ABD image"): each declared ABD must see the SR (`sr`) of every side it serves — its own side, and
 * in a shared Xen pool also the other side (see {@link abdServes}). What it sees comes from
 * `facts.abdVisibleSrs[side]` when given, else from the job's `abd.srs`; when neither is known, or
 * a side names no `sr`, there is nothing to check. Separately, `facts.hostsSeeAbdImageSr[side] ===
 * false` is a violation.
 */
const abdSeesSrs: Rule = {
  id: 'abd-sees-srs',
  severity: 'error',
  description: 'ABDs must see every SR involved, and every host must see the SR holding the ABD image.',
  fix: 'Deploy the ABD where it sees every SR of the job (list them in source.abd.srs / target.abd.srs), or move abd.imageSr to a shared SR.',
  check({ job, facts }) {
    const messages: string[] = [];
    for (const [side, served] of abdServes(job)) {
      const fromFacts = facts?.abdVisibleSrs?.[side];
      const visible = fromFacts ?? abdOf(job[side])?.srs;
      if (visible === undefined) continue;
      const missing = served.flatMap((s) => {
        const sr = srOf(job[s]);
        return sr === undefined || visible.includes(sr) ? [] : [`'${sr}' (${s}.sr)`];
      });
      if (missing.length === 0) continue;
      const sees = visible.length === 0 ? 'no SR' : `only ${quoted(visible)}`;
      const origin = fromFacts ? 'as the environment reports' : `per ${side}.abd.srs`;
      messages.push(`the ${side} ABD sees ${sees} (${origin}), not ${missing.join(' nor ')}`);
    }
    for (const side of SIDES) {
      if (facts?.hostsSeeAbdImageSr?.[side] !== false) continue;
      const imageSr = abdOf(job[side])?.imageSr;
      const which = imageSr === undefined ? '' : ` ('${imageSr}', ${side}.abd.imageSr)`;
      messages.push(`not every host of the ${side} pool sees the SR holding the ${side} ABD's image${which}`);
    }
    return messages;
  },
};

const oneAbdSamePool: Rule = {
  id: 'one-abd-same-pool',
  severity: 'info',
  description: 'Source and destination in one XenServer pool may share one ABD.',
  fix: 'Declare a single ABD in target.abd and leave out source.abd (or give both the same ips).',
  check({ job }) {
    const pool = sharedXenPool(job);
    if (pool === undefined) return undefined;
    return `source and target are both in XenServer pool '${pool}', so one ABD can serve both sides`;
  },
};

const unknownDriverKind: Rule = {
  id: 'unknown-driver-kind',
  severity: 'warning',
  description: "A side names a driver kind core does not know, so only that driver's own rules can check it.",
  fix: 'Check source.driver and target.driver for a typo, or load the driver package that registers the kind.',
  check({ job, kinds }) {
    const known = quoted([...kinds.keys()].sort());
    return SIDES.filter((side) => !kinds.has(job[side].driver)).map(
      (side) => `${side}.driver '${job[side].driver}' is not a known driver kind (known: ${known})`,
    );
  },
};

const methodSupported: Rule = {
  id: 'method-supported',
  severity: 'error',
  description:
    'Each side must support the method, the source kind must be able to be a source and the target kind a target.',
  fix: 'Set method to one both drivers support, or change source.driver / target.driver.',
  check({ job, kinds }) {
    const messages: string[] = [];
    for (const side of SIDES) {
      const kind = job[side].driver;
      const capabilities = kinds.get(kind);
      if (capabilities === undefined) continue;
      const canPlay = side === 'source' ? capabilities.canBeSource : capabilities.canBeTarget;
      if (!canPlay) messages.push(`driver '${kind}' cannot be a replication ${side}`);
      if (!capabilities.methods.includes(job.method)) {
        const supported = capabilities.methods.length === 0 ? 'none' : quoted(capabilities.methods);
        messages.push(
          `the ${side} driver '${kind}' does not support method '${job.method}' (it supports ${supported})`,
        );
      }
    }
    return messages;
  },
};

/**
 * The seed rule set (`seed`): every rule of the product's specification, plus `unknown-driver-kind`
 * and `method-supported`, which judge a job against the declared driver capabilities.
 */
export const seedRules: RuleSet = {
  name: 'seed',
  rules: [
    xenTargetNeedsAbd,
    xenToHypervNeedsQhybrid,
    xvaAbdXenOnly,
    methodLocked,
    cbtExclusive,
    singlePassNotCbt,
    pullAbdOnly,
    cacheIgnoredForPull,
    pullNeedsDriverSupport,
    xvaNeedsStaging,
    abdNeedsIp,
    abdSeesSrs,
    oneAbdSamePool,
    unknownDriverKind,
    methodSupported,
  ],
};

import type { Capabilities } from '../contracts/capabilities.js';
import type { JobSpec } from '../job/job-spec.js';

/** How bad a violation is: `error` stops the run, `warning` and `info` are reported. */
export type Severity = 'error' | 'warning' | 'info';

/**
 * Facts about the environment that some rules need and that only drivers can discover (free
 * space, what a delegate can see). Offline validation has none: rules that need a missing fact
 * pass.
 */
export interface EnvironmentFacts {
  /** Total virtual size of the source VM's disks, in bytes. */
  vmSizeBytes?: number;
  /** Free bytes in the data store used for XVA staging. */
  stagingFreeBytes?: number;
  /** Per side, the SRs its delegate appliance (ABD) can see. */
  abdVisibleSrs?: { source?: readonly string[]; target?: readonly string[] };
  /** Per side, whether every host of the pool sees the SR holding the ABD image. */
  hostsSeeAbdImageSr?: { source?: boolean; target?: boolean };
  /**
   * Per side, whether its driver can take part in a pull job (the source's `pullSource` hook, the
   * target's `pullDiskFrom` hook). The engine gives it for pull jobs.
   */
  pullSupport?: { source?: boolean; target?: boolean };
}

/** Everything a rule may look at. */
export interface RuleContext {
  /** The job being judged. */
  job: JobSpec;
  /** Capabilities of the known driver kinds, by kind name. */
  kinds: ReadonlyMap<string, Capabilities>;
  /** What earlier runs of this job recorded, when any ran. */
  history?: { method?: string };
  /** Other jobs known to the caller (for rules about two jobs on one VM). */
  otherJobs?: readonly JobSpec[];
  /** Environment facts, when drivers could discover them. */
  facts?: EnvironmentFacts;
}

/** A rule: data plus a predicate. */
export interface Rule {
  /** Stable id, kebab-case: `xen-target-needs-abd`. */
  id: string;
  /** Severity of a violation. */
  severity: Severity;
  /** What the rule says, in one sentence. */
  description: string;
  /** How to fix a violation, in one sentence. */
  fix: string;
  /**
   * Returns `undefined` when the job passes, or a message (or messages, one per violation)
   * describing how this job breaks the rule.
   */
  check(context: RuleContext): string | readonly string[] | undefined;
}

/** A named group of rules; drivers add their own sets. */
export interface RuleSet {
  /** Name for reports: `seed`, `xen`, … */
  name: string;
  /** The rules, evaluated in order. */
  rules: readonly Rule[];
}

/** One broken rule. */
export interface Violation {
  /** The rule's id. */
  ruleId: string;
  /** The rule's severity. */
  severity: Severity;
  /** How this job breaks it. */
  message: string;
  /** How to fix it. */
  fix: string;
}

import type { Capabilities } from '../contracts/capabilities.js';
import { driverKinds } from '../engine/driver-registry.js';
import { InputError, RuleError } from '../errors.js';
import type { JobSpec } from '../job/job-spec.js';
import type { Rule, RuleContext, RuleSet, Severity, Violation } from './rule.js';
import { seedRules } from './seed-rules.js';

/** Options of {@link validateJob}. */
export interface ValidateJobOptions {
  /**
   * The rule sets to apply, in order. This replaces the default; to add a driver's rules, pass
   * `[...defaultRuleSets(), driverRules]`.
   * @default defaultRuleSets()
   */
  ruleSets?: readonly RuleSet[];
  /**
   * Capabilities of the known driver kinds.
   * @default driverKinds()
   */
  kinds?: ReadonlyMap<string, Capabilities>;
  /** What earlier runs of this job recorded (for `method-locked`). */
  history?: RuleContext['history'];
  /** Other jobs known to the caller (for `cbt-exclusive`). */
  otherJobs?: readonly JobSpec[];
  /** Environment facts discovered by drivers; rules that need a missing fact pass. */
  facts?: RuleContext['facts'];
}

/** What {@link validateJob} found. */
export interface ValidationResult {
  /** True when no violation has severity `error`: the job may run. */
  ok: boolean;
  /** Every violation: errors first, then warnings, then info; rule-set order within a severity. */
  violations: Violation[];
}

const SEVERITY_RANK: Record<Severity, number> = { error: 0, warning: 1, info: 2 };

/** The rule sets {@link validateJob} applies when given none: `[seedRules]`. */
export function defaultRuleSets(): readonly RuleSet[] {
  return [seedRules];
}

function checkUniqueIds(ruleSets: readonly RuleSet[]): void {
  const owner = new Map<string, string>();
  for (const set of ruleSets) {
    for (const rule of set.rules) {
      const first = owner.get(rule.id);
      if (first !== undefined) {
        throw new InputError(
          `rule id '${rule.id}' appears in rule set '${first}' and again in '${set.name}'; rule ids must be unique`,
          { details: { ruleId: rule.id, ruleSets: [first, set.name] } },
        );
      }
      owner.set(rule.id, set.name);
    }
  }
}

function runRule(rule: Rule, set: RuleSet, context: RuleContext): Violation[] {
  try {
    const result = rule.check(context);
    const messages = typeof result === 'string' ? [result] : (result ?? []);
    if (!Array.isArray(messages) || messages.some((message) => typeof message !== 'string')) {
      throw new TypeError('check() must return undefined, a string or a list of strings');
    }
    return messages.map((message) => ({ ruleId: rule.id, severity: rule.severity, message, fix: rule.fix }));
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    return [
      {
        ruleId: `rule-crashed:${rule.id}`,
        severity: 'error',
        message: `rule '${rule.id}' of rule set '${set.name}' failed, so the job was not fully checked: ${why}`,
        fix: `Report this to the authors of rule set '${set.name}'; the job cannot be validated until the rule is fixed.`,
      },
    ];
  }
}

/**
 * Checks a job against rule sets and returns every violation, never only the first. A rule that
 * throws becomes an error violation `rule-crashed:<id>`.
 *
 * @example
 * ```ts
 * const result = validateJob(job, { ruleSets: [...defaultRuleSets(), xenRules], history });
 * if (!result.ok) console.error(formatViolations(result.violations));
 * ```
 * @throws {@link InputError} when two rules share an id.
 */
export function validateJob(job: JobSpec, options: ValidateJobOptions = {}): ValidationResult {
  const ruleSets = options.ruleSets ?? defaultRuleSets();
  checkUniqueIds(ruleSets);
  const context: RuleContext = {
    job,
    kinds: options.kinds ?? driverKinds(),
    history: options.history,
    otherJobs: options.otherJobs,
    facts: options.facts,
  };
  const violations = ruleSets
    .flatMap((set) => set.rules.flatMap((rule) => runRule(rule, set, context)))
    .sort((a, b) => SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity]);
  return { ok: violations.every((violation) => violation.severity !== 'error'), violations };
}

/**
 * Formats violations for people, two lines each:
 * ```
 * error   xva-abd-xen-only: method 'abd' needs XenServer on both sides, but the target is 'hyperv'
 *         fix: Set method to 'qhybrid', or make both source.driver and target.driver 'xen'.
 * ```
 * Returns an empty string when there are none.
 */
export function formatViolations(violations: readonly Violation[]): string {
  return violations
    .map(
      (violation) =>
        `${violation.severity.padEnd(8)}${violation.ruleId}: ${violation.message}\n        fix: ${violation.fix}`,
    )
    .join('\n');
}

/**
 * Throws when the result holds an error violation; warnings and info alone pass.
 *
 * @throws {@link RuleError} (`E_RULE`) with a message listing the error violations, and
 * every violation in `details.violations`.
 */
export function assertValid(result: ValidationResult): void {
  const errors = result.violations.filter((violation) => violation.severity === 'error');
  if (errors.length === 0) return;
  const count = errors.length === 1 ? 'a rule' : `${errors.length} rules`;
  throw new RuleError(`the job breaks ${count}:\n${formatViolations(errors)}`, {
    details: { violations: result.violations },
  });
}

import type { Hypervisor } from '../../contracts/hypervisor.js';
import type { EnvironmentFacts } from '../../rules/rule.js';
import { assertValid, defaultRuleSets, validateJob } from '../../rules/rule-validator.js';
import type { RunContext, Stage } from './stage.js';

/**
 * `validate`: the job is checked against the rule sets; rules of warning severity warn, errors stop
 * the run. When a driver offers {@link Hypervisor.ruleFacts} (free staging space, the VM's size),
 * the job is checked again with those facts, still before the run touches anything. A pull job is
 * checked again with what its drivers can do (`pull-needs-driver-support`).
 */
export const validateStage: Stage = {
  state: 'validate',
  async run(context: RunContext): Promise<void> {
    const job = context.record.job;
    const history = await context.jobHistory();
    const check = (facts?: EnvironmentFacts) =>
      validateJob(job, {
        ruleSets: context.deps.ruleSets ?? defaultRuleSets(),
        ...(history ? { history: { method: history.method } } : {}),
        ...(facts ? { facts } : {}),
      });
    const result = check();
    for (const violation of result.violations) {
      if (violation.severity !== 'error') context.warn('W_RULE', `${violation.ruleId}: ${violation.message}`);
    }
    assertValid(result);
    const { source, target } = await context.drivers();
    // A pull job needs the drivers' pull hooks: rule `pull-needs-driver-support` judges it.
    const pull = job.options.direction === 'pull';
    if (!source.ruleFacts && !target.ruleFacts && !pull) return;
    const signal = context.signal;
    const facts: EnvironmentFacts = {
      ...(pull
        ? { pullSupport: { source: source.pullSource !== undefined, target: target.pullDiskFrom !== undefined } }
        : {}),
      ...(await source.ruleFacts?.(job, 'source', { signal })),
      ...(await target.ruleFacts?.(job, 'target', { signal })),
    };
    // Warnings were given above; what the facts add can only stop the run.
    assertValid(check(facts));
  },
};

import { assertValid, defaultRuleSets, validateJob } from '../../rules/rule-validator.js';
import type { RunContext, Stage } from './stage.js';

/** `validate`: the job is checked against the rule sets; rules of warning severity warn, errors stop the run. */
export const validateStage: Stage = {
  state: 'validate',
  async run(context: RunContext): Promise<void> {
    const job = context.record.job;
    const history = await context.jobHistory();
    const result = validateJob(job, {
      ruleSets: context.deps.ruleSets ?? defaultRuleSets(),
      ...(history ? { history: { method: history.method } } : {}),
    });
    for (const violation of result.violations) {
      if (violation.severity !== 'error') context.warn('W_RULE', `${violation.ruleId}: ${violation.message}`);
    }
    assertValid(result);
  },
};

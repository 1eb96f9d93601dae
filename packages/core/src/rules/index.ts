export { BUILTIN_DRIVER_KINDS } from './driver-kinds.js';
export type { EnvironmentFacts, Rule, RuleContext, RuleSet, Severity, Violation } from './rule.js';
export {
  assertValid,
  defaultRuleSets,
  formatViolations,
  type ValidateJobOptions,
  type ValidationResult,
  validateJob,
} from './rule-validator.js';
export { seedRules } from './seed-rules.js';

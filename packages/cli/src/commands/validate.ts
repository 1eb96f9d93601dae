import { BUILTIN_DRIVER_KINDS, formatViolations, type JobSpec, type Violation, validateJob } from '@replikit/core';
import type { CliContext } from '../context.js';
import { type DriverPackageImporter, driverPackageOf, loadDriverPackages } from '../drivers.js';
import { loadJobForCli } from '../job-file.js';

/**
 * Warnings for the sides of `job` whose driver kind replikit knows (so its rules judged the job)
 * but whose driver package is not installed here: `replikit run` would stop on it. `importer`
 * replaces `import()` (tests).
 */
export async function missingDriverPackages(job: JobSpec, importer?: DriverPackageImporter): Promise<Violation[]> {
  // A kind replikit does not know gets the rule validator's `unknown-driver-kind` note instead.
  const missing = (await loadDriverPackages(job, importer)).filter((kind) => BUILTIN_DRIVER_KINDS.has(kind));
  return missing.map((kind) => ({
    ruleId: 'driver-package-missing',
    severity: 'warning' as const,
    message: `the driver of kind '${kind}' is not installed here, so \`replikit run\` of this job would stop`,
    fix: `npm install ${driverPackageOf(kind)} (beside @replikit/cli, on the host that runs the job)`,
  }));
}

/**
 * `replikit validate <job…> [--json]`: checks jobs offline against the rules (the jobs named
 * together are checked against each other too, for rules about two jobs on one VM). Exit 0 when
 * no job breaks an error rule, 2 otherwise.
 */
export async function validateCommand(
  context: CliContext,
  files: string[],
  options: { json: boolean },
): Promise<number> {
  const jobs: Array<{ file: string; job: JobSpec }> = [];
  for (const file of files) jobs.push({ file, job: await loadJobForCli(file, context.cwd) });
  const reports: Array<{ file: string; job: string; ok: boolean; violations: Violation[] }> = [];
  for (const { file, job } of jobs) {
    const otherJobs = jobs.filter((other) => other.job !== job).map((other) => other.job);
    // Driver packages first: a kind a package registers is then judged with its capabilities.
    const missing = await missingDriverPackages(job);
    const result = validateJob(job, { otherJobs });
    const violations = [...result.violations, ...missing];
    reports.push({ file, job: job.name, ok: result.ok, violations });
  }
  if (options.json) {
    context.stdout.write(`${JSON.stringify(reports, null, 2)}\n`);
  } else {
    for (const report of reports) {
      const errors = report.violations.filter((v) => v.severity === 'error').length;
      const head = report.ok
        ? `${report.file}: job '${report.job}' is valid${report.violations.length ? ` (${report.violations.length} note${report.violations.length > 1 ? 's' : ''})` : ''}`
        : `${report.file}: job '${report.job}' breaks ${errors} rule${errors > 1 ? 's' : ''}`;
      context.stdout.write(`${head}\n`);
      if (report.violations.length) context.stdout.write(`${formatViolations(report.violations)}\n`);
    }
  }
  return reports.every((report) => report.ok) ? 0 : 2;
}

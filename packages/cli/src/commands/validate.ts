import { formatViolations, type JobSpec, type Violation, validateJob } from '@replikit/core';
import type { CliContext } from '../context.js';
import { loadJobForCli } from '../job-file.js';

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
    const result = validateJob(job, { otherJobs });
    reports.push({ file, job: job.name, ok: result.ok, violations: result.violations });
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

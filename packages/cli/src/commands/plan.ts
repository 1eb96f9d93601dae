import { formatBytes, NotFoundError, type RunForecast } from '@replikit/core';
import type { CliContext } from '../context.js';
import { createEngine } from '../create-engine.js';
import { driverPackageOf, loadDriverPackages } from '../drivers.js';
import { loadJobForCli } from '../job-file.js';
import { formatCount, formatDuration } from '../output/format.js';
import { renderTable } from '../output/table.js';

/** The forecast as text: a row per disk, then the ETA, the restore points and what would stop the run. */
export function renderForecast(forecast: RunForecast): string {
  const table = renderTable(
    [
      { header: 'disk' },
      { header: 'mode' },
      { header: 'why' },
      { header: 'blocks to read', align: 'right' },
      { header: 'bytes to read', align: 'right' },
      { header: 'changed', align: 'right' },
      { header: 'to send', align: 'right' },
      { header: 'counted' },
    ],
    forecast.disks.map((disk) => [
      disk.id,
      disk.digestSource === 'cache' ? `${disk.mode} (cache)` : disk.mode,
      disk.reason.code,
      formatCount(disk.blocksToRead),
      formatBytes(disk.bytesToRead),
      formatCount(disk.blocksChanged),
      `~${formatBytes(disk.bytesToSend)}`,
      disk.basis === 'exact' ? 'exact (dirty bitmap)' : 'estimate',
    ]),
  );
  const lines = [`next run of job ${forecast.job}: ${forecast.canRun ? 'can go' : 'blocked'}`, table];
  for (const disk of forecast.disks) lines.push(`  ${disk.id}: ${disk.reason.code}: ${disk.reason.message}`);
  lines.push(
    forecast.etaSeconds === undefined
      ? 'eta: unknown (no past run measured a throughput)'
      : `eta: ~${formatDuration(forecast.etaSeconds * 1000)} (at ${formatBytes(forecast.throughput!.bytesPerSecond)}/s, measured by ${forecast.throughput!.runs} past run(s))`,
  );
  const prune = forecast.restorePoints.prune;
  lines.push(
    `restore points: ${forecast.restorePoints.create} created${prune.length > 0 ? `, ${prune.length} pruned (${prune.join(', ')})` : ', none pruned'}`,
  );
  for (const warning of forecast.warnings) lines.push(`warning ${warning.code}: ${warning.message}`);
  for (const blocker of forecast.blockers) lines.push(`blocked ${blocker.code}: ${blocker.message}`);
  return lines.join('\n');
}

/**
 * `replikit plan <job> [--json]`: what the next run would do, without doing any of it. Exit 0 when
 * the run could go, 2 when something would stop it.
 */
export async function planCommand(
  context: CliContext,
  file: string,
  stateDir: string,
  options: { json: boolean },
): Promise<number> {
  const job = await loadJobForCli(file, context.cwd);
  const [missing] = await loadDriverPackages(job);
  if (missing !== undefined) {
    throw new NotFoundError(
      `the driver of kind '${missing}' is not installed; install it with \`npm install ${driverPackageOf(missing)}\` beside @replikit/cli`,
    );
  }
  const engine = createEngine(stateDir, context.env);
  const forecast = await engine.plan(job, { signal: context.signal });
  context.stdout.write(options.json ? `${JSON.stringify(forecast, null, 2)}\n` : `${renderForecast(forecast)}\n`);
  return forecast.canRun ? 0 : 2;
}

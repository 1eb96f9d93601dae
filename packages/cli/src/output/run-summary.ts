import type { RunRecord, TransferStats } from '@replikit/core';
import { formatBytes, formatCount, formatDuration, formatRate } from './format.js';
import { renderTable } from './table.js';

/**
 * Each disk's reason code, one per disk (`system TRACKED, data CACHE_MISSING`), or one code when
 * all disks share it; empty for runs journaled before reasons existed or that never planned.
 */
export function planReasons(record: RunRecord): string {
  const codes = record.disks.map((disk) => disk.reason?.code).filter((code) => code !== undefined);
  if (codes.length === 0) return '';
  if (codes.length === record.disks.length && codes.every((code) => code === codes[0])) return codes[0]!;
  return record.disks.map((disk) => `${disk.sourceDiskId} ${disk.reason?.code ?? disk.mode}`).join(', ');
}

/** Wall-clock time of a run, from its first to its last journaled state. */
export function runDurationMs(record: RunRecord): number {
  const end = record.finishedAt ?? record.updatedAt;
  return Math.max(0, Date.parse(end) - Date.parse(record.startedAt));
}

function row(label: string, mode: string, reason: string, stats: TransferStats, ms?: number): string[] {
  return [
    label,
    mode,
    reason,
    formatCount(stats.blocksScanned),
    formatCount(stats.blocksChanged),
    formatCount(stats.blocksDelta ?? 0),
    formatCount(stats.blocksZero),
    formatBytes(stats.bytesRead),
    formatBytes(stats.bytesReadReplica),
    formatBytes(stats.bytesSent),
    ms === undefined ? '' : formatDuration(ms),
    ms === undefined || ms === 0 ? '' : formatRate((stats.bytesScanned / ms) * 1000),
  ];
}

/** A run's outcome and a table of its counters: one row per disk and a total. */
export function renderRunSummary(record: RunRecord): string {
  const ms = runDurationMs(record);
  const table = renderTable(
    [
      { header: 'disk' },
      { header: 'mode' },
      { header: 'why' },
      { header: 'blocks scanned', align: 'right' },
      { header: 'changed', align: 'right' },
      { header: 'as delta', align: 'right' },
      { header: 'zero', align: 'right' },
      { header: 'source read', align: 'right' },
      { header: 'replica read', align: 'right' },
      { header: 'bytes sent', align: 'right' },
      { header: 'time', align: 'right' },
      { header: 'throughput', align: 'right' },
    ],
    [
      ...record.disks.map((disk) =>
        row(
          disk.sourceDiskId,
          disk.digestSource === 'cache' ? `${disk.mode} (cache)` : disk.mode,
          disk.reason?.code ?? '',
          disk.stats,
        ),
      ),
      row('total', '', '', record.stats, ms),
    ],
  );
  // A run rolled back or abandoned on request says so; the error that once stopped it is history.
  let outcome = `${record.state}${record.error ? `: ${record.error.message}` : ''}`;
  if (record.state === 'completed') outcome = 'completed';
  else if (record.state === 'cancelled' && record.abandoned) {
    const said = record.warnings.filter((w) => w.code === 'W_ABANDONED').at(-1);
    outcome = `abandoned${said ? `: ${said.message}` : ''}`;
  } else if (record.state === 'cancelled' && record.rolledBack) outcome = 'rolled back to its last restore point';
  return `run ${record.runId} (job ${record.job.name}) ${outcome}\n${table}`;
}

import { createRequire } from 'node:module';
import type { ProgressEvent, ReplicationEngine, StateEvent, WarningEvent } from '@replikit/core';
import type cliProgress from 'cli-progress';
import { formatBytes, formatRate } from './format.js';

/**
 * The bar library, loaded on the first bar: a run whose progress goes to a pipe or a log (cron,
 * CI) never loads it.
 */
function barLibrary(): typeof cliProgress {
  return createRequire(import.meta.url)('cli-progress') as typeof cliProgress;
}

/** Where the view writes. */
export interface ProgressViewOptions {
  /** Standard error, usually: progress never mixes with a command's output. */
  stream: NodeJS.WriteStream;
  /** Draw a bar (on a TTY) or print plain lines. @default stream.isTTY */
  tty?: boolean;
  /** Seconds between plain progress lines. @default 2 */
  plainEverySeconds?: number;
}

/**
 * Shows a run's states, progress and warnings: a progress bar on a terminal, plain timestamped
 * lines otherwise (CI logs, pipes). Returns a function that detaches it.
 */
export function attachProgressView(engine: ReplicationEngine, options: ProgressViewOptions): () => void {
  const { stream } = options;
  const tty = options.tty ?? Boolean(stream.isTTY);
  const every = (options.plainEverySeconds ?? 2) * 1000;
  let bar: cliProgress.SingleBar | undefined;
  let lastLine = 0;

  const onState = (event: StateEvent) => {
    if (bar && event.from === 'transfer') {
      bar.stop();
      bar = undefined;
    }
    stream.write(`[${event.runId}] ${event.to}\n`);
    if (event.to === 'transfer' && tty) {
      const library = barLibrary();
      bar = new library.SingleBar(
        {
          stream,
          format:
            '  transfer [{bar}] {percentage}% | {scanned} of {total} | sent {sent} | {rate} | ETA {eta_formatted}',
          hideCursor: true,
          clearOnComplete: false,
        },
        library.Presets.shades_classic,
      );
      bar.start(1, 0, { scanned: '0 B', total: '?', sent: '0 B', rate: '-' });
    }
  };
  const onProgress = (event: ProgressEvent) => {
    const { stats } = event;
    const payload = {
      scanned: formatBytes(stats.bytesScanned),
      total: formatBytes(stats.bytesTotal),
      sent: formatBytes(stats.bytesSent),
      rate: formatRate(event.scanRate),
    };
    if (bar) {
      bar.setTotal(Math.max(1, stats.bytesTotal));
      bar.update(stats.bytesScanned, payload);
      return;
    }
    const now = Date.now();
    if (now - lastLine < every && stats.bytesScanned < stats.bytesTotal) return;
    lastLine = now;
    const percent = stats.bytesTotal ? Math.floor((stats.bytesScanned / stats.bytesTotal) * 100) : 0;
    const eta = event.etaSeconds === undefined ? '' : `, ETA ${Math.ceil(event.etaSeconds)} s`;
    stream.write(
      `[${event.runId}] transfer ${percent}%: ${payload.scanned} of ${payload.total} scanned, ${payload.sent} sent, ${payload.rate}${eta}\n`,
    );
  };
  const onWarning = (event: WarningEvent) => {
    stream.write(`[${event.runId}] warning ${event.code}: ${event.message}\n`);
  };
  engine.on('state', onState);
  engine.on('progress', onProgress);
  engine.on('warning', onWarning);
  return () => {
    bar?.stop();
    engine.off('state', onState);
    engine.off('progress', onProgress);
    engine.off('warning', onWarning);
  };
}

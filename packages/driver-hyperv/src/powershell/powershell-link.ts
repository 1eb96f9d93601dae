import { DriverError } from '@replikit/core';
import { PowerShell } from 'node-powershell';
import { unwrapEnvelope } from './envelope.js';
import { callLine, type PsScript, SESSION_SETUP_LINE } from './ps-script.js';

/** How to reach one host's PowerShell. */
export interface PowerShellLinkOptions {
  /**
   * The executable node-powershell spawns (`pwsh`, `powershell`, a full path, or a simulated
   * host's fake `pwsh`).
   * @default 'pwsh'
   */
  executable?: string;
  /** How long one call may take before the shell is killed and respawned, in ms. @default 120000 */
  timeoutMs?: number;
  /** How long a new shell may take to start and run its set-up line, in ms. @default 60000 */
  startTimeoutMs?: number;
}

/**
 * One long-lived PowerShell per host, spoken to through node-powershell. Calls run one at a time;
 * each sends one line (script and parameters as base64) and reads one JSON envelope. A call that
 * outlives its timeout kills the shell; the next call starts a new one.
 */
export class PowerShellLink {
  private shell: PowerShell | undefined;
  private readonly executable: string;
  private readonly timeoutMs: number;
  private readonly startTimeoutMs: number;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(options: PowerShellLinkOptions = {}) {
    this.executable = options.executable ?? 'pwsh';
    this.timeoutMs = options.timeoutMs ?? 120_000;
    this.startTimeoutMs = options.startTimeoutMs ?? 60_000;
  }

  /**
   * Runs `script` with `params` (JSON-serialisable) and returns the objects it wrote.
   * `options.timeoutMs` overrides the link's timeout for this call.
   */
  call<T = Record<string, unknown>>(
    script: PsScript,
    params: Record<string, unknown> = {},
    options: { timeoutMs?: number } = {},
  ): Promise<T[]> {
    const run = this.queue.then(() => this.callNow(script, params, options.timeoutMs ?? this.timeoutMs));
    this.queue = run.catch(() => undefined);
    return run as Promise<T[]>;
  }

  /** Ends the shell (a later call fails). */
  async close(): Promise<void> {
    this.closed = true;
    await this.kill('SIGTERM');
  }

  private async callNow(script: PsScript, params: Record<string, unknown>, timeoutMs: number): Promise<unknown[]> {
    if (this.closed) throw new DriverError(`PowerShell link to ${this.executable} is closed; open a new one`);
    const shell = await this.ensureShell();
    const raw = await this.invoke(shell, callLine(script, params), script.name, timeoutMs);
    return unwrapEnvelope(script.name, raw);
  }

  private async ensureShell(): Promise<PowerShell> {
    if (this.shell) return this.shell;
    const shell = new PowerShell({
      executable: this.executable,
      throwOnInvocationError: false,
      executableOptions: { '-NoProfile': true, '-NonInteractive': true },
    });
    this.shell = shell;
    await this.invoke(shell, SESSION_SETUP_LINE, 'session-setup', this.startTimeoutMs);
    return shell;
  }

  /** One invocation with the link's timeout; stderr output means the shell is broken: respawn. */
  private async invoke(shell: PowerShell, line: string, name: string, timeoutMs: number): Promise<string> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    let result: Awaited<ReturnType<PowerShell['invoke']>> | 'timeout';
    const pending = shell.invoke(line);
    // A killed shell rejects the invocation it was running; the race below may have moved on.
    pending.catch(() => undefined);
    try {
      result = await Promise.race([pending, timeout]);
    } catch (error) {
      await this.kill('SIGKILL');
      throw new DriverError(`PowerShell (${this.executable}) failed during ${name}: ${(error as Error).message}`, {
        cause: error,
      });
    } finally {
      clearTimeout(timer);
    }
    if (result === 'timeout') {
      await this.kill('SIGKILL');
      throw new DriverError(
        `PowerShell call ${name} took longer than ${timeoutMs} ms; the shell was killed and the next call starts a new one`,
        { details: { script: name, category: 'OperationTimeout' } },
      );
    }
    if (result.hadErrors) {
      await this.kill('SIGKILL');
      const text = result.raw.trim();
      const category = /^(\w+): /.exec(text)?.[1] ?? 'NotSpecified';
      throw new DriverError(`PowerShell refused ${name} (${category}): ${text.split('\n')[0]}`, {
        details: { script: name, category },
      });
    }
    return result.raw;
  }

  private async kill(signal: NodeJS.Signals): Promise<void> {
    const shell = this.shell;
    this.shell = undefined;
    if (!shell) return;
    await shell.dispose(signal).catch(() => undefined);
  }
}

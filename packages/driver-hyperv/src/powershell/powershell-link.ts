import { AuthError, DriverError } from '@replikit/core';
import { PowerShell } from 'node-powershell';
import { unwrapEnvelope } from './envelope.js';
import { CONTROLLER_SETUP_LINE, callLine, type PsScript, remoteCallLine, SESSION_SETUP_LINE } from './ps-script.js';
import { CLOSE_SESSION, openSessionCall, type RemoteSessionTarget } from './remote-session.js';

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
  /**
   * Run every call on this host through PowerShell remoting: the local shell opens one PSSession
   * (`New-PSSession`) when it starts, and each call is `Invoke-Command -Session` there. A shell
   * whose session broke (the host rebooted) is replaced, and its session opened again, by the
   * next call. Unset: the calls run in the local shell (replikit runs on the host).
   */
  remote?: RemoteSessionTarget;
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
  /** A call is being sent or awaited on the shell. */
  private busy = false;
  private readonly remote: RemoteSessionTarget | undefined;

  constructor(options: PowerShellLinkOptions = {}) {
    this.remote = options.remote;
    this.executable = options.executable ?? 'pwsh';
    this.timeoutMs = options.timeoutMs ?? 120_000;
    this.startTimeoutMs = options.startTimeoutMs ?? 60_000;
  }

  /** How long one call may take before the shell is killed (ms), unless a call says otherwise. */
  get callTimeoutMs(): number {
    return this.timeoutMs;
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
    // Only an idle shell is asked to close its session: a call in flight is killed with the shell.
    if (this.remote && this.shell && !this.busy) {
      // Best effort: a session left open lingers on the host until WinRM's idle timeout.
      await this.invoke(this.shell, callLine(CLOSE_SESSION, {}), CLOSE_SESSION.name, this.startTimeoutMs).catch(
        () => undefined,
      );
    }
    await this.kill('SIGTERM');
  }

  private async callNow(script: PsScript, params: Record<string, unknown>, timeoutMs: number): Promise<unknown[]> {
    if (this.closed) throw new DriverError(`PowerShell link to ${this.executable} is closed; open a new one`);
    this.busy = true;
    try {
      const shell = await this.ensureShell();
      const line = this.remote ? remoteCallLine(script, params) : callLine(script, params);
      const raw = await this.invoke(shell, line, script.name, timeoutMs);
      return unwrapEnvelope(script.name, raw);
    } finally {
      this.busy = false;
    }
  }

  private async ensureShell(): Promise<PowerShell> {
    if (this.shell) return this.shell;
    const shell = new PowerShell({
      executable: this.executable,
      throwOnInvocationError: false,
      executableOptions: { '-NoProfile': true, '-NonInteractive': true },
    });
    this.shell = shell;
    await this.invoke(
      shell,
      this.remote ? CONTROLLER_SETUP_LINE : SESSION_SETUP_LINE,
      'session-setup',
      this.startTimeoutMs,
    );
    if (this.remote) await this.openSession(shell, this.remote);
    return shell;
  }

  /**
   * Opens the PSSession of a remote link. A refusal (wrong password, unknown host, WinRM not
   * listening) ends the shell and throws one line that names the host and the user, never the
   * password: `E_AUTH` for "Access is denied", `E_DRIVER` otherwise.
   */
  private async openSession(shell: PowerShell, target: RemoteSessionTarget): Promise<void> {
    const { script, params } = openSessionCall(target);
    try {
      const raw = await this.invoke(shell, callLine(script, params), script.name, this.startTimeoutMs);
      unwrapEnvelope(script.name, raw);
    } catch (error) {
      await this.kill('SIGKILL');
      const details = (error as DriverError).details ?? {};
      const reason = String((error as Error).message)
        .replace(/^PowerShell script [\w-]+ failed \(\w+\): /, '')
        .split('\n')[0];
      const who = target.user === undefined ? 'the current Windows identity' : `user '${target.user}'`;
      const message = `could not open a PowerShell remoting session to '${target.computerName}' as ${who}: ${reason}`;
      const facts = { details: { computerName: target.computerName, ...details }, cause: error };
      throw /AccessDenied/.test(String(details.errorId ?? ''))
        ? new AuthError(message, facts)
        : new DriverError(message, facts);
    }
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

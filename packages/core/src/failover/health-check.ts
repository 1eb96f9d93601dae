import { execFile } from 'node:child_process';
import type { CloneInfo } from '../contracts/failover.js';
import type { Hypervisor } from '../contracts/hypervisor.js';
import type { HealthVerdict } from './failover-record.js';

/** The health check of a test failover. */
export interface HealthCheckOptions {
  /**
   * A command to run once the clone started, as an argument vector (run without a shell). It gets
   * the clone in its environment: `REPLIKIT_CLONE_ID`, `REPLIKIT_CLONE_NAME`,
   * `REPLIKIT_CLONE_ADDRESS` (empty when the platform knows none), `REPLIKIT_CLONE_NETWORKS`
   * (comma-separated). Exit status 0 passes.
   */
  command?: readonly string[];
  /**
   * How long the command may take before it is killed (and the check fails), in milliseconds.
   * @default 600000
   */
  timeoutMs?: number;
  /** A check of the caller's own, given the started clone; a rejection fails the verdict. */
  check?: (clone: CloneInfo, hv: Hypervisor) => Promise<void>;
}

/** Keeps the tail of a command's output for the verdict. */
function tail(text: string): string {
  return text.length > 2000 ? text.slice(-2000) : text;
}

/** Runs `argv` without a shell, with the clone in its environment; resolves with how it ended. */
function runCommand(argv: readonly string[], clone: CloneInfo, timeoutMs: number): Promise<HealthVerdict['command']> {
  return new Promise((resolve) => {
    execFile(
      argv[0]!,
      argv.slice(1),
      {
        shell: false,
        timeout: timeoutMs,
        maxBuffer: 1 << 20,
        env: {
          ...process.env,
          REPLIKIT_CLONE_ID: clone.id,
          REPLIKIT_CLONE_NAME: clone.name,
          REPLIKIT_CLONE_ADDRESS: clone.address ?? '',
          REPLIKIT_CLONE_NETWORKS: clone.networks.join(','),
        },
      },
      (error, stdout, stderr) => {
        const failed = error as (Error & { code?: unknown; signal?: NodeJS.Signals | null }) | null;
        const exitCode = failed ? (typeof failed.code === 'number' ? failed.code : null) : 0;
        const output = tail(`${stdout}${stderr}${failed && typeof failed.code === 'string' ? failed.message : ''}`);
        resolve({ exitCode, signal: failed?.signal ?? null, output });
      },
    );
  });
}

/**
 * Starts the clone and judges it: it must report `running`, then the caller's check and command
 * must pass. Never throws: every failure becomes the verdict's `reason`.
 */
export async function checkClone(
  hv: Hypervisor,
  clone: CloneInfo,
  options: HealthCheckOptions,
): Promise<HealthVerdict> {
  try {
    if ((await hv.getVM(clone.id)).powerState !== 'running') await hv.power(clone.id, 'start');
    if ((await hv.getVM(clone.id)).powerState !== 'running') {
      return { passed: false, started: false, reason: 'the clone did not report running after start' };
    }
  } catch (error) {
    return { passed: false, started: false, reason: `the clone did not start: ${(error as Error).message}` };
  }
  try {
    await options.check?.(clone, hv);
  } catch (error) {
    return { passed: false, started: true, reason: `the check failed: ${(error as Error).message}` };
  }
  if (!options.command || options.command.length === 0) return { passed: true, started: true };
  const command = await runCommand(options.command, clone, options.timeoutMs ?? 600_000);
  if (command?.exitCode === 0) return { passed: true, started: true, command };
  const how = command?.signal ? `was killed by ${command.signal}` : `exited with ${command?.exitCode}`;
  return { passed: false, started: true, reason: `the health command ${how}`, ...(command ? { command } : {}) };
}

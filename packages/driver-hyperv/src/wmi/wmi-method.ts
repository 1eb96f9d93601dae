import { setTimeout as sleep } from 'node:timers/promises';
import { DriverError, throwIfAborted } from '@replikit/core';
import type { PowerShellLink } from '../powershell/powershell-link.js';
import type { PsScript } from '../powershell/ps-script.js';
import { WMI_JOB_RESULT, WMI_JOB_STATE } from '../scripts/hyperv-scripts.js';

/** What a method script writes: `ReturnValue`, and the InstanceIDs of its job and its result. */
interface MethodRow {
  ReturnValue: number;
  Job?: string | null;
  Result?: string | null;
}

/** One read of an `Msvm_ConcreteJob`. */
interface JobRow {
  InstanceID: string;
  JobState: number;
  ErrorCode?: number | null;
  ErrorDescription?: string | null;
}

/** ReturnValue "Method Parameters Checked - Job Started". */
const JOB_STARTED = 4096;
/** `JobState` values (CIM_ConcreteJob): done, and the failed ends. */
const COMPLETED = 7;
const COMPLETED_WITH_WARNINGS = 32768;
const FAILED_STATES: Readonly<Record<number, string>> = { 8: 'Terminated', 9: 'Killed', 10: 'Exception' };

/** How a WMI method is called and waited on. */
export interface WmiMethodOptions {
  /** The method's name, for messages (`CreateSnapshot`). */
  readonly method: string;
  /**
   * The class of the element the method makes (`Msvm_VirtualSystemSettingData`), read through
   * `Msvm_AffectedJobElement` when the method ran as a job; unset when there is no result.
   */
  readonly resultClass?: string;
  /** Cancels the wait on a job (between polls). */
  readonly signal?: AbortSignal | undefined;
  /** How long a job may run before the driver gives up on it (ms). @default the link's call timeout */
  readonly timeoutMs?: number;
}

/**
 * Calls a `root\virtualization\v2` method through `script` (which projects the answer as
 * `ReturnValue`, `Job` and `Result`, see hyperv-scripts.ts) and resolves with the InstanceID of
 * what it made (undefined when it makes nothing or does not say). ReturnValue 0: the result is
 * the out parameter. 4096: the method runs as an `Msvm_ConcreteJob`; the job is polled (one call a
 * poll, backing off from 50 ms to 1 s) until it completes, and the result is the element of
 * `resultClass` it affected. Any other ReturnValue, or a job that ends Terminated, Killed or in
 * Exception, is a {@link DriverError} naming the method, the code and the job's ErrorDescription.
 */
export async function invokeWmiMethod(
  link: PowerShellLink,
  script: PsScript,
  params: Record<string, unknown>,
  options: WmiMethodOptions,
): Promise<string | undefined> {
  const [row] = await link.call<MethodRow>(script, params);
  if (!row) throw new DriverError(`${options.method} wrote no answer`);
  if (row.ReturnValue === 0) return row.Result ?? undefined;
  if (row.ReturnValue !== JOB_STARTED) {
    throw new DriverError(`${options.method} failed: it returned ${row.ReturnValue}`, {
      details: { method: options.method, returnValue: row.ReturnValue },
    });
  }
  if (!row.Job) throw new DriverError(`${options.method} returned 4096 (job started) without a job`);
  await waitForJob(link, row.Job, options);
  if (!options.resultClass) return undefined;
  const made = await link.call<{ InstanceID: string }>(WMI_JOB_RESULT, {
    job: row.Job,
    resultClass: options.resultClass,
  });
  return made[0]?.InstanceID;
}

/** Polls job `job` until it completes; throws when it fails, vanishes, outlives the timeout or is cancelled. */
async function waitForJob(link: PowerShellLink, job: string, options: WmiMethodOptions): Promise<void> {
  const timeoutMs = options.timeoutMs ?? link.callTimeoutMs;
  const deadline = Date.now() + timeoutMs;
  for (let pause = 50; ; pause = Math.min(pause * 2, 1000)) {
    throwIfAborted(options.signal);
    const [state] = await link.call<JobRow>(WMI_JOB_STATE, { job });
    if (!state) throw new DriverError(`the WMI job ${job} of ${options.method} is gone before it ended`);
    if (state.JobState === COMPLETED || state.JobState === COMPLETED_WITH_WARNINGS) return;
    const failed = FAILED_STATES[state.JobState];
    if (failed) {
      throw new DriverError(
        `${options.method} failed: its WMI job ${job} ended ${failed} (JobState ${state.JobState}) with ErrorCode ${state.ErrorCode ?? 'unknown'}: ${state.ErrorDescription || 'no description'}`,
        {
          details: {
            method: options.method,
            job,
            jobState: state.JobState,
            errorCode: state.ErrorCode,
            errorDescription: state.ErrorDescription,
          },
        },
      );
    }
    if (Date.now() + pause > deadline) {
      throw new DriverError(
        `${options.method}: its WMI job ${job} is still running (JobState ${state.JobState}) after ${timeoutMs} ms; the driver stopped waiting`,
      );
    }
    try {
      await sleep(pause, undefined, options.signal ? { signal: options.signal } : {});
    } catch {
      throwIfAborted(options.signal);
    }
  }
}

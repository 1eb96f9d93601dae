import { appendFile, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The file where the fake `pwsh` logs every line it receives and every script it decodes. */
export function scriptLogFile(root: string): string {
  return join(root, 'pwsh.log');
}

/** One entry of the script log. */
export interface ScriptLogEntry {
  /** `line`: a line read from stdin; `script`: the script a call line carried, decoded. */
  readonly kind: 'line' | 'script';
  readonly text: string;
}

/** Appends an entry to the host's script log (one JSON document a line). */
export async function logScript(root: string, entry: ScriptLogEntry): Promise<void> {
  await appendFile(scriptLogFile(root), `${JSON.stringify(entry)}\n`);
}

/** Every entry of the host's script log, oldest first. */
export async function readScriptLog(root: string): Promise<ScriptLogEntry[]> {
  let text: string;
  try {
    text = await readFile(scriptLogFile(root), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as ScriptLogEntry);
}

/**
 * How the host answers the WMI methods that may run as jobs (`CreateSnapshot`,
 * `ConvertToReferencePoint`, `DestroyReferencePoint`): with 4096 ("Method Parameters Checked - Job
 * Started") and an `Msvm_ConcreteJob`, as a real host usually does, instead of completing at once.
 */
export interface WmiJobMode {
  /**
   * How many reads of the job's `Msvm_ConcreteJob` instance see it running (`JobState` 4) before it
   * ends; 0 ends it at the first read.
   */
  polls: number;
  /** The methods that answer with a job (default: all three). */
  methods?: string[];
  /** When set, the job fails instead of doing the work: it ends in this state with this error. */
  fail?: {
    /** 8 Terminated, 9 Killed or 10 Exception. @default 10 */
    jobState?: 8 | 9 | 10;
    /** The job's `ErrorCode`. @default 32768 */
    errorCode?: number;
    /** The job's `ErrorDescription`. */
    errorDescription?: string;
  };
}

/** Faults a test arms on a host; each hang fires once, `wmiJobs` holds until faults are re-armed. */
export interface HostFaults {
  /** Cmdlet names whose next call never answers (the shell hangs until it is killed). */
  hang?: string[];
  /** WMI methods answer with jobs (see {@link WmiJobMode}); unset, they complete at once (ReturnValue 0). */
  wmiJobs?: WmiJobMode;
}

function faultsFile(root: string): string {
  return join(root, 'faults.json');
}

/** Arms faults on a host (replacing those armed before). */
export async function armFaults(root: string, faults: HostFaults): Promise<void> {
  const tmp = `${faultsFile(root)}.tmp`;
  await writeFile(tmp, JSON.stringify(faults));
  await rename(tmp, faultsFile(root));
}

/** The faults armed on a host (none when the file is missing or unreadable). */
export async function readFaults(root: string): Promise<HostFaults> {
  try {
    return JSON.parse(await readFile(faultsFile(root), 'utf8')) as HostFaults;
  } catch {
    return {};
  }
}

/** Whether a hang is armed for `cmdlet`; disarms it when so. */
export async function takeHang(root: string, cmdlet: string): Promise<boolean> {
  const faults = await readFaults(root);
  const index = faults.hang?.indexOf(cmdlet) ?? -1;
  if (index < 0) return false;
  faults.hang?.splice(index, 1);
  await armFaults(root, faults);
  return true;
}

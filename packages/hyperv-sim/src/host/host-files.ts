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

/** Faults a test arms on a host; each fires once. */
export interface HostFaults {
  /** Cmdlet names whose next call never answers (the shell hangs until it is killed). */
  hang?: string[];
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

/** Whether a hang is armed for `cmdlet`; disarms it when so. */
export async function takeHang(root: string, cmdlet: string): Promise<boolean> {
  let faults: HostFaults;
  try {
    faults = JSON.parse(await readFile(faultsFile(root), 'utf8')) as HostFaults;
  } catch {
    return false;
  }
  const index = faults.hang?.indexOf(cmdlet) ?? -1;
  if (index < 0) return false;
  faults.hang?.splice(index, 1);
  await armFaults(root, faults);
  return true;
}

import { type EnvironmentFacts, NotFoundError, RuleError } from '@replikit/core';
import type { XenConnection } from '../xapi/xen-connection.js';

const NULL_REF = 'OpaqueRef:NULL';
const GiB = 1024 ** 3;
const sizeText = (bytes: number) => `${(bytes / GiB).toFixed(2)} GiB (${bytes} bytes)`;

/** The SR an XVA import lands on: the job's target `sr`, else the pool's default SR. */
export async function stagingSrRef(connection: XenConnection, sr: string | undefined, signal?: AbortSignal) {
  const s = signal ? { signal } : {};
  if (sr) return connection.call<string>('SR.get_by_uuid', [sr], s);
  const [pool] = await connection.call<string[]>('pool.get_all', [], s);
  const ref = pool ? await connection.call<string>('pool.get_default_SR', [pool], s) : NULL_REF;
  if (!ref || ref === NULL_REF) throw new NotFoundError('the pool has no default SR; set the target `sr` of the job');
  return ref;
}

/** Free bytes of an SR: `physical_size − physical_utilisation`, as XAPI reports them. */
export async function srFreeBytes(connection: XenConnection, srRef: string, signal?: AbortSignal): Promise<number> {
  const s = signal ? { signal } : {};
  const [size, used] = await Promise.all([
    connection.call<string | number>('SR.get_physical_size', [srRef], s),
    connection.call<string | number>('SR.get_physical_utilisation', [srRef], s),
  ]);
  return Math.max(0, Number(size) - Number(used));
}

/** Total virtual size of the disks of the VM `vm` (a uuid or name) names, for `xva-needs-staging`. */
export async function vmSizeBytes(connection: XenConnection, vm: string, signal?: AbortSignal): Promise<number> {
  const s = signal ? { signal } : {};
  let refs: string[];
  try {
    refs = [await connection.call<string>('VM.get_by_uuid', [vm], s)];
  } catch {
    refs = await connection.call<string[]>('VM.get_by_name_label', [vm], s);
  }
  if (refs.length !== 1) throw new NotFoundError(`no single VM '${vm}' on this pool`);
  let total = 0;
  for (const vbd of await connection.call<string[]>('VM.get_VBDs', [refs[0]], s)) {
    const record = await connection.call<Record<string, unknown>>('VBD.get_record', [vbd], s);
    if (record.type !== 'Disk' || record.VDI === NULL_REF) continue;
    total += Number(await connection.call<string | number>('VDI.get_virtual_size', [record.VDI], s));
  }
  return total;
}

/**
 * The error of rule `xva-needs-staging` (`E_RULE`, the rule's id in `details`), for an import
 * refused because the SR cannot hold the VM beside its replica. Worded as the rule's violation.
 */
export function stagingError(vm: string, size: number, free: number): RuleError {
  const violation = {
    ruleId: 'xva-needs-staging',
    severity: 'error' as const,
    message: `method 'xva' stages the whole VM '${vm}' (${sizeText(size)}) each run, but the target SR has only ${sizeText(free)} free`,
    fix: "Free space on the target SR (at least the VM's size), or set method to 'qhybrid', which needs no staging.",
  };
  return new RuleError(`the job breaks a rule: xva-needs-staging: ${violation.message}; ${violation.fix}`, {
    details: { violations: [violation] },
  });
}

/** What {@link EnvironmentFacts} one side of an `xva` job knows. */
export async function xvaFacts(
  connection: XenConnection,
  side: 'source' | 'target',
  vm: string,
  sr: string | undefined,
  signal?: AbortSignal,
): Promise<EnvironmentFacts> {
  if (side === 'source') return { vmSizeBytes: await vmSizeBytes(connection, vm, signal) };
  return { stagingFreeBytes: await srFreeBytes(connection, await stagingSrRef(connection, sr, signal), signal) };
}

import { openVhdx } from '@replikit/formats';
import { withHostLock } from './host-lock.js';
import { loadState } from './host-state.js';
import { loadRct, saveRct, tracking } from './rct-log.js';
import { rewriteVhdx } from './vhdx-rewrite.js';

async function liveDrive(root: string, vmName: string, drive: number) {
  const state = await loadState(root);
  const vm = state.vms.find((v) => v.name === vmName);
  const d = vm?.drives[drive];
  if (!d) throw new Error(`the simulated host has no drive ${drive} on a VM named ${JSON.stringify(vmName)}`);
  return d;
}

/**
 * A write by the guest of `vmName` to its drive number `drive` (in drive order): it lands in the
 * drive's live file (the newest `.avhdx` while a checkpoint exists) and in the disk's change
 * tracking log, as a running VM's write would.
 */
export async function guestWrite(
  root: string,
  vmName: string,
  drive: number,
  offset: number,
  data: Uint8Array,
): Promise<void> {
  await guestWrites(root, vmName, drive, [{ offset, data }]);
}

/**
 * Several guest writes to one drive, applied in order with one rewrite of the live file (each
 * write rewrites the whole file otherwise: a test that writes into many places of a big disk
 * would take minutes). Each is recorded by change tracking as {@link guestWrite} records it.
 */
export async function guestWrites(
  root: string,
  vmName: string,
  drive: number,
  writes: readonly { offset: number; data: Uint8Array }[],
): Promise<void> {
  await withHostLock(root, () => writeLocked(root, vmName, drive, writes));
}

async function writeLocked(
  root: string,
  vmName: string,
  drive: number,
  writes: readonly { offset: number; data: Uint8Array }[],
): Promise<void> {
  const d = await liveDrive(root, vmName, drive);
  const live = await openVhdx(d.path);
  try {
    await rewriteVhdx(d.path, live, [], live.info.parent, async (write) => {
      for (const w of writes) await write(w.offset, w.data);
    });
  } finally {
    await live.close();
  }
  const rct = await loadRct(root);
  const t = tracking(rct, d.basePath);
  for (const w of writes) {
    t.seq += 1;
    t.changes.push({ seq: t.seq, offset: w.offset, length: w.data.length });
  }
  await saveRct(root, rct);
}

/** What the guest of `vmName` sees on drive `drive` at `offset` (the live chain's content). */
export async function guestRead(
  root: string,
  vmName: string,
  drive: number,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  const d = await liveDrive(root, vmName, drive);
  const live = await openVhdx(d.path);
  try {
    return await live.read(offset, length);
  } finally {
    await live.close();
  }
}

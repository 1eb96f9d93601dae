import type { RunContext, Stage } from './stage.js';

/** `snapshot`: the source VM's snapshot of this run, taken once (adopted again after a crash) and journaled. */
export const snapshotStage: Stage = {
  state: 'snapshot',
  async run(context: RunContext): Promise<void> {
    const { record, signal } = context;
    if (record.snapshot) return;
    const { source } = await context.drivers();
    const label = `replikit-${record.runId}`;
    const vm = await source.getVM(record.job.source.vm, { signal });
    // A crash between taking the snapshot and journaling it leaves one with our label: adopt it.
    const existing = (await source.listSnapshots(vm.id, { signal })).find((s) => s.label === label);
    record.snapshot = existing ?? (await source.snapshot(vm.id, label, { signal }));
    await context.save();
  },
};

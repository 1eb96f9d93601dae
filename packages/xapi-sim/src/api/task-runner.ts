import { newUuid, xapiDate } from '../ids.js';
import type { Wire } from '../model/wire.js';
import { encodeXmlValue } from '../rpc/xml-value.js';
import type { SimState } from '../sim-state.js';
import { describeError } from '../xapi-fault.js';
import type { MethodSpec } from './registry.js';

/** Creates a pending task record resident on the master. */
export function createTask(sim: SimState, label: string, description = ''): string {
  return sim.db.create('task', {
    uuid: newUuid(),
    name_label: label,
    name_description: description,
    created: xapiDate(),
    resident_on: sim.refs.host,
    status: 'pending',
  });
}

/** Marks a task finished with a result (encoded as an XML-RPC fragment, `''` when void). */
export function succeedTask(sim: SimState, task: string, result: Wire | undefined): void {
  if (!sim.db.has('task', task)) return;
  const encoded = result === undefined || result === '' ? '' : encodeXmlValue(result);
  sim.db.update('task', task, {
    status: 'success',
    progress: 1,
    result: encoded,
    finished: xapiDate(),
    allowed_operations: [],
  });
}

/** Marks a task failed with an ErrorDescription. */
export function failTask(sim: SimState, task: string, error: unknown): void {
  if (!sim.db.has('task', task)) return;
  sim.db.update('task', task, {
    status: 'failure',
    progress: 1,
    error_info: describeError(error),
    finished: xapiDate(),
    allowed_operations: [],
  });
}

/** Marks a task cancelled. */
export function cancelledTask(sim: SimState, task: string): void {
  if (!sim.db.has('task', task)) return;
  sim.db.update('task', task, { status: 'cancelled', progress: 1, finished: xapiDate(), allowed_operations: [] });
}

/** Starts `Async.<method>`: the task ref is returned at once, the work runs after. */
export function startTask(sim: SimState, session: string, spec: MethodSpec, args: Wire[]): string {
  const task = createTask(sim, `Async.${spec.name}`);
  const controller = new AbortController();
  sim.running.set(task, controller);
  const run = async () => {
    const hold = sim.holds.get(spec.name);
    if (hold !== undefined) {
      await Promise.race([hold, new Promise((r) => controller.signal.addEventListener('abort', r, { once: true }))]);
    }
    if (controller.signal.aborted) return cancelledTask(sim, task);
    try {
      sim.faults.takeFailure(spec.name);
      const result = await spec.run({ sim, session, signal: controller.signal }, args);
      if (controller.signal.aborted) cancelledTask(sim, task);
      else succeedTask(sim, task, result as Wire | undefined);
    } catch (error) {
      if (controller.signal.aborted) cancelledTask(sim, task);
      else failTask(sim, task, error);
    }
  };
  void run().finally(() => sim.running.delete(task));
  return task;
}

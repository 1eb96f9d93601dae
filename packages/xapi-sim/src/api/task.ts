import { fault } from '../xapi-fault.js';
import { type MethodTable, str } from './registry.js';
import { cancelledTask, createTask } from './task-runner.js';

/** `task.create`, `task.destroy`, `task.cancel`. */
export function registerTasks(table: MethodTable): void {
  table.add({ name: 'task.create', arity: 2, run: ({ sim }, a) => createTask(sim, str(a, 0), str(a, 1)) });
  table.add({
    name: 'task.destroy',
    arity: 1,
    run: ({ sim }, a) => {
      const ref = str(a, 0);
      sim.db.get('task', ref);
      sim.running.get(ref)?.abort();
      sim.db.destroy('task', ref);
    },
  });
  table.add({
    name: 'task.cancel',
    arity: 1,
    async: true,
    run: ({ sim }, a) => {
      const ref = str(a, 0);
      const status = sim.db.field<string>('task', ref, 'status');
      if (status !== 'pending') throw fault('OPERATION_NOT_ALLOWED', `task ${ref} is ${status}`);
      const running = sim.running.get(ref);
      if (running === undefined) return cancelledTask(sim, ref);
      sim.db.update('task', ref, { status: 'cancelling' });
      running.abort();
    },
  });
}

import { fault } from '../xapi-fault.js';
import { type MethodTable, str } from './registry.js';

const NETWORK_CTOR = ['name_label', 'name_description', 'MTU', 'other_config', 'bridge', 'managed', 'tags'];

/** `network.create` and `network.destroy` (a test network to map a failover clone onto). */
export function registerNetwork(table: MethodTable): void {
  table.add({
    name: 'network.create',
    arity: 1,
    async: true,
    run: ({ sim }, a) => {
      const rec = a[0];
      if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) throw fault('FIELD_TYPE_ERROR', 'args');
      const fields: Record<string, (typeof a)[number]> = {};
      for (const k of NETWORK_CTOR) if (rec[k] !== undefined) fields[k] = rec[k]!;
      if (typeof fields.MTU === 'string') fields.MTU = Number(fields.MTU);
      return sim.db.create('network', fields);
    },
  });
  table.add({
    name: 'network.destroy',
    arity: 1,
    async: true,
    run: ({ sim }, a) => {
      const network = str(a, 0);
      if (sim.db.field<string[]>('network', network, 'VIFs').length > 0) throw fault('NETWORK_CONTAINS_VIF', network);
      sim.db.destroy('network', network);
    },
  });
}

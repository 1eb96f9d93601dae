import type { XRecord } from '../model/wire.js';
import { fault } from '../xapi-fault.js';
import type { MethodTable } from './registry.js';

/** Fields `network.create` takes from its record (XAPI's constructor fields); the rest default. */
const CREATE_FIELDS = ['name_label', 'name_description', 'MTU', 'other_config', 'bridge', 'managed', 'tags'];

/**
 * The `network` messages beyond the accessors: `network.create` (an internal network with no PIF,
 * as XAPI makes one when given no bridge) — what a test needs to map a replica's networks.
 */
export function registerNetwork(table: MethodTable): void {
  table.add({
    name: 'network.create',
    arity: 1,
    async: true,
    run: ({ sim }, a) => {
      const rec = a[0];
      if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) throw fault('FIELD_TYPE_ERROR', 'args');
      const fields: XRecord = {};
      for (const k of CREATE_FIELDS) if (rec[k] !== undefined) fields[k] = rec[k];
      return sim.db.create('network', fields);
    },
  });
}

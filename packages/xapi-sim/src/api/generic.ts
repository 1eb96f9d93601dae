import { RECORD_DEFAULTS, WRITABLE_FIELDS } from '../model/defaults.js';
import { CLASSES, type Wire, type XClass } from '../model/wire.js';
import { fault } from '../xapi-fault.js';
import { type MethodTable, str } from './registry.js';

const kindOf = (value: Wire): 'map' | 'set' | 'scalar' =>
  Array.isArray(value) ? 'set' : typeof value === 'object' ? 'map' : 'scalar';

/** Registers the field accessors XAPI generates for every class. */
export function registerAccessors(table: MethodTable, cls: XClass): void {
  const defaults = RECORD_DEFAULTS[cls]();
  table.add({ name: `${cls}.get_all`, arity: 0, run: ({ sim }) => sim.db.refs(cls) });
  table.add({
    name: `${cls}.get_all_records`,
    arity: 0,
    run: ({ sim }) => Object.fromEntries(sim.db.entries(cls)),
  });
  table.add({ name: `${cls}.get_record`, arity: 1, run: ({ sim }, a) => sim.db.get(cls, str(a, 0)) });
  table.add({ name: `${cls}.get_by_uuid`, arity: 1, run: ({ sim }, a) => sim.db.byUuid(cls, str(a, 0)) });
  if ('name_label' in defaults) {
    table.add({
      name: `${cls}.get_by_name_label`,
      arity: 1,
      run: ({ sim }, a) =>
        sim.db
          .entries(cls)
          .filter(([, r]) => r.name_label === str(a, 0))
          .map(([ref]) => ref),
    });
  }
  for (const field of Object.keys(defaults)) {
    table.add({ name: `${cls}.get_${field}`, arity: 1, run: ({ sim }, a) => sim.db.field(cls, str(a, 0), field) });
  }
  for (const field of WRITABLE_FIELDS[cls]) registerWriters(table, cls, field, kindOf(defaults[field]!));
}

function registerWriters(table: MethodTable, cls: XClass, field: string, kind: 'map' | 'set' | 'scalar'): void {
  const defaultValue = RECORD_DEFAULTS[cls]()[field]!;
  table.add({
    name: `${cls}.set_${field}`,
    arity: 2,
    run: ({ sim }, a) => {
      const ref = str(a, 0);
      const value = a[1];
      if (
        value === undefined ||
        kindOf(value) !== kind ||
        (kind === 'scalar' && typeof value !== typeof defaultValue)
      ) {
        throw fault('FIELD_TYPE_ERROR', field);
      }
      sim.db.update(cls, ref, { [field]: value });
    },
  });
  if (kind === 'map') {
    table.add({
      name: `${cls}.add_to_${field}`,
      arity: 3,
      run: ({ sim }, a) => {
        const ref = str(a, 0);
        const key = str(a, 1);
        const value = str(a, 2);
        const map = sim.db.field<Record<string, Wire>>(cls, ref, field);
        if (key in map) throw fault('MAP_DUPLICATE_KEY', cls, field, sim.db.field<string>(cls, ref, 'uuid'), key);
        sim.db.update(cls, ref, { [field]: { ...map, [key]: value } });
      },
    });
    table.add({
      name: `${cls}.remove_from_${field}`,
      arity: 2,
      run: ({ sim }, a) => {
        const ref = str(a, 0);
        const key = str(a, 1);
        const map = sim.db.field<Record<string, Wire>>(cls, ref, field);
        if (!(key in map)) return;
        delete map[key];
        sim.db.update(cls, ref, { [field]: map });
      },
    });
  } else if (kind === 'set') {
    table.add({
      name: `${cls}.add_${field}`,
      arity: 2,
      run: ({ sim }, a) => sim.db.addToSet(cls, str(a, 0), field, str(a, 1)),
    });
    table.add({
      name: `${cls}.remove_${field}`,
      arity: 2,
      run: ({ sim }, a) => sim.db.removeFromSet(cls, str(a, 0), field, str(a, 1)),
    });
  }
}

/** Registers the accessors of every served class. */
export function registerAllAccessors(table: MethodTable): void {
  for (const cls of CLASSES) registerAccessors(table, cls);
}

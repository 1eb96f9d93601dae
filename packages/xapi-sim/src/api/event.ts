import type { XClass } from '../model/wire.js';
import { fault } from '../xapi-fault.js';
import { type MethodTable, str, strSet } from './registry.js';

const formatToken = (gen: number) => `${String(gen).padStart(20, '0')},${'0'.padStart(20, '0')}`;

function parseToken(token: string): number {
  if (token === '') return 0;
  const m = /^(\d{1,20}),(\d{1,20})$/.exec(token) ?? /^(\d{1,20})$/.exec(token);
  if (m === null) throw fault('EVENT_FROM_TOKEN_PARSE_FAILURE', token);
  return Number(m[1]);
}

/** The most seconds one `event.from` call may wait. */
const MAX_WAIT_S = 3600;

/** `event.inject` and `event.from`. */
export function registerEvents(table: MethodTable): void {
  table.add({
    name: 'event.inject',
    arity: 2,
    run: ({ sim }, a) => {
      const cls = sim.db.classOf(str(a, 0));
      const ref = str(a, 1);
      if (cls === undefined || !sim.db.has(cls, ref)) throw fault('HANDLE_INVALID', str(a, 0), ref);
      sim.db.touch(cls, ref);
      return formatToken(sim.db.gen - 1);
    },
  });
  table.add({
    name: 'event.from',
    arity: 3,
    run: async ({ sim }, a) => {
      const wanted = strSet(a, 0, 'classes');
      const from = parseToken(str(a, 1, 'token'));
      const timeoutArg = a[2];
      const timeout = typeof timeoutArg === 'number' ? timeoutArg : Number(timeoutArg);
      if (!Number.isFinite(timeout)) throw fault('FIELD_TYPE_ERROR', 'timeout');
      const all = wanted.includes('*');
      const classes = new Set<string>();
      const objects = new Set<string>();
      for (const w of wanted) {
        const [cls, ref] = w.split('/', 2) as [string, string | undefined];
        if (ref !== undefined) objects.add(`${cls.toLowerCase()}/${ref}`);
        else classes.add(cls.toLowerCase());
      }
      const matches = (cls: string, ref: string) => all || classes.has(cls) || objects.has(`${cls}/${ref}`);
      const deadline = Date.now() + Math.min(Math.max(timeout, 0), MAX_WAIT_S) * 1000;
      const closed = sim.closing;
      for (;;) {
        const events = sim.db.eventsSince(from);
        if (events === undefined) throw fault('EVENTS_LOST');
        const picked = events.filter((e) => matches(e.cls, e.ref));
        const left = deadline - Date.now();
        if (picked.length > 0 || left <= 0 || closed.aborted) {
          const counted = [...new Set(wanted.map((w) => sim.db.classOf(w.split('/')[0]!)))].filter(
            (c): c is XClass => c !== undefined,
          );
          return {
            events: picked.map((e) => ({
              id: String(e.gen),
              timestamp: String(Date.now() / 1000),
              class: e.cls,
              operation: e.operation,
              ref: e.ref,
              ...(e.snapshot === undefined ? {} : { snapshot: e.snapshot }),
            })),
            valid_ref_counts: sim.db.counts(all ? undefined : counted),
            token: formatToken(sim.db.gen),
          };
        }
        const timer = AbortSignal.any([closed, AbortSignal.timeout(left)]);
        await sim.db.nextChange(timer);
      }
    },
  });
}

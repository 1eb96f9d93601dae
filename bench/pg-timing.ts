// Times every query of this process's `pg` clients (the state store's pool, job-lock and
// run-limit connections, pg-boss's pool), summed per connection's application_name:
// `replikit` (the state store), `replikit-queue` (pg-boss), `replikit-slots` (run limits).
// A query's time runs from its submission to its result: the round trip to PostgreSQL, its
// execution, and any wait behind an earlier query on the same connection.
import pg from 'pg';

/** Milliseconds and query counts per application_name, since {@link timePgQueries}. */
export interface PgTimes {
  [application: string]: { ms: number; queries: number };
}

/** Starts timing every `pg.Client#query` of this process; returns the live sums. */
export function timePgQueries(): PgTimes {
  const times: PgTimes = {};
  const original = pg.Client.prototype.query as (...args: unknown[]) => unknown;
  const add = (client: pg.Client, started: bigint) => {
    const name = (client as unknown as { connectionParameters?: { application_name?: string } }).connectionParameters
      ?.application_name;
    const kind = name ?? '(none)';
    const entry = times[kind] ?? { ms: 0, queries: 0 };
    times[kind] = entry;
    entry.ms += Number(process.hrtime.bigint() - started) / 1e6;
    entry.queries++;
  };
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const started = process.hrtime.bigint();
    const last = args.at(-1);
    if (typeof last === 'function') {
      args[args.length - 1] = (...result: unknown[]) => {
        add(this, started);
        return (last as (...r: unknown[]) => unknown)(...result);
      };
      return original.apply(this, args);
    }
    const result = original.apply(this, args);
    if (result && typeof (result as Promise<unknown>).then === 'function') {
      return (result as Promise<unknown>).finally(() => add(this, started));
    }
    return result;
  } as typeof pg.Client.prototype.query;
  return times;
}

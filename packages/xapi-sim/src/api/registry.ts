import type { Wire } from '../model/wire.js';
import type { SimState } from '../sim-state.js';
import { fault } from '../xapi-fault.js';

/** What a method handler gets besides its arguments. */
export interface CallContext {
  /** The simulator's state. */
  readonly sim: SimState;
  /** The caller's session ref (`''` for session-less methods). */
  readonly session: string;
  /** Fires when the task running this call is cancelled (Async calls only). */
  readonly signal?: AbortSignal;
}

/** One API method. */
export interface MethodSpec {
  /** `Class.message`, as on the wire. */
  readonly name: string;
  /** Number of parameters after the session (the maximum when some have defaults). */
  readonly arity: number;
  /** Fewest parameters accepted (defaults to `arity`). */
  readonly minArity?: number;
  /** False for `session.login_with_password` and `system.*`, which take no session. */
  readonly session?: boolean;
  /** True if an `Async.` variant exists (every mutating message). */
  readonly async?: boolean;
  /** The handler; returning nothing means a void result. */
  // biome-ignore lint/suspicious/noConfusingVoidType: handlers of void messages return nothing
  run(ctx: CallContext, args: Wire[]): Wire | void | Promise<Wire | void>;
}

/** The table of methods the simulator answers. */
export class MethodTable {
  private readonly methods = new Map<string, MethodSpec>();

  /** Adds a method (replacing one of the same name). */
  add(spec: MethodSpec): void {
    this.methods.set(spec.name, spec);
  }

  /** The method named `name`, with or without `Async.`, or `MESSAGE_METHOD_UNKNOWN`. */
  lookup(name: string): { spec: MethodSpec; isAsync: boolean } {
    const isAsync = name.startsWith('Async.');
    const spec = this.methods.get(isAsync ? name.slice(6) : name);
    if (spec === undefined || (isAsync && spec.async !== true)) throw fault('MESSAGE_METHOD_UNKNOWN', name);
    return { spec, isAsync };
  }

  /** Every wire name, `Async.` variants included, as `system.listMethods` lists them. */
  names(): string[] {
    const out: string[] = [];
    for (const spec of this.methods.values()) {
      out.push(spec.name);
      if (spec.async === true) out.push(`Async.${spec.name}`);
    }
    return out.sort();
  }
}

/** Reads argument `i` as a string, or fails with `FIELD_TYPE_ERROR`. */
export function str(args: Wire[], i: number, what = `param ${i}`): string {
  const v = args[i];
  if (typeof v !== 'string') throw fault('FIELD_TYPE_ERROR', what);
  return v;
}

/** Reads argument `i` as a map of strings. */
export function strMap(args: Wire[], i: number, what = `param ${i}`): Record<string, string> {
  const v = args[i];
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw fault('FIELD_TYPE_ERROR', what);
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string') throw fault('FIELD_TYPE_ERROR', `${what}.${k}`);
    out[k] = x;
  }
  return out;
}

/** Reads argument `i` as a set of strings. */
export function strSet(args: Wire[], i: number, what = `param ${i}`): string[] {
  const v = args[i];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw fault('FIELD_TYPE_ERROR', what);
  return v as string[];
}

/** Reads argument `i` as a boolean (XML-RPC clients may send `"true"`). */
export function bool(args: Wire[], i: number, what = `param ${i}`): boolean {
  const v = args[i];
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === 'false') return v === 'true';
  throw fault('FIELD_TYPE_ERROR', what);
}

/** Reads argument `i` as a non-negative safe integer (int64 arrives as a string over XML-RPC). */
export function int(args: Wire[], i: number, what = `param ${i}`): number {
  const v = args[i];
  const n = typeof v === 'string' && /^-?\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n)) throw fault('FIELD_TYPE_ERROR', what);
  return n;
}

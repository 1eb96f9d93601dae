import { newRef, newUuid } from '../ids.js';
import { fault } from '../xapi-fault.js';
import { RECORD_DEFAULTS } from './defaults.js';
import { CLASSES, cloneWire, type Wire, type XClass, type XRecord } from './wire.js';

/** One row change, as `event.from` reports it. */
export interface DbEvent {
  /** The generation this change got. */
  readonly gen: number;
  /** The class, lowercase, as XAPI names it in events. */
  readonly cls: string;
  /** `add`, `mod` or `del`. */
  readonly operation: 'add' | 'mod' | 'del';
  /** The object's reference. */
  readonly ref: string;
  /** The record after the change (absent for `del`). */
  readonly snapshot?: XRecord;
}

const MAX_EVENTS = 100_000;

/**
 * The simulator's object store: one table per class, every change numbered by a generation and
 * kept in an event log for `event.from`. Reads return copies; writes go through `create`,
 * `update` and `destroy`, each recording one event.
 */
export class Database {
  private readonly tables = new Map<XClass, Map<string, XRecord>>(CLASSES.map((c) => [c, new Map()]));
  private readonly log: DbEvent[] = [];
  private generation = 0;
  private listeners = new Set<() => void>();
  private readonly lowerToClass = new Map<string, XClass>(CLASSES.map((c) => [c.toLowerCase(), c]));

  /** The current generation (the last change's number). */
  get gen(): number {
    return this.generation;
  }

  /** The class of a lowercase event class name, if served. */
  classOf(name: string): XClass | undefined {
    return this.lowerToClass.get(name.toLowerCase());
  }

  /** Creates an object from the class defaults and the given fields; returns its ref. */
  create(cls: XClass, fields: XRecord, ref: string = newRef()): string {
    const record: XRecord = { ...RECORD_DEFAULTS[cls](), ...cloneWire(fields) };
    if (record.uuid === '' || record.uuid === undefined) record.uuid = newUuid();
    this.table(cls).set(ref, record);
    this.record(cls, 'add', ref, record);
    return ref;
  }

  /** True if `ref` is an object of `cls`. */
  has(cls: XClass, ref: string): boolean {
    return this.table(cls).has(ref);
  }

  /** A copy of the record, or `HANDLE_INVALID [cls, ref]`. */
  get(cls: XClass, ref: string): XRecord {
    return cloneWire(this.raw(cls, ref));
  }

  /** A field of the record (a copy), or `HANDLE_INVALID`. */
  field<T extends Wire>(cls: XClass, ref: string, name: string): T {
    return cloneWire(this.raw(cls, ref)[name] as T);
  }

  /** Every ref of the class. */
  refs(cls: XClass): string[] {
    return [...this.table(cls).keys()];
  }

  /** Every `[ref, record]` of the class (copies). */
  entries(cls: XClass): [string, XRecord][] {
    return [...this.table(cls)].map(([r, rec]) => [r, cloneWire(rec)]);
  }

  /** The ref whose `uuid` is `uuid`, or `UUID_INVALID [cls, uuid]`. */
  byUuid(cls: XClass, uuid: string): string {
    for (const [ref, rec] of this.table(cls)) if (rec.uuid === uuid) return ref;
    throw fault('UUID_INVALID', cls, uuid);
  }

  /** Changes fields of an object and records one `mod` event. */
  update(cls: XClass, ref: string, patch: XRecord): void {
    const record = this.raw(cls, ref);
    Object.assign(record, cloneWire(patch));
    this.record(cls, 'mod', ref, record);
  }

  /** Records a `mod` event without changing anything (`event.inject`). */
  touch(cls: XClass, ref: string): void {
    this.record(cls, 'mod', ref, this.raw(cls, ref));
  }

  /** Removes an object and records a `del` event. */
  destroy(cls: XClass, ref: string): void {
    this.raw(cls, ref);
    this.table(cls).delete(ref);
    this.record(cls, 'del', ref);
  }

  /** Adds `value` to the set field `name` of an object (once). */
  addToSet(cls: XClass, ref: string, name: string, value: string): void {
    const set = this.raw(cls, ref)[name] as string[];
    if (!set.includes(value)) this.update(cls, ref, { [name]: [...set, value] });
  }

  /** Removes `value` from the set field `name` of an object, if the object still exists. */
  removeFromSet(cls: XClass, ref: string, name: string, value: string): void {
    const record = this.table(cls).get(ref);
    if (record === undefined) return;
    const set = record[name] as string[];
    if (set.includes(value)) this.update(cls, ref, { [name]: set.filter((v) => v !== value) });
  }

  /** Events after generation `from`, in order. `undefined` when they are no longer kept. */
  eventsSince(from: number): DbEvent[] | undefined {
    const first = this.log[0];
    if (first !== undefined && first.gen > from + 1) return undefined;
    return this.log.filter((e) => e.gen > from);
  }

  /** Counts of objects per lowercase class name (`valid_ref_counts`). */
  counts(classes: Iterable<XClass> = CLASSES): Record<string, number> {
    const out: Record<string, number> = {};
    for (const cls of classes) out[cls.toLowerCase()] = this.table(cls).size;
    return out;
  }

  /** Resolves when the next change is recorded (or at once if `signal` is aborted). */
  nextChange(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.listeners.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      this.listeners.add(done);
      signal?.addEventListener('abort', done, { once: true });
      if (signal?.aborted) done();
    });
  }

  private raw(cls: XClass, ref: string): XRecord {
    const record = this.table(cls).get(ref);
    if (record === undefined) throw fault('HANDLE_INVALID', cls, ref);
    return record;
  }

  private table(cls: XClass): Map<string, XRecord> {
    const table = this.tables.get(cls);
    if (table === undefined) throw fault('HANDLE_INVALID', cls, '');
    return table;
  }

  private record(cls: XClass, operation: DbEvent['operation'], ref: string, snapshot?: XRecord): void {
    const event: DbEvent = {
      gen: ++this.generation,
      cls: cls.toLowerCase(),
      operation,
      ref,
      ...(snapshot === undefined ? {} : { snapshot: cloneWire(snapshot) }),
    };
    this.log.push(event);
    if (this.log.length > MAX_EVENTS) this.log.splice(0, this.log.length - MAX_EVENTS);
    const listeners = [...this.listeners];
    this.listeners = new Set();
    for (const l of listeners) l();
  }
}

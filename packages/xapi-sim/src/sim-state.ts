import type { Appliances } from './abd/appliances.js';
import type { CallContext, MethodTable } from './api/registry.js';
import { startTask } from './api/task-runner.js';
import { Faults } from './faults.js';
import type { Database } from './model/database.js';
import type { Wire } from './model/wire.js';
import { NbdStats } from './nbd/nbd-stats.js';
import type { CbtStore } from './storage/cbt-store.js';
import { fault } from './xapi-fault.js';

/** A logged-in session. */
export interface SimSession {
  /** The session's uuid (`session.get_uuid`). */
  readonly uuid: string;
  /** The user name it logged in with. */
  readonly user: string;
}

/** The refs of the objects every simulated pool starts with. */
export interface PoolRefs {
  readonly pool: string;
  readonly host: string;
  readonly dom0: string;
  readonly sr: string;
  readonly network: string;
}

/**
 * Everything the simulated host knows: its database, its sessions, the running tasks, its
 * storage and the method table; `call` is the one door every RPC goes through.
 */
export class SimState {
  /** Logged-in sessions by ref. */
  readonly sessions = new Map<string, SimSession>();
  /** Controllers of running Async tasks, by task ref (for `task.cancel`). */
  readonly running = new Map<string, AbortController>();
  /** Methods held back on demand (fault injection): tasks of these stay pending until released. */
  readonly holds = new Map<string, Promise<void>>();
  /** Failures on demand. */
  readonly faults = new Faults();
  /** What the NBD server served, per export. */
  readonly nbdStats = new NbdStats();
  private readonly closer = new AbortController();
  private queue: Promise<unknown> = Promise.resolve();
  private domid = 0;
  /** Where the NBD server listens and the certificate it presents, once started. */
  nbd: { readonly address: string; readonly port: number; readonly cert: string; readonly subject: string } | undefined;
  /** The delegate appliances (their agents), once the simulator has started. */
  abd: Appliances | undefined;
  /**
   * `VDI.create` rounds `virtual_size` up to a multiple of this, as an SR's storage manager does
   * (1: sizes kept exact). See `XapiSimOptions.vdiSizeStep`.
   */
  vdiSizeStep = 1;

  constructor(
    readonly db: Database,
    readonly methods: MethodTable,
    readonly refs: PoolRefs,
    readonly cbt: CbtStore,
    readonly credentials: { readonly user: string; readonly password: string },
    readonly srDir: (srRef: string) => string,
  ) {}

  /** Fires when the simulator shuts down (long-polls return at once). */
  get closing(): AbortSignal {
    return this.closer.signal;
  }

  /** Ends long-polls and cancels running tasks. */
  close(): void {
    this.closer.abort();
    for (const c of this.running.values()) c.abort();
  }

  /**
   * Runs storage work one piece at a time, so that a snapshot of several disks and the guest's
   * writes never interleave (a VM snapshot sees one instant).
   */
  serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** The next domain id a starting VM gets. */
  nextDomid(): number {
    return ++this.domid;
  }

  /** The path of a VDI's data file. */
  vdiPath(vdiRef: string): string {
    const sr = this.db.field<string>('VDI', vdiRef, 'SR');
    const uuid = this.db.field<string>('VDI', vdiRef, 'uuid');
    return `${this.srDir(sr)}/${uuid}.raw`;
  }

  /** Checks a session ref; `SESSION_INVALID [ref]` otherwise. */
  checkSession(ref: Wire | undefined): string {
    if (typeof ref !== 'string' || !this.sessions.has(ref)) throw fault('SESSION_INVALID', String(ref ?? ''));
    return ref;
  }

  /** Runs one API call: method lookup, session, parameter count, then the handler or a task. */
  async call(method: string, params: Wire[]): Promise<Wire> {
    const { spec, isAsync } = this.methods.lookup(method);
    const takesSession = spec.session !== false;
    const extra = takesSession ? 1 : 0;
    const min = (spec.minArity ?? spec.arity) + extra;
    const max = spec.arity + extra;
    if (params.length < min || params.length > max) {
      throw fault('MESSAGE_PARAMETER_COUNT_MISMATCH', method, max, params.length);
    }
    const session = takesSession ? this.checkSession(params[0]) : '';
    const args = params.slice(extra);
    if (isAsync) {
      this.faults.checkPendingTasks(this);
      return startTask(this, session, spec, args);
    }
    this.faults.takeFailure(spec.name);
    const ctx: CallContext = { sim: this, session };
    const result = await spec.run(ctx, args);
    return result === undefined ? '' : result;
  }
}

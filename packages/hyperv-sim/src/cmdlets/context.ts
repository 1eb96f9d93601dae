import type { HostState } from '../host/host-state.js';

/** What a simulated cmdlet gets: the host, its state, and its bound parameters. */
export interface CmdletContext {
  /** The host folder. */
  readonly root: string;
  /** The host's state, saved after the call when `dirty` is set. */
  readonly state: HostState;
  /** Marks the state as changed. */
  markDirty(): void;
  /** The value bound to a parameter (`true` for a switch), `undefined` when absent. */
  arg(name: string): unknown;
  /** Whether the parameter was written. */
  has(name: string): boolean;
}

/** A simulated cmdlet: returns the objects it writes to the pipeline (already projected). */
export type CmdletHandler = (context: CmdletContext) => Promise<unknown>;

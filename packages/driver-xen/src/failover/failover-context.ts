import type { OperationOptions } from '@replikit/core';
import type { XenConnection } from '../xapi/xen-connection.js';
import type { XenTarget } from '../xen-target.js';

/** Called at the named step of a failover hook (crash tests kill the process there). */
export type XenFailoverFaultHook = (point: string) => void | Promise<void>;

/** What the failover hooks of the Xen driver work with. */
export interface XenFailoverContext {
  /** The pool session. */
  readonly connection: XenConnection;
  /** The replica side (points, revert, holds). */
  readonly target: XenTarget;
  /** Crash-test hook. */
  readonly faultHook?: XenFailoverFaultHook | undefined;
}

/** `{ signal }` of `options`, as XAPI calls take it. */
export const sig = (options?: OperationOptions): { signal?: AbortSignal } =>
  options?.signal ? { signal: options.signal } : {};

/** A string field of a XAPI record, `''` when it is not one. */
export const str = (v: unknown): string => (typeof v === 'string' ? v : '');

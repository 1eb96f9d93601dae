// The npm `xen-api` client (4.7.x) ships no types. These declare the parts this driver uses.
// Declared as an interface (not a class) and with the same shapes as any other declaration of the
// module in the workspace, so that both merge.
declare module 'xen-api' {
  /** The client: one XAPI session and its event loop. */
  export interface Xapi {
    /** Logs in, fetches the pool and starts watching events. */
    connect(): Promise<void>;
    /** Logs out and stops the event loop. */
    disconnect(): Promise<void>;
    /** Calls `method` with the session prepended; rejects with an `XapiError` (`code`, `params`). */
    call<T = unknown>(method: string, ...args: unknown[]): Promise<T>;
    /** Waits for a task to finish, through events; resolves with its parsed result. */
    watchTask<T = unknown>(ref: string): Promise<T>;
    /** Resolves once the watched classes were fetched for the first time. */
    readonly objectsFetched: Promise<void>;
    /** The session reference once connected. */
    readonly sessionId: string;
  }

  /** What `createClient` accepts (the options this driver sets). */
  export interface XenApiClientOptions {
    url: string;
    auth: { user: string; password: string } | { sessionId: string };
    allowUnauthorized?: boolean;
    transport?: 'auto' | 'json-rpc' | 'xml-rpc';
    watchEvents?: boolean | string[];
    debounce?: number;
    callTimeout?: number;
    httpInactivityTimeout?: number;
  }

  /** Creates a client; `connect()` logs in. */
  export function createClient(options: XenApiClientOptions): Xapi;
}

// The npm `xen-api` client ships no types; these cover what the tests use.
declare module 'xen-api' {
  import type { EventEmitter } from 'node:events';

  export interface XapiRecord {
    readonly $ref: string;
    readonly $type: string;
    readonly uuid: string;
    readonly [field: string]: unknown;
  }

  export interface XapiObjects extends EventEmitter {
    readonly all: Record<string, XapiRecord>;
    readonly indexes: { type: Record<string, Record<string, XapiRecord>> };
  }

  export class Xapi extends EventEmitter {
    connect(): Promise<void>;
    disconnect(): Promise<void>;
    call<T = unknown>(method: string, ...args: unknown[]): Promise<T>;
    callAsync<T = unknown>(method: string, ...args: unknown[]): Promise<T>;
    callAsync<T = unknown>(token: unknown, method: string, ...args: unknown[]): Promise<T>;
    watchTask<T = unknown>(ref: string): Promise<T>;
    barrier(ref?: string): Promise<XapiRecord | undefined>;
    getObject(idOrRef: string, defaultValue?: unknown): XapiRecord;
    getObjectByRef(ref: string, defaultValue?: unknown): XapiRecord;
    getResource(
      pathname: string,
      options?: { query?: Record<string, string>; task?: boolean },
    ): Promise<{
      statusCode: number;
      headers: Record<string, string>;
      body: NodeJS.ReadableStream & { arrayBuffer(): Promise<ArrayBuffer> };
      task?: Promise<unknown>;
    }>;
    putResource(
      body: unknown,
      pathname: string,
      options?: { query?: Record<string, string>; task?: boolean },
    ): Promise<unknown>;
    readonly objects: XapiObjects;
    readonly objectsFetched: Promise<void>;
    readonly sessionId: string;
    readonly status: string;
  }

  export function createClient(options: {
    url: string;
    auth: { user: string; password: string } | { sessionId: string };
    allowUnauthorized?: boolean;
    transport?: 'auto' | 'json-rpc' | 'xml-rpc';
    watchEvents?: boolean | string[];
    debounce?: number;
  }): Xapi;
}

declare module 'promise-toolbox' {
  export class CancelToken {
    readonly requested: boolean;
    static source(): { cancel(message?: string): void; token: CancelToken };
  }
  export class Cancel {
    readonly message: string;
  }
}

import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { AbortError, AuthError, DriverError, throwIfAborted } from '@replikit/core';
import { createClient, type Xapi } from 'xen-api';
import { backoffDelay, DEFAULT_RETRY, type RetryPolicy, raceAbort, sleep } from './backoff.js';
import { type CredentialRef, resolveCredentials } from './credentials.js';
import { pinXapiClient } from './pinned-client.js';
import { checkPinnedCertificate, pinnedConnector } from './tls-pin.js';
import { isDroppedConnection, RETRYABLE_XAPI_CODES, wrapXapiError, xapiCodeOf } from './xapi-error.js';

/** How to reach a pool. */
export interface XenConnectionOptions extends CredentialRef {
  /** The pool master's URL. */
  url: string;
  /** SHA-256 fingerprint the master's certificate must have. */
  fingerprint?: string | undefined;
  /** Accept any certificate (a warning is emitted). */
  allowUnauthorized?: boolean | undefined;
  /** Retry policy. @default {@link DEFAULT_RETRY} */
  retry?: Partial<RetryPolicy> | undefined;
  /** Called with each warning (default: `process.emitWarning`). */
  onWarning?: ((message: string) => void) | undefined;
  /** Cancels the connection attempt. */
  signal?: AbortSignal | undefined;
}

/** Options of one call. */
export interface CallOptions {
  /** Cancels the call; an `Async.` task is then cancelled on the pool. */
  signal?: AbortSignal | undefined;
  /** Retry on `VDI_IN_USE` too. @default true */
  retryInUse?: boolean;
}

/**
 * One session with a XenServer pool through the `xen-api` client: every call is cancellable,
 * retried with backoff on `TOO_MANY_PENDING_TASKS`, `VDI_IN_USE` and dropped connections, and its
 * errors become `ReplikitError`s carrying the XAPI code in `details`.
 */
export class XenConnection {
  /** Calls retried so far, by reason (for tests and logs). */
  readonly retries = new Map<string, number>();

  private constructor(
    private readonly xapi: Xapi,
    /** The pool master's URL. */
    readonly url: URL,
    private readonly policy: RetryPolicy,
    private readonly insecure: boolean,
    /** The pinned fingerprint: each HTTPS request checks it before sending. */
    private readonly pin?: string | undefined,
  ) {}

  /** Request options that pin the certificate (when one is pinned) or accept any. */
  private tlsOptions(): Pick<RequestOptions, 'rejectUnauthorized' | 'createConnection'> {
    return this.pin !== undefined
      ? {
          rejectUnauthorized: false,
          // the callback form: the request is written only once the pinned socket is handed over
          createConnection: pinnedConnector(this.pin) as unknown as RequestOptions['createConnection'],
        }
      : { rejectUnauthorized: !this.insecure };
  }

  /**
   * Resolves the credentials, checks the pinned certificate, logs in.
   *
   * @throws `E_AUTH` for missing credentials, a refused login or another certificate.
   */
  static async open(options: XenConnectionOptions): Promise<XenConnection> {
    const url = new URL(options.url);
    const { user, password } = await resolveCredentials(options);
    const https = url.protocol === 'https:';
    if (options.fingerprint !== undefined && https) {
      await checkPinnedCertificate(url.hostname, Number(url.port || 443), options.fingerprint);
    }
    if (options.allowUnauthorized && https) {
      const warn = options.onWarning ?? ((m: string) => process.emitWarning(m, { code: 'REPLIKIT_XEN_INSECURE_TLS' }));
      warn(`xen: allowUnauthorized accepts any TLS certificate at ${url.host}; pin it with fingerprint instead`);
    }
    const insecure = options.allowUnauthorized === true || options.fingerprint !== undefined;
    const xapi = createClient({
      url: url.origin,
      auth: { user, password },
      allowUnauthorized: insecure,
      watchEvents: ['task'],
      debounce: 20,
    });
    // The check above gives the early answer; every connection of the client, and the driver's
    // own GET and PUT, checks the pin again before it sends anything.
    const pin = options.fingerprint !== undefined && https ? options.fingerprint : undefined;
    if (pin !== undefined) pinXapiClient(xapi, pin);
    const conn = new XenConnection(xapi, url, { ...DEFAULT_RETRY, ...options.retry }, insecure, pin);
    try {
      await conn.retrying(`logging in to ${url.host}`, options.signal, true, () =>
        raceAbort(xapi.connect(), options.signal),
      );
      // The first fetch of watched records runs on after connect(): a disconnect during it makes
      // the client log an assertion. Wait for it.
      await raceAbort(xapi.objectsFetched, options.signal);
    } catch (error) {
      await xapi.disconnect().catch(() => undefined);
      throw error;
    }
    return conn;
  }

  /** The session reference (for export names and HTTP paths; never logged). */
  get sessionId(): string {
    return this.xapi.sessionId;
  }

  /** Calls a XAPI method (the session is prepended); retried as the class says. */
  call<T>(method: string, args: unknown[], options: CallOptions = {}): Promise<T> {
    return this.retrying(method, options.signal, options.retryInUse !== false, () =>
      raceAbort(this.xapi.call<T>(method, ...args), options.signal),
    );
  }

  /**
   * Calls `Async.<method>` and waits for its task; on abort the task is cancelled on the pool.
   * Retried as a whole when the task fails with a retryable code.
   */
  callAsync<T>(method: string, args: unknown[], options: CallOptions = {}): Promise<T> {
    const { signal } = options;
    return this.retrying(method, signal, options.retryInUse !== false, async () => {
      const creating = this.xapi.call<string>(`Async.${method}`, ...args);
      let task: string;
      try {
        task = await raceAbort(creating, signal);
      } catch (error) {
        // Aborted while XAPI was creating the task: wait for its ref (an Async call answers at
        // once) and cancel it, so no task runs on after the caller was told it was cancelled.
        if (signal?.aborted) await creating.then((ref) => this.xapi.call('task.cancel', ref)).catch(() => undefined);
        throw error;
      }
      const result = this.xapi.watchTask<T>(task);
      try {
        return await raceAbort(result, signal);
      } catch (error) {
        if (signal?.aborted) {
          result.catch(() => undefined);
          await this.xapi.call('task.cancel', task).catch(() => undefined);
        }
        throw error;
      }
    });
  }

  /**
   * GETs a host path (`/export_raw_vdi`…) with the session; resolves with the response once its
   * headers are in. The caller consumes or destroys the body.
   */
  async get(path: string, query: Record<string, string>, signal?: AbortSignal): Promise<IncomingMessage> {
    throwIfAborted(signal);
    const target = new URL(path, this.url);
    for (const [k, v] of Object.entries({ ...query, session_id: this.sessionId })) target.searchParams.set(k, v);
    const request = target.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = request(target, { method: 'GET', ...this.tlsOptions(), signal }, (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          const code = res.statusCode === 401 ? 'E_AUTH' : 'E_DRIVER';
          const message = `GET ${path} answered HTTP ${res.statusCode}`;
          reject(
            code === 'E_AUTH'
              ? new AuthError(message)
              : new DriverError(message, { details: { status: res.statusCode } }),
          );
          return;
        }
        resolve(res);
      });
      req.once('error', (error) => reject(signal?.aborted ? new AbortError() : error));
      req.end();
    });
  }

  /**
   * PUTs `length` bytes of `body` to a host path (`/import_raw_vdi`…) under a task of its own, and
   * resolves once XAPI has finished that task (failures of the import show only there).
   */
  async put(
    path: string,
    query: Record<string, string>,
    body: AsyncIterable<Uint8Array>,
    length: number,
    signal?: AbortSignal,
  ): Promise<void> {
    throwIfAborted(signal);
    const task = await this.xapi.call<string>('task.create', `replikit PUT ${path}`, '');
    const result = this.xapi.watchTask<unknown>(task);
    result.catch(() => undefined); // awaited below, after the upload
    try {
      const target = new URL(path, this.url);
      const params = { ...query, session_id: this.sessionId, task_id: task };
      for (const [k, v] of Object.entries(params)) target.searchParams.set(k, v);
      const request = target.protocol === 'https:' ? httpsRequest : httpRequest;
      await new Promise<void>((resolve, reject) => {
        const req = request(target, {
          method: 'PUT',
          headers: { 'content-length': String(length) },
          ...this.tlsOptions(),
          signal,
        });
        req.once('error', (error) => reject(signal?.aborted ? new AbortError() : error));
        req.once('response', (res) => {
          res.resume();
          if (res.statusCode !== 200) {
            reject(
              new DriverError(`PUT ${path} answered HTTP ${res.statusCode}`, { details: { status: res.statusCode } }),
            );
          }
        });
        (async () => {
          for await (const chunk of body) {
            if (req.destroyed) throw new DriverError(`PUT ${path}: the connection closed during the upload`);
            if (!req.write(chunk)) await drainOrClose(req);
          }
          req.end(resolve);
        })().catch((error) => {
          req.destroy();
          reject(error);
        });
      });
      await raceAbort(result, signal);
    } catch (error) {
      if (signal?.aborted) await this.xapi.call('task.cancel', task).catch(() => undefined);
      throw wrapXapiError(error, `PUT ${path}`, signal);
    } finally {
      await this.xapi.call('task.destroy', task).catch(() => undefined);
    }
  }

  /**
   * Logs out and closes the client's connections. Calling it twice is harmless.
   *
   * `xen-api`'s `disconnect()` stops its event loop but leaves the loop's pending `event.from`
   * (up to 60 s on a real pool) and keep-alive sockets open, which kept a `replikit run` process
   * alive long after its run. The client's HTTP dispatcher (undici) is destroyed to end them,
   * failing the pending poll with `SESSION_INVALID`: the code on which the client's event loop
   * starts over quietly (it then waits for a connect that never comes) instead of printing a warning.
   */
  async close(): Promise<void> {
    await this.xapi.disconnect().catch(() => undefined);
    const dispatcher = (this.xapi as { _undiciDispatcher?: { destroy?(error?: Error): Promise<void> } })
      ._undiciDispatcher;
    if (typeof dispatcher?.destroy !== 'function') return;
    const closed = Object.assign(new Error('the XAPI connection was closed'), { code: 'SESSION_INVALID' });
    await dispatcher.destroy(closed).catch(() => undefined);
  }

  private async retrying<T>(
    what: string,
    signal: AbortSignal | undefined,
    retryInUse: boolean,
    attempt: () => Promise<T>,
  ): Promise<T> {
    for (let n = 0; ; n++) {
      throwIfAborted(signal);
      try {
        return await attempt();
      } catch (error) {
        const code = xapiCodeOf(error)?.code;
        const reason = isDroppedConnection(error)
          ? 'DROPPED_CONNECTION'
          : code !== undefined && RETRYABLE_XAPI_CODES.has(code) && (retryInUse || code !== 'VDI_IN_USE')
            ? code
            : undefined;
        if (signal?.aborted || reason === undefined || n + 1 >= this.policy.attempts) {
          throw wrapXapiError(error, `XAPI ${what}`, signal);
        }
        this.retries.set(reason, (this.retries.get(reason) ?? 0) + 1);
        await sleep(backoffDelay(this.policy, n), signal);
      }
    }
  }
}

/** Waits until `stream` drains or closes: a closed request never drains, and must not hang the upload. */
function drainOrClose(stream: NodeJS.WritableStream & NodeJS.EventEmitter): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.once('drain', done);
    stream.once('close', done);
  });
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import { TokenBucket } from '@replikit/core/internal';
import { createTask, failTask } from '../api/task-runner.js';
import type { SimState } from '../sim-state.js';
import { fault } from '../xapi-fault.js';

/** A data-path request after authentication: its session and the task it drives. */
export interface DataRequest {
  readonly session: string;
  readonly task: string;
}

function cookieSession(req: IncomingMessage): string | undefined {
  const cookie = req.headers.cookie;
  if (cookie === undefined) return undefined;
  for (const part of cookie.split(';')) {
    const [k, v] = part.trim().split('=', 2);
    if (k === 'session_id' && v !== undefined) return v;
  }
  return undefined;
}

function basicSession(sim: SimState, req: IncomingMessage): string | undefined {
  const auth = req.headers.authorization;
  if (auth === undefined || !auth.startsWith('Basic ')) return undefined;
  const [user, password] = Buffer.from(auth.slice(6), 'base64').toString('utf8').split(':', 2);
  if (user !== sim.credentials.user || password !== sim.credentials.password) return undefined;
  return '';
}

/**
 * Authenticates a data-path request as XAPI does (`session_id` in the query or a cookie, or HTTP
 * Basic), else answers 401 and fails a supplied task with `SESSION_AUTHENTICATION_FAILED`. Uses
 * the `task_id` given, or creates a task of its own (named in the `task-id` header).
 */
export function openDataRequest(
  sim: SimState,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  label: string,
): DataRequest | undefined {
  const taskId = url.searchParams.get('task_id') ?? undefined;
  const session = url.searchParams.get('session_id') ?? cookieSession(req);
  const valid = session !== undefined && sim.sessions.has(session) ? session : basicSession(sim, req);
  if (valid === undefined) {
    if (taskId !== undefined && sim.db.has('task', taskId))
      failTask(sim, taskId, fault('SESSION_AUTHENTICATION_FAILED'));
    res.writeHead(401, { 'content-type': 'text/plain', connection: 'close' });
    res.end('unauthorized\n');
    return undefined;
  }
  if (taskId !== undefined && !sim.db.has('task', taskId)) {
    res.writeHead(404, { 'content-type': 'text/plain', connection: 'close' });
    res.end('no such task\n');
    return undefined;
  }
  return { session: valid, task: taskId ?? createTask(sim, label) };
}

/** Resolves a `vdi=`/`base=` query value given as a ref or a uuid. */
export function resolveVdi(sim: SimState, value: string | null): string | undefined {
  if (value === null || value === '') return undefined;
  if (sim.db.has('VDI', value)) return value;
  try {
    return sim.db.byUuid('VDI', value);
  } catch {
    return undefined;
  }
}

/** Sends status and headers now, with no Content-Length and no chunking: the body ends at close. */
export function startCloseDelimited(res: ServerResponse, status: number, headers: Record<string, string>): void {
  res.shouldKeepAlive = false;
  res.removeHeader('transfer-encoding');
  res.writeHead(status, { ...headers, connection: 'close' });
  res.flushHeaders();
}

/** Answers an error status with a short text body and closes. */
export function refuse(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain', connection: 'close' });
  res.end(`${text}\n`);
}

/**
 * Writes an export body with back-pressure, applying the faults asked for: a slow link (a token
 * bucket) and a connection dropped after some bytes (the next export only).
 */
export function bodyWriter(sim: SimState, res: ServerResponse): (chunk: Uint8Array) => Promise<void> {
  const rate = sim.faults.linkBytesPerSecond;
  const bucket = rate === undefined ? undefined : new TokenBucket(rate);
  let dropAt = sim.faults.dropNextExportAfter;
  sim.faults.dropNextExportAfter = undefined;
  let sent = 0;
  return async (chunk) => {
    if (res.destroyed) throw fault('VDI_IO_ERROR', 'the client closed the connection');
    if (dropAt !== undefined && sent + chunk.length >= dropAt) {
      const part = chunk.subarray(0, dropAt - sent);
      dropAt = undefined;
      res.write(part);
      res.destroy();
      throw fault('VDI_IO_ERROR', 'the connection was dropped (fault on demand)');
    }
    await bucket?.take(chunk.length);
    sent += chunk.length;
    if (!res.write(chunk)) {
      // Both listeners go as soon as one fires: a long export waits for `drain` thousands of times.
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          res.off('close', onClose);
          resolve();
        };
        const onClose = () => {
          res.off('drain', onDrain);
          reject(fault('VDI_IO_ERROR', 'the client closed the connection'));
        };
        res.once('drain', onDrain);
        res.once('close', onClose);
      });
    }
  };
}

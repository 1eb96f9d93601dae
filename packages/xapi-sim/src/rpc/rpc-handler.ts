import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Wire } from '../model/wire.js';
import type { SimState } from '../sim-state.js';
import { describeError } from '../xapi-fault.js';
import { methodResponse, parseMethodCall } from './xml-value.js';

/** Largest RPC body accepted (XAPI's own limit is in the same range). */
const MAX_BODY = 16 * 1024 * 1024;

async function readBody(req: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  // exactly this content type: the xen-api client falls back to XML-RPC on anything else
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** Envelope fields of a JSON-RPC request that the reply echoes. */
interface JsonRequest {
  readonly id: Wire | null;
  readonly v2: boolean;
}

function jsonError(req: JsonRequest, description: string[]): string {
  const [code = 'INTERNAL_ERROR', ...data] = description;
  if (!req.v2) return JSON.stringify({ result: null, error: description, id: req.id });
  return JSON.stringify({ jsonrpc: '2.0', error: { code: 1, message: code, data }, id: req.id });
}

/** `POST /jsonrpc`: XAPI's JSON-RPC envelope (v2 error objects, v1 error arrays). */
export async function handleJsonRpc(sim: SimState, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const text = await readBody(req);
  let parsed: unknown;
  try {
    parsed = text === undefined ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const body = parsed as { jsonrpc?: unknown; method?: unknown; params?: unknown; id?: unknown } | undefined;
  const id =
    body !== undefined && body !== null && (typeof body.id === 'number' || typeof body.id === 'string') ? body.id : 0;
  const envelope: JsonRequest = { id, v2: body?.jsonrpc === '2.0' || body === undefined };
  if (typeof body !== 'object' || body === null || Array.isArray(body) || typeof body.method !== 'string') {
    send(res, 200, 'application/json', jsonError({ id, v2: true }, ['JSONRPC_PARSE_FAILURE', 'invalid request']));
    return;
  }
  const params = body.params === undefined ? [] : body.params;
  if (!Array.isArray(params)) {
    send(res, 200, 'application/json', jsonError(envelope, ['JSONRPC_PARSE_FAILURE', 'params must be an array']));
    return;
  }
  try {
    const result = await sim.call(body.method, params as Wire[]);
    const reply = envelope.v2 ? { jsonrpc: '2.0', result, id } : { result, error: null, id };
    send(res, 200, 'application/json', JSON.stringify(reply));
  } catch (error) {
    send(res, 200, 'application/json', jsonError(envelope, describeError(error)));
  }
}

/** `POST /` (and `/xmlrpc`, `/RPC2`): XML-RPC with XAPI's `{Status, Value|ErrorDescription}`. */
export async function handleXmlRpc(sim: SimState, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const text = await readBody(req);
  let reply: Record<string, Wire>;
  try {
    if (text === undefined) throw new Error('request too large');
    const { method, params } = parseMethodCall(text);
    reply = { Status: 'Success', Value: await sim.call(method, params) };
  } catch (error) {
    reply = { Status: 'Failure', ErrorDescription: describeError(error) };
  }
  send(res, 200, 'text/xml', methodResponse(reply));
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import { handleJsonRpc, handleXmlRpc } from '../rpc/rpc-handler.js';
import type { SimState } from '../sim-state.js';

/** A handler of one HTTP path prefix. */
export type Route = (sim: SimState, req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void>;

/**
 * Routes a request by the longest matching prefix, as XAPI's HTTP server does: `/jsonrpc` to
 * JSON-RPC, data paths to their handlers, any other POST to XML-RPC.
 */
export function createRequestHandler(sim: SimState, dataRoutes: Record<string, Route>) {
  const prefixes = Object.keys(dataRoutes).sort((a, b) => b.length - a.length);
  return (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const done = (error: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'text/plain', connection: 'close' });
        res.end(`internal error: ${error instanceof Error ? error.message : String(error)}\n`);
      } else {
        res.destroy();
      }
    };
    const prefix = prefixes.find((p) => url.pathname.startsWith(p));
    let work: Promise<void>;
    if (url.pathname.startsWith('/jsonrpc') && req.method === 'POST') work = handleJsonRpc(sim, req, res);
    else if (prefix !== undefined) work = dataRoutes[prefix]!(sim, req, res, url);
    else if (req.method === 'POST') work = handleXmlRpc(sim, req, res);
    else {
      res.writeHead(404, { 'content-type': 'text/plain', connection: 'close' });
      res.end('not found\n');
      return;
    }
    work.catch(done);
  };
}

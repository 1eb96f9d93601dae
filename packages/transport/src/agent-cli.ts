import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { type DriverRegistry, type EndpointSpec, InputError, isReplikitError } from '@replikit/core';
import { createAgent } from './agent.js';
import type { AnyHasherFactory } from './hasher.js';
import type { Address, Security } from './security.js';

/** What {@link runAgentCli} needs from its process. */
export interface AgentCliIO {
  /** Environment: `REPLIKIT_AGENT_*` variables stand in for flags. */
  env: NodeJS.ProcessEnv;
  /** Where the one-line-per-session log goes. */
  log(line: string): void;
  /** The drivers the agent can serve (the CLI registers the built-in ones). */
  drivers: DriverRegistry;
  /** Aborted on SIGTERM/SIGINT: the agent stops gracefully and the promise resolves. */
  signal: AbortSignal;
  /** Hashers for the digest checks (the CLI passes the dedup pool, which knows `xxh128`). */
  hasher?: AnyHasherFactory;
  /** Called once the agent listens or pulls (tests wait for it instead of sleeping). */
  onReady?(address: Address | undefined): void;
}

/** Usage of `replikit-agent`. */
export const AGENT_USAGE = `replikit-agent: serves replica writes for replikit sessions

usage:
  replikit-agent --root DIR [--listen HOST:PORT | --pull-from HOST:PORT] [security]

  --driver KIND        driver of the disks beside the agent (default: file)
  --root DIR           the driver's root folder (env REPLIKIT_AGENT_ROOT)
  --listen HOST:PORT   accept pushed sessions (default 127.0.0.1:7400; env REPLIKIT_AGENT_LISTEN)
  --pull-from HOST:PORT connect to a source that waits for this agent (env REPLIKIT_AGENT_PULL_FROM)
  --idle-timeout SECONDS close a connection whose source sent nothing for this long; 0: never
                       (default 300; env REPLIKIT_AGENT_IDLE_TIMEOUT)
security (TLS by default):
  --psk-identity ID    TLS-PSK identity; the key (hex, >= 16 bytes) comes from env REPLIKIT_AGENT_PSK
                       or --key-file
  --cert FILE --key FILE --trust SHA256[,SHA256]
                       TLS with this certificate, accepting only the pinned peer certificates
  --tcp                plain TCP; a key from REPLIKIT_AGENT_PSK/--key-file is then proven in hello
`;

function parseAddress(value: string, what: string): Address {
  const match = /^(.+):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[2]) : Number.NaN;
  if (!match || port > 65535) throw new InputError(`${what} must be HOST:PORT, got '${value}'`);
  return { host: match[1]!.replace(/^\[|\]$/g, ''), port };
}

function parseKey(hex: string, what: string): Uint8Array {
  const clean = hex.trim();
  if (!/^([0-9a-fA-F]{2}){16,}$/.test(clean)) throw new InputError(`${what} must be at least 16 bytes of hex`);
  return Buffer.from(clean, 'hex');
}

/**
 * The `replikit-agent` program: parses flags (and `REPLIKIT_AGENT_*` variables), opens the
 * driver, starts the agent, and runs until `io.signal` aborts. Returns the exit code.
 */
export async function runAgentCli(argv: string[], io: AgentCliIO): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      driver: { type: 'string' },
      root: { type: 'string' },
      listen: { type: 'string' },
      'pull-from': { type: 'string' },
      'psk-identity': { type: 'string' },
      'key-file': { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      trust: { type: 'string' },
      tcp: { type: 'boolean', default: false },
      'idle-timeout': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    io.log(AGENT_USAGE);
    return 0;
  }
  const env = io.env;
  const root = values.root ?? env.REPLIKIT_AGENT_ROOT;
  if (!root) throw new InputError('name the folder the agent serves with --root (or REPLIKIT_AGENT_ROOT)');
  const pullFrom = values['pull-from'] ?? env.REPLIKIT_AGENT_PULL_FROM;
  const listen = values.listen ?? env.REPLIKIT_AGENT_LISTEN ?? (pullFrom ? undefined : '127.0.0.1:7400');
  const keyHex = values['key-file'] ? await readFile(values['key-file'], 'utf8') : env.REPLIKIT_AGENT_PSK;
  let security: Security;
  if (values.tcp) {
    security = { kind: 'tcp', ...(keyHex ? { key: parseKey(keyHex, 'the transport key') } : {}) };
  } else if (values.cert || values.key) {
    if (!values.cert || !values.key || !values.trust) {
      throw new InputError('TLS with certificates needs --cert, --key and --trust');
    }
    security = {
      kind: 'tls',
      certificate: {
        cert: await readFile(values.cert, 'utf8'),
        key: await readFile(values.key, 'utf8'),
        trust: values.trust.split(',').filter(Boolean),
      },
    };
  } else {
    if (!keyHex) {
      throw new InputError('TLS needs a pre-shared key (REPLIKIT_AGENT_PSK or --key-file) or --cert/--key/--trust');
    }
    security = {
      kind: 'tls',
      psk: { identity: values['psk-identity'] ?? 'replikit', key: parseKey(keyHex, 'the pre-shared key') },
    };
  }
  const idleText = values['idle-timeout'] ?? env.REPLIKIT_AGENT_IDLE_TIMEOUT;
  const idleSeconds = idleText === undefined ? undefined : Number(idleText);
  if (idleSeconds !== undefined && !(Number.isFinite(idleSeconds) && idleSeconds >= 0)) {
    throw new InputError(`--idle-timeout must be a number of seconds (0: never), got '${idleText}'`);
  }
  const endpoint = { driver: values.driver ?? 'file', root } as EndpointSpec;
  const target = await io.drivers.create(endpoint);
  const agent = createAgent({
    target,
    security,
    log: io.log,
    ...(io.hasher ? { hasher: io.hasher } : {}),
    ...(idleSeconds !== undefined ? { idleTimeoutMs: Math.round(idleSeconds * 1000) } : {}),
  });
  try {
    let address: Address | undefined;
    if (listen) address = await agent.listen(parseAddress(listen, '--listen'));
    if (pullFrom) agent.pullFrom(parseAddress(pullFrom, '--pull-from'));
    io.onReady?.(address);
    await new Promise<void>((resolve) => {
      if (io.signal.aborted) resolve();
      io.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    io.log('stopping: finishing the blocks in flight');
    await agent.stop();
    return 0;
  } catch (error) {
    io.log(`failed: ${isReplikitError(error) ? `${error.code} ${error.message}` : String(error)}`);
    return 1;
  } finally {
    await target.close();
  }
}

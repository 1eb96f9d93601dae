import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { type DriverRegistry, InputError } from '@replikit/core';
import { createAgent } from './agent.js';
import type { AnyHasherFactory } from './hasher.js';
import type { Address, Security } from './security.js';

/** What {@link runAgentCli} needs from its process. */
export interface AgentCliIO {
  /** Environment: `REPLIKIT_AGENT_*` variables stand in for flags. */
  env: NodeJS.ProcessEnv;
  /** Where the one-line-per-session log goes. */
  log(line: string): void;
  /** Where `--help` prints the usage, as is (no log prefix). @default {@link AgentCliIO.log} */
  print?(text: string): void;
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
export const AGENT_USAGE = `replikit-agent: hosts the target side (replicas, restore points) of replikit jobs

usage:
  replikit-agent --root DIR [--listen HOST:PORT | --pull-from HOST:PORT] [security]

  --driver KIND        driver of the disks beside the agent (default: file)
  --root DIR           the driver's root folder (env REPLIKIT_AGENT_ROOT)
  --listen HOST:PORT   accept pushed sessions (default 127.0.0.1:7400; env REPLIKIT_AGENT_LISTEN)
  --pull-from HOST:PORT connect to a source that waits for this agent (env REPLIKIT_AGENT_PULL_FROM)
  --idle-timeout SECONDS close a connection whose source sent nothing for this long; 0: never
                       (default 300; env REPLIKIT_AGENT_IDLE_TIMEOUT)
  --handshake-timeout SECONDS drop a connection that has not completed the TLS handshake and
                       hello this long after it was accepted; 0: never
                       (default 10; env REPLIKIT_AGENT_HANDSHAKE_TIMEOUT)
  --max-unauthenticated N connections still in their handshake, at most; one more drops the
                       oldest of them (default 128; env REPLIKIT_AGENT_MAX_UNAUTHENTICATED)
  --max-unauthenticated-per-address N the same, per remote address
                       (default 16; env REPLIKIT_AGENT_MAX_UNAUTHENTICATED_PER_ADDRESS)
  --serve-reads        also serve reads of the driver's disks to authenticated peers (the
                       source side of the abd method; env REPLIKIT_AGENT_SERVE_READS=1)
  --host-files         also serve (read AND write) the VHDX files and state files under --root
                       to a hyperv driver that controls this Hyper-V host through PowerShell
                       remoting, as a source or as a replica target
                       (env REPLIKIT_AGENT_HOST_FILES=1)
security (TLS by default):
  --psk-identity ID    TLS-PSK identity; the key (hex, >= 16 bytes) comes from env REPLIKIT_AGENT_PSK
                       or --key-file
  --cert FILE --key FILE --trust SHA256[,SHA256]
                       TLS with this certificate, accepting only the pinned peer certificates
  --tcp                plain TCP; a key from REPLIKIT_AGENT_PSK/--key-file is then proven in hello;
                       without a key, only on a loopback address (127.0.0.0/8, ::1, localhost)

The agent hosts the whole target side of its jobs: the replicas, their holds, marks and restore
points live under --root, and the engine asks for them over the same authenticated link (its host
needs no access to the folder). A replica placed elsewhere is refused with E_INPUT.
exit codes: 0 stopped; 1 failed (E_CONFLICT: the address is in use); 2 wrong input (E_INPUT)
`;

function parseAddress(value: string, what: string): Address {
  const match = /^(.+):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[2]) : Number.NaN;
  if (!match || port > 65535) throw new InputError(`${what} must be HOST:PORT, got '${value}'`);
  return { host: match[1]!.replace(/^\[|\]$/g, ''), port };
}

/** True for an address only this machine reaches: 127.0.0.0/8, ::1 (also IPv4-mapped), `localhost`. */
export function isLoopback(host: string): boolean {
  const bare = host.toLowerCase();
  if (bare === 'localhost') return true;
  const v4 = bare.startsWith('::ffff:') ? bare.slice(7) : bare;
  if (isIP(v4) === 4) return v4.startsWith('127.');
  return isIP(bare) === 6 && /^(0{0,4}:){2,7}0{0,3}1$|^::1$/.test(bare);
}

/** Reads a file named by a flag; a file that cannot be read is the caller's mistake (`E_INPUT`). */
async function readInput(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).code;
    const why = errno === 'ENOENT' ? 'it does not exist' : errno === 'EACCES' ? 'permission denied' : String(errno);
    throw new InputError(`cannot read ${what} ${path}: ${why}`, { cause: error, details: { errno, path } });
  }
}

function parseKey(hex: string, what: string): Uint8Array {
  const clean = hex.trim();
  if (!/^([0-9a-fA-F]{2}){16,}$/.test(clean)) throw new InputError(`${what} must be at least 16 bytes of hex`);
  return Buffer.from(clean, 'hex');
}

function parseSeconds(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const seconds = Number(text);
  if (!(Number.isFinite(seconds) && seconds >= 0)) {
    throw new InputError(`${flag} must be a number of seconds (0: never), got '${text}'`);
  }
  return Math.round(seconds * 1000);
}

function parseCount(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1)
    throw new InputError(`${flag} must be a whole number >= 1, got '${text}'`);
  return value;
}

const FLAGS = {
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
  'serve-reads': { type: 'boolean', default: false },
  'host-files': { type: 'boolean', default: false },
  'idle-timeout': { type: 'string' },
  'handshake-timeout': { type: 'string' },
  'max-unauthenticated': { type: 'string' },
  'max-unauthenticated-per-address': { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

/** Parses the command line; a mistake (an unknown flag, a missing value) is `E_INPUT`. */
function parseFlags(argv: string[]) {
  try {
    return parseArgs({ args: argv, strict: true, options: FLAGS }).values;
  } catch (error) {
    throw new InputError((error as Error).message, { cause: error });
  }
}

/** How connections are secured, from the flags and the environment. */
async function securityOf(
  values: ReturnType<typeof parseFlags>,
  env: NodeJS.ProcessEnv,
  endpoints: Array<Address | undefined>,
): Promise<Security> {
  const keyHex = values['key-file'] ? await readInput(values['key-file'], 'the key file') : env.REPLIKIT_AGENT_PSK;
  if (values.tcp) {
    const security: Security = { kind: 'tcp', ...(keyHex ? { key: parseKey(keyHex, 'the transport key') } : {}) };
    // Without a key, whoever reaches the address writes replicas: only this machine may.
    const open = endpoints.find((at) => at && !isLoopback(at.host));
    if (!security.key && open) {
      throw new InputError(
        `plain --tcp without a key listens or pulls only on a loopback address, not ${open.host}; give a key (REPLIKIT_AGENT_PSK or --key-file) or use TLS`,
      );
    }
    return security;
  }
  if (values.cert || values.key) {
    if (!values.cert || !values.key || !values.trust) {
      throw new InputError('TLS with certificates needs --cert, --key and --trust');
    }
    return {
      kind: 'tls',
      certificate: {
        cert: await readInput(values.cert, 'the certificate file'),
        key: await readInput(values.key, 'the private key file'),
        trust: values.trust.split(',').filter(Boolean),
      },
    };
  }
  if (!keyHex) {
    throw new InputError('TLS needs a pre-shared key (REPLIKIT_AGENT_PSK or --key-file) or --cert/--key/--trust');
  }
  return {
    kind: 'tls',
    psk: { identity: values['psk-identity'] ?? 'replikit', key: parseKey(keyHex, 'the pre-shared key') },
  };
}

/**
 * The `replikit-agent` program: parses flags (and `REPLIKIT_AGENT_*` variables), opens the
 * driver confined to `--root`, starts the agent, and runs until `io.signal` aborts; then resolves
 * 0. Wrong input throws an `E_INPUT` error; an agent that cannot start throws its error (an
 * address in use: `E_CONFLICT`). The caller maps the code to an exit status as `replikit` does
 * (2 for `E_INPUT`, else 1).
 */
export async function runAgentCli(argv: string[], io: AgentCliIO): Promise<number> {
  const values = parseFlags(argv);
  if (values.help) {
    (io.print ?? io.log)(AGENT_USAGE);
    return 0;
  }
  const env = io.env;
  const root = values.root ?? env.REPLIKIT_AGENT_ROOT;
  if (!root) throw new InputError('name the folder the agent serves with --root (or REPLIKIT_AGENT_ROOT)');
  const pullFrom = values['pull-from'] ?? env.REPLIKIT_AGENT_PULL_FROM;
  const listen = values.listen ?? env.REPLIKIT_AGENT_LISTEN ?? (pullFrom ? undefined : '127.0.0.1:7400');
  const listenAt = listen ? parseAddress(listen, '--listen') : undefined;
  const pullAt = pullFrom ? parseAddress(pullFrom, '--pull-from') : undefined;
  const security = await securityOf(values, env, [listenAt, pullAt]);
  const idleTimeoutMs = parseSeconds(values['idle-timeout'] ?? env.REPLIKIT_AGENT_IDLE_TIMEOUT, '--idle-timeout');
  const handshakeTimeoutMs = parseSeconds(
    values['handshake-timeout'] ?? env.REPLIKIT_AGENT_HANDSHAKE_TIMEOUT,
    '--handshake-timeout',
  );
  const maxUnauthenticated = parseCount(
    values['max-unauthenticated'] ?? env.REPLIKIT_AGENT_MAX_UNAUTHENTICATED,
    '--max-unauthenticated',
  );
  const maxUnauthenticatedPerAddress = parseCount(
    values['max-unauthenticated-per-address'] ?? env.REPLIKIT_AGENT_MAX_UNAUTHENTICATED_PER_ADDRESS,
    '--max-unauthenticated-per-address',
  );
  // The replica references come from peers: the driver refuses any folder outside --root. Its
  // options schema checks these fields (a driver that takes no `root` says so, E_INPUT).
  const target = await io.drivers.create({ driver: values.driver ?? 'file', root, confine: true });
  try {
    const agent = createAgent({
      target,
      security,
      log: io.log,
      ...(io.hasher ? { hasher: io.hasher } : {}),
      ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
      ...(handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs } : {}),
      ...(maxUnauthenticated !== undefined ? { maxUnauthenticated } : {}),
      ...(maxUnauthenticatedPerAddress !== undefined ? { maxUnauthenticatedPerAddress } : {}),
      ...(values['serve-reads'] || env.REPLIKIT_AGENT_SERVE_READS === '1' ? { serveReads: true } : {}),
      ...(values['host-files'] || env.REPLIKIT_AGENT_HOST_FILES === '1' ? { hostFilesRoot: root } : {}),
    });
    let address: Address | undefined;
    try {
      if (listenAt) address = await agent.listen(listenAt);
      if (pullAt) agent.pullFrom(pullAt);
    } catch (error) {
      await agent.stop();
      throw error;
    }
    io.onReady?.(address);
    await new Promise<void>((resolve) => {
      if (io.signal.aborted) resolve();
      io.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    io.log('stopping: finishing the blocks in flight');
    await agent.stop();
    return 0;
  } finally {
    await target.close();
  }
}

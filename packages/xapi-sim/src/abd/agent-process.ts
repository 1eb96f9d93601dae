import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { fault } from '../xapi-fault.js';
import { XEN_ABD_KIND } from './abd-driver.js';
import { AGENT_READY_PREFIX } from './agent-ready.js';

/** How long an agent may take to listen before `VM.start` gives up on it. */
const READY_TIMEOUT_MS = 30_000;
/** How long a stopping agent may take before it is killed. */
const STOP_TIMEOUT_MS = 10_000;

/**
 * The Node arguments that run the appliance agent's entry point: the built `abd-agent.js` beside
 * this bundle, or, when the simulator runs from its TypeScript sources (tests), the source entry
 * through the `tsx` loader with the workspace's source condition.
 */
export function defaultAgentNodeArgs(): string[] {
  const here = fileURLToPath(import.meta.url);
  if (!here.endsWith('.ts')) return [join(dirname(here), 'abd-agent.js')];
  const tsx = join(dirname(createRequire(import.meta.url).resolve('tsx/package.json')), 'dist', 'loader.mjs');
  return ['--conditions=@replikit/source', '--import', pathToFileURL(tsx).href, join(dirname(here), 'agent-main.ts')];
}

/** What the simulator tells an appliance's agent. */
export interface AgentLaunch {
  /** Node arguments before the agent's own (see {@link defaultAgentNodeArgs}). */
  readonly nodeArgs: readonly string[];
  /** The appliance's folder: the device map, and `agent.log`. */
  readonly root: string;
  readonly host: string;
  readonly port: number;
  readonly pskIdentity: string;
  /** The key in hex; it goes to the child's environment only, never to an argument or a log. */
  readonly pskHex: string;
  /** For messages. */
  readonly name: string;
  readonly uuid: string;
}

/** An appliance agent process that listens. */
export interface AgentProcess {
  /** Its process id. */
  readonly pid: number;
  /** Where it listens. */
  readonly address: { readonly host: string; readonly port: number };
  /** Resolves once the process has exited. */
  readonly exited: Promise<void>;
  /** Stops it (SIGTERM, then SIGKILL if it lingers) and waits for its exit. */
  stop(): Promise<void>;
}

function childEnv(pskHex: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('REPLIKIT_AGENT_')) env[k] = v;
  return { ...env, NODE_OPTIONS: '', REPLIKIT_AGENT_PSK: pskHex };
}

/**
 * Starts a real `replikit-agent` (the transport package's agent with the `xen-abd` driver) as a
 * child of this process: no shell, arguments as an array, the key in its environment. Resolves
 * once it listens; fails with `INTERNAL_ERROR` (its own message, e.g. an address in use) if it
 * exits first.
 */
export function startAgentProcess(launch: AgentLaunch): Promise<AgentProcess> {
  const args = [
    ...launch.nodeArgs,
    '--driver',
    XEN_ABD_KIND,
    '--root',
    launch.root,
    '--listen',
    `${launch.host}:${launch.port}`,
    '--psk-identity',
    launch.pskIdentity,
    // A source appliance is read over the network (the transport's `source` feature).
    '--serve-reads',
  ];
  const child: ChildProcess = spawn(process.execPath, args, {
    env: childEnv(launch.pskHex),
    stdio: ['pipe', 'pipe', 'pipe'],
    shell: false,
  });
  const log = createWriteStream(join(launch.root, 'agent.log'), { flags: 'a', mode: 0o600 });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  void exited.then(() => log.end());
  // A simulator that dies closes the pipe: the agent sees its stdin end and stops.
  child.stdin?.on('error', () => undefined);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    log.write(chunk);
    if (stdout.length < 65536) stdout += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    log.write(chunk);
    if (stderr.length < 65536) stderr += chunk.toString();
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    await exited;
  };
  return new Promise<AgentProcess>((resolve, reject) => {
    const who = `appliance '${launch.name}' (${launch.uuid})`;
    const timer = setTimeout(() => {
      void stop();
      reject(fault('INTERNAL_ERROR', `xapi-sim: the agent of ${who} did not listen within 30 s`));
    }, READY_TIMEOUT_MS);
    const onData = () => {
      const line = stdout.split('\n').find((l) => l.startsWith(AGENT_READY_PREFIX));
      if (line === undefined) return;
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      const at = line.slice(AGENT_READY_PREFIX.length);
      const colon = at.lastIndexOf(':');
      resolve({
        pid: child.pid!,
        address: { host: at.slice(0, colon), port: Number(at.slice(colon + 1)) },
        exited,
        stop,
      });
    };
    child.stdout?.on('data', onData);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(fault('INTERNAL_ERROR', `xapi-sim: the agent of ${who} did not start: ${error.message}`));
    });
    void exited.then(() => {
      clearTimeout(timer);
      const why = stderr.trim().split('\n').at(-1) ?? `exit status ${child.exitCode}`;
      reject(fault('INTERNAL_ERROR', `xapi-sim: the agent of ${who} exited before it listened: ${why}`));
    });
  });
}

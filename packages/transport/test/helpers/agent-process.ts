import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Address } from '../../src/index.js';

/** A `replikit-agent` child process (see agent-process-main.ts). */
export interface AgentProcess {
  readonly address: Address;
  readonly pid: number;
  /** Its log lines so far (stderr). */
  readonly log: () => string;
  /** SIGTERM, then waits for its exit. */
  stop(): Promise<void>;
}

/**
 * Starts the transport's agent CLI with the file driver as a child process (no shell), the key
 * in its environment, and resolves once it listens on a free loopback port.
 */
export function startAgentProcess(args: string[], pskHex: string): Promise<AgentProcess> {
  const here = dirname(fileURLToPath(import.meta.url));
  const tsx = join(dirname(createRequire(import.meta.url).resolve('tsx/package.json')), 'dist', 'loader.mjs');
  const child = spawn(
    process.execPath,
    [
      '--conditions=@replikit/source',
      '--import',
      pathToFileURL(tsx).href,
      join(here, 'agent-process-main.ts'),
      '--listen',
      '127.0.0.1:0',
      ...args,
    ],
    {
      env: { ...process.env, NODE_OPTIONS: '', REPLIKIT_AGENT_PSK: pskHex },
      stdio: ['pipe', 'pipe', 'pipe'],
      shell: false,
    },
  );
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  return new Promise((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const match = /READY (.+):(\d+)\n/.exec(out);
      if (!match) return;
      resolve({
        address: { host: match[1]!, port: Number(match[2]) },
        pid: child.pid!,
        log: () => err,
        async stop() {
          child.kill('SIGTERM');
          await exited;
        },
      });
    });
    void exited.then(() => reject(new Error(`the agent exited before it listened: ${err}`)));
  });
}

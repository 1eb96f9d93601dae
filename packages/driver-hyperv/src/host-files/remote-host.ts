import { readFile } from 'node:fs/promises';
import { InputError } from '@replikit/core';
import { createRemoteTarget } from '@replikit/transport';
import type { HyperVDriverOptions } from '../hyperv-options.js';
import type { RemoteSessionTarget } from '../powershell/remote-session.js';
import { agentTargetFiles } from '../target/target-files.js';
import type { HyperVHostFiles } from './host-files.js';

/** A remoting `host` of the driver's options. */
export type RemoteHostOptions = Exclude<HyperVDriverOptions['host'], 'local'>;

/** What the process gives: its environment (the CLI's, or a test's). */
export interface SecretSources {
  env: NodeJS.ProcessEnv;
}

async function secret(
  what: string,
  fromEnv: string | undefined,
  fromFile: string | undefined,
  sources: SecretSources,
): Promise<string> {
  if (fromEnv !== undefined) {
    const value = sources.env[fromEnv];
    if (value === undefined || value === '')
      throw new InputError(`${what}: environment variable ${fromEnv} is not set`);
    return value;
  }
  let text: string;
  try {
    text = await readFile(fromFile!, 'utf8');
  } catch (error) {
    throw new InputError(`${what}: cannot read ${fromFile} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const line = text.split(/\r?\n/)[0] ?? '';
  if (line === '') throw new InputError(`${what}: ${fromFile} is empty`);
  return line;
}

/** The PSSession target of a remoting host, its password read from the variable or file it names. */
export async function remoteSessionTarget(
  host: RemoteHostOptions,
  sources: SecretSources,
): Promise<RemoteSessionTarget> {
  if (host.user === undefined) return { computerName: host.computerName };
  const password = await secret(
    `the password of '${host.user}' on '${host.computerName}'`,
    host.passwordEnv,
    host.credentialsFile,
    sources,
  );
  return { computerName: host.computerName, user: host.user, password };
}

/** The host's files through its `replikit-agent --host-files` (TLS-PSK). */
export async function agentHostFiles(host: RemoteHostOptions, sources: SecretSources): Promise<HyperVHostFiles> {
  const { agent } = host;
  if (!agent) {
    throw new InputError(
      `a remoting host needs its replikit-agent for the disk data: give host.agent (address, pskIdentity, pskKeyEnv or pskKeyFile) for '${host.computerName}'`,
    );
  }
  const hex = (
    await secret(`the key of the agent on '${host.computerName}'`, agent.pskKeyEnv, agent.pskKeyFile, sources)
  ).trim();
  if (!/^([0-9a-fA-F]{2}){16,}$/.test(hex)) {
    throw new InputError(`the key of the agent on '${host.computerName}' must be hex of at least 16 bytes`);
  }
  const match = /^(.+):(\d{1,5})$/.exec(agent.address)!;
  const target = createRemoteTarget({
    kind: 'hyperv',
    address: { host: match[1]!.replace(/^\[|\]$/g, ''), port: Number(match[2]) },
    security: { kind: 'tls', psk: { identity: agent.pskIdentity, key: Buffer.from(hex, 'hex') } },
  });
  const files = target.hostFiles();
  return {
    openImage: (path) => files.openImage(path),
    readText: (path) => files.readText(path),
    writeText: (path, text) => files.writeText(path, text),
    targetFiles: agentTargetFiles(files),
    close: () => target.close(),
  };
}

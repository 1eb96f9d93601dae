import { JobError, parseRate } from '@replikit/core';
import { checkCodecChoice } from '@replikit/transport';

/** The fields each mapping of a job's `transport` section takes (`''`: the section itself). */
const FIELDS: Record<string, readonly string[]> = {
  '': ['kind', 'agent', 'pull', 'psk', 'certificate', 'key', 'codec', 'window', 'bandwidthLimit'],
  pull: ['listen'],
  psk: ['identity', 'keyFile', 'keyEnv'],
  certificate: ['cert', 'key', 'trust'],
  key: ['keyFile', 'keyEnv'],
};

/** The fields that only a network section (kind `tcp` or `tls`) uses. */
const NETWORK_FIELDS = ['agent', 'pull', 'psk', 'certificate', 'key', 'codec', 'window', 'bandwidthLimit'];

const HOST_PORT = /^(.+):(\d{1,5})$/;

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function unknownFields(mapping: Record<string, unknown>, at: string): string[] {
  const known = FIELDS[at] ?? [];
  const prefix = at ? `transport.${at}.` : 'transport.';
  return Object.keys(mapping)
    .filter((field) => !known.includes(field))
    .map((field) => `${prefix}${field}: unknown field (takes ${known.join(', ')})`);
}

function hostPortProblem(value: unknown, path: string): string | undefined {
  const match = typeof value === 'string' ? HOST_PORT.exec(value) : null;
  if (match && Number(match[2]) <= 65535) return undefined;
  return `${path}: expected "host:port" (such as "10.0.0.7:7400"), got ${JSON.stringify(value)}`;
}

/**
 * Checks a job's `transport` section as the CLI reads it, before anything runs: every field known
 * (a misspelt `address` for `agent` would otherwise surface only when the run connects), a codec
 * this runtime has, nested
 * mappings that are mappings, a network section that says where its agent is (`agent`, push) or
 * where to wait for it (`pull.listen`), addresses as `host:port`, and sizes and rates that parse.
 * Keys and certificate files are read later, when a run needs them.
 *
 * @throws {@link JobError} (`E_JOB`, exit status 2) in one line naming every bad field.
 */
export function checkTransportSection(section: unknown): void {
  if (section === undefined) return;
  if (!isMapping(section)) throw new JobError('transport: expected a mapping');
  const problems = unknownFields(section, '');
  for (const nested of ['pull', 'psk', 'certificate', 'key']) {
    const value = section[nested];
    if (value === undefined) continue;
    if (!isMapping(value)) problems.push(`transport.${nested}: expected a mapping`);
    else problems.push(...unknownFields(value, nested));
  }
  const kind = section.kind ?? 'inprocess';
  if (kind === 'inprocess') {
    for (const field of NETWORK_FIELDS) {
      if (section[field] !== undefined)
        problems.push(`transport.${field}: only a network section uses it; set transport.kind to tcp or tls`);
    }
  } else if (kind === 'tcp' || kind === 'tls') {
    const pull = isMapping(section.pull) ? section.pull : undefined;
    if (section.agent === undefined && section.pull === undefined) {
      problems.push(
        `transport.agent: a ${kind} section needs agent ("host:port" of the replikit-agent) or pull.listen`,
      );
    } else if (section.agent !== undefined && section.pull !== undefined) {
      problems.push('transport.agent: give agent (push) or pull (the agent dials in), not both');
    }
    if (section.agent !== undefined) problems.push(hostPortProblem(section.agent, 'transport.agent') ?? '');
    if (pull) problems.push(hostPortProblem(pull.listen, 'transport.pull.listen') ?? '');
    if (section.codec !== undefined) {
      if (typeof section.codec !== 'string') problems.push('transport.codec: expected a codec name such as "auto"');
      else {
        try {
          checkCodecChoice(section.codec);
        } catch (error) {
          problems.push(`transport.codec: ${(error as Error).message}`);
        }
      }
    }
    for (const field of ['window', 'bandwidthLimit']) {
      const value = section[field];
      if (value === undefined) continue;
      try {
        parseRate(value as string | number);
      } catch {
        problems.push(
          `transport.${field}: expected a size such as "32MiB" or a rate such as "50MB/s", got ${JSON.stringify(value)}`,
        );
      }
    }
  }
  const found = problems.filter((problem) => problem !== '');
  if (found.length > 0) throw new JobError(found.join('; '), { details: { problems: found } });
}

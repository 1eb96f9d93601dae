import { execFile } from 'node:child_process';
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { StateError } from '@replikit/core';

const run = promisify(execFile);

/** A PEM key and certificate. */
export interface TlsMaterial {
  readonly key: string;
  readonly cert: string;
  /** The certificate's subject common name (`vdi_nbd_server_info.subject`). */
  readonly subject: string;
  /** The folder holding `server-key.pem`, `server-cert.pem` and `ca-cert.pem` (qemu's layout). */
  readonly dir: string;
}

/**
 * Makes the host's self-signed server certificate with `openssl` (an EC key, valid for the given
 * IP address), written as qemu's `tls-creds-x509` expects: `ca-cert.pem` is the certificate
 * itself, so a client can trust exactly this simulator.
 */
export async function makeSelfSigned(dir: string, address: string): Promise<TlsMaterial> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const key = join(dir, 'server-key.pem');
  const cert = join(dir, 'server-cert.pem');
  const subject = 'xapi-sim';
  const san = /^[\d.]+$/.test(address) || address.includes(':') ? `IP:${address}` : `DNS:${address}`;
  try {
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '825',
      '-subj',
      `/CN=${subject}`,
      '-addext',
      `subjectAltName=${san}`,
    ]);
    await copyFile(cert, join(dir, 'ca-cert.pem'));
  } catch (error) {
    throw new StateError(
      `xapi-sim could not make its TLS certificate with openssl (${(error as Error).message.split('\n')[0]}); install openssl or pass tls`,
      { cause: error },
    );
  }
  return { key: await readFile(key, 'utf8'), cert: await readFile(cert, 'utf8'), subject, dir };
}

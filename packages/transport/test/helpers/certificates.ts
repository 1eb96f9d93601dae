import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { certificateFingerprint } from '../../src/security.js';

/** A self-signed certificate and key made at test time with the openssl CLI. */
export interface TestCertificate {
  cert: string;
  key: string;
  fingerprint: string;
}

export function makeCertificate(name: string): TestCertificate {
  const dir = mkdtempSync(join(tmpdir(), 'replikit-cert-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '2',
        '-subj',
        `/CN=${name}`,
      ],
      { stdio: 'ignore' },
    );
    const cert = readFileSync(join(dir, 'cert.pem'), 'utf8');
    return { cert, key: readFileSync(join(dir, 'key.pem'), 'utf8'), fingerprint: certificateFingerprint(cert) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

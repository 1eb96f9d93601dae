import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/** Where Debian and Ubuntu install each PostgreSQL major version's server programs. */
const DEBIAN_ROOT = '/usr/lib/postgresql';

function hasServer(dir: string): boolean {
  return existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'pg_ctl'));
}

/** The folders on PATH, then the newest Debian version folder, then `pg_config --bindir`. */
function candidates(): string[] {
  const found: string[] = [];
  const bindir = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8' });
  if (bindir.status === 0 && bindir.stdout.trim()) found.push(bindir.stdout.trim());
  if (existsSync(DEBIAN_ROOT)) {
    const versions = readdirSync(DEBIAN_ROOT)
      .filter((name) => /^\d+$/.test(name))
      .sort((a, b) => Number(b) - Number(a));
    found.push(...versions.map((v) => join(DEBIAN_ROOT, v, 'bin')));
  }
  found.push(...(process.env.PATH ?? '').split(':').filter(Boolean));
  return found;
}

/**
 * The folder holding PostgreSQL's `initdb` and `pg_ctl`: they are not on PATH on Debian (they live
 * in `/usr/lib/postgresql/<major>/bin`). Throws, naming the package to install, when there is none.
 */
export function findPostgresBinaries(): string {
  const dir = candidates().find(hasServer);
  if (!dir) {
    throw new Error(
      'PostgreSQL server programs (initdb, pg_ctl) were not found in `pg_config --bindir`, /usr/lib/postgresql/*/bin or PATH: install the Debian package `postgresql` (`node scripts/setup.mjs --system` does, as root)',
    );
  }
  return dir;
}

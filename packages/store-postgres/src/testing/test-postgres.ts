import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFile, chmod, chown, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { findPostgresBinaries } from './postgres-binaries.js';

/** A PostgreSQL server of its own, started by {@link startTestPostgres} for a test file. */
export interface TestPostgres {
  /** The folder holding the data folder, the log and the unix socket. */
  readonly dir: string;
  /** The folder of the server's unix socket (`host` for node-postgres and libpq). */
  readonly socketDir: string;
  /** The superuser every connection uses (trust authentication, socket only). */
  readonly user: string;
  /** A connection string for database `database` (default `postgres`). */
  url(database?: string): string;
  /** Creates an empty database with a fresh unique name and returns its connection string. */
  createDatabase(): Promise<string>;
  /** Stops the server (fast shutdown) and removes its folder. */
  stop(): Promise<void>;
}

/** Options of {@link startTestPostgres}. */
export interface TestPostgresOptions {
  /**
   * The operating-system user that runs initdb and the server when this process is root (initdb
   * refuses root).
   * @default `postgres` when that user exists, else `nobody`
   */
  runAs?: string;
}

type Exec = (program: string, args: string[]) => Promise<void>;

/** Runs a program without a shell; rejects with its output when it fails. */
function execAs(user: string | undefined): Exec {
  return (program, args) =>
    new Promise((resolve, reject) => {
      const [command, argv] = user ? ['runuser', ['-u', user, '--', program, ...args]] : [program, args];
      const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.on('error', reject);
      child.on('close', (code) =>
        code === 0
          ? resolve()
          : reject(new Error(`${program} ${args.join(' ')} exited with ${code}: ${output.trim()}`)),
      );
    });
}

/** The uid and gid of `name`, from /etc/passwd, or undefined when there is no such user. */
async function lookupUser(name: string): Promise<{ uid: number; gid: number } | undefined> {
  const passwd = await readFile('/etc/passwd', 'utf8');
  for (const line of passwd.split('\n')) {
    const [user, , uid, gid] = line.split(':');
    if (user === name && uid !== undefined && gid !== undefined) return { uid: Number(uid), gid: Number(gid) };
  }
  return undefined;
}

/** The unprivileged user that runs the server when we are root, and its ids. */
async function serverUser(wanted: string | undefined): Promise<{ name: string; uid: number; gid: number }> {
  for (const name of wanted ? [wanted] : ['postgres', 'nobody']) {
    const ids = await lookupUser(name);
    if (ids) return { name, ...ids };
  }
  throw new Error(
    `startTestPostgres: no user ${wanted ?? "'postgres' or 'nobody'"} to run PostgreSQL as (initdb refuses root)`,
  );
}

/** A single-quoted postgresql.conf string. */
function confString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/**
 * Starts a PostgreSQL server of its own for tests: `initdb` into a new temporary folder and
 * `pg_ctl start` with a unix socket in that folder and no TCP listener, so test files never share
 * a server or a port. When this process is root (CI), initdb and the server run as an
 * unprivileged user through `runuser`, with the folder given to that user. Call `stop()` in
 * teardown. Durability is off (`fsync = off`): a test server need not survive a power cut.
 *
 * @example
 * ```ts
 * let server: TestPostgres;
 * beforeAll(async () => { server = await startTestPostgres(); });
 * afterAll(() => server.stop());
 * it('…', async () => { const url = await server.createDatabase(); … });
 * ```
 */
export async function startTestPostgres(options: TestPostgresOptions = {}): Promise<TestPostgres> {
  const bin = findPostgresBinaries();
  const dir = await mkdtemp(join(tmpdir(), 'replikit-pg-'));
  const root = process.getuid?.() === 0;
  const owner = root ? await serverUser(options.runAs) : undefined;
  const exec = execAs(owner?.name);
  const data = join(dir, 'data');
  const log = join(dir, 'server.log');
  const superuser = 'replikit';
  let started = false;
  try {
    if (owner) {
      await chown(dir, owner.uid, owner.gid);
      await chmod(dir, 0o700);
    }
    await exec(join(bin, 'initdb'), [
      '--pgdata',
      data,
      '--username',
      superuser,
      '--auth',
      'trust',
      '--encoding',
      'UTF8',
      '--locale',
      'C',
      '--no-sync',
    ]);
    const settings = [
      `unix_socket_directories = ${confString(dir)}`,
      "listen_addresses = ''",
      'fsync = off',
      'max_connections = 100',
    ];
    await appendFile(join(data, 'postgresql.conf'), `\n# startTestPostgres\n${settings.join('\n')}\n`);
    await exec(join(bin, 'pg_ctl'), ['--pgdata', data, '--log', log, '--wait', '--silent', 'start']);
    started = true;
  } catch (error) {
    const serverLog = await readFile(log, 'utf8').catch(() => '');
    await rm(dir, { recursive: true, force: true });
    throw new Error(`startTestPostgres: the server did not start${serverLog ? `; its log:\n${serverLog}` : ''}`, {
      cause: error,
    });
  }
  const url = (database = 'postgres') =>
    `postgresql://${superuser}@localhost/${encodeURIComponent(database)}?host=${encodeURIComponent(dir)}`;
  return {
    dir,
    socketDir: dir,
    user: superuser,
    url,
    async createDatabase() {
      const name = `t_${randomBytes(6).toString('hex')}`;
      const client = new pg.Client({ connectionString: url() });
      await client.connect();
      try {
        // `name` is ours (hex), never a caller's, so it may be written into the statement.
        await client.query(`CREATE DATABASE ${name}`);
      } finally {
        await client.end();
      }
      return url(name);
    },
    async stop() {
      if (started) {
        started = false;
        await exec(join(bin, 'pg_ctl'), ['--pgdata', data, '--mode', 'fast', '--wait', '--silent', 'stop']);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

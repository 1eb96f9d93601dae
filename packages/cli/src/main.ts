import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { describeForUser, exitCodeOf, UsageError } from './cli-error.js';
import { type CliContext, stateDirOf } from './context.js';

const help = (stateDir: string) => `replikit: keep a VM replica in sync with its source, sending only what changed

usage:
  replikit demo [--dir DIR] [--keep] [--size-a SIZE] [--size-b SIZE] [--single-pass]
                                   build a demo VM, replicate it twice, verify the replica
  replikit demo --network [--keep] [--size-a SIZE] [--size-b SIZE]
                                   the same through a local agent over TLS: push, then pull
  replikit demo --xen [--keep]     start a simulated XenServer pool, replicate its VM with each
                                   method, verify every replica
  replikit demo --hyperv [--keep]  start a simulated Hyper-V host and XenServer pool, replicate
                                   Hyper-V ► Hyper-V (RCT) and XenServer ► Hyper-V (CBT), verify
  replikit validate <job>... [--json]
                                   check jobs against the rules, offline (exit 2 on an error)
  replikit run <job> [--full]      run a job once (--full: read and send every block); SIGTERM
                                   stops it at a checkpoint (replikit resume <runId> goes on),
                                   Ctrl-C rolls it back
  replikit plan <job> [--json]     what the next run would do and why, without doing it
                                   (exit 2 when something would stop it)
  replikit resume <runId> [--rollback | --abandon]
                                   finish a run that stopped, roll back its own writes, or
                                   abandon it (end it, reverting nothing, releasing its replica)
  replikit runs [--json]           list the runs
  replikit daemon <folder|job>... [--metrics-port N] [--window 'CRON for DURATION [in TZ]']...
                                   run the jobs on their options.schedule until SIGTERM (which
                                   stops a running run at a checkpoint; the next start resumes
                                   it); --window: the default maintenance windows; --metrics-port
                                   serves Prometheus text on 127.0.0.1:N/metrics
  replikit daemon <folder|job>... --store postgres://USER@HOST/DB [--max-per-host N]
                 [--max-per-target N]
                                   one worker of a cluster sharing that PostgreSQL store: any
                                   worker runs the due runs; one schedules (see scale-out.md);
                                   --max-per-host/--max-per-target: runs at once per source
                                   host / per target across all workers (give each the same)
  replikit workers --store URL [--json]
                                   the cluster's workers: heartbeat age, scheduler, runs now,
                                   runs done/failed, bytes sent
  replikit daemon pause|resume <job>...
                                   pause a job (no run starts) or resume it (lifts a pause or a
                                   hold); a running daemon applies it within a second
  replikit status [--store URL] [--json]
                                   every scheduled job: state, last run and why it failed,
                                   achieved RPO against its target, next due time, RPO debt
  replikit status --orphans [--json]
                                   what each job that ran left behind that nothing cleans up:
                                   failover clones no operation owns, stray run snapshots
  replikit points list <job> [--json] | revert <job> <point-id>
                                   a replica's restore points (through the job's target driver,
                                   without its source); revert drops the newer points, and
                                   refuses while a run holds the replica
  replikit failover test <job> [--point ID] [--map-network FROM=TO]... [-- CMD ARG...]
                                   boot a restore point as a disposable clone (isolated, or on
                                   mapped networks), run CMD without a shell as its health
                                   check (REPLIKIT_CLONE_* in its environment), delete the clone;
                                   the replica is untouched and runs go on (exit 1: failed)
  replikit failover planned <job> [--shutdown-timeout SECONDS]
                                   run, shut the source down (forced after the timeout), run
                                   again, promote and start the replica: no data loss
  replikit failover unplanned <job> [--point ID] [--force]
                                   promote and start the replica at its newest (or a chosen)
                                   restore point; refused while the source runs unless --force
  replikit failover reverse <job> [--full]
                                   copy the blocks changed on the promoted replica since the
                                   common point, and on the original since its last snapshot,
                                   onto the stopped original (--full: no common point, copy all)
  replikit failover failback <job> [--shutdown-timeout SECONDS] [--full]
                                   reverse pass, shut the replica down, final pass, start the
                                   original; a forward run makes the new common point
  replikit failover undo|commit|permanent|resume|status <job> [--json]
                                   undo: back to the point, byte for byte, replicating again;
                                   commit: no undo any more; permanent: the replica becomes the
                                   production VM and the job is retired; resume: finish an
                                   operation a crash interrupted; status: state and orphans
  replikit backup list [vm] | verify <vm> <version> | restore <vm> <version> <disk> <out.raw>
                | delete <vm> <version> | gc
                                   backup versions recorded by single-pass runs
  replikit disk info <file> [--json] | convert <in> <out> [--to raw|vhd|vhdx|xva] [--block-size N]
                [--disk N|Ref:N] | compare <a> <b> | check <file>
                                   inspect, convert, compare (exit 1 if different), check images;
                                   an XVA is listed by info, and convert takes one disk out of it
                                   (--disk when it holds several) or writes a one-disk XVA
  replikit vm import <name> <image>... [--copy] | create <name> --disk id:size... | list [--json]
                [--root DIR] [--job FILE]
                                   VM folders of the file driver (root: the working folder;
                                   list --job: the VMs of a job's source, a Xen pool say):
                                   import hard-links existing raw images (a KVM guest's disks)
                                   into a VM folder, never copying them unless --copy
  replikit help | --version        this text | the version

  replikit-agent ...               the agent on the target's host (a second command of this
                                   package): a job reaches it through its \`transport\` section
                                   (kind: tcp | tls; agent: HOST:PORT to push, or pull: { listen }
                                   for \`replikit-agent --pull-from\`; psk, certificate or key).
                                   The agent then hosts the replica under its own --root:
                                   runs, points and holds go through it, the job's target.root
                                   is not used on this host
                                   \`replikit-agent --help\` lists its options

options:
  --state-dir DIR   where runs are journaled; default: $REPLIKIT_STATE_DIR, else
                    $XDG_STATE_HOME/replikit, else ~/.local/state/replikit (one per user,
                    whatever the working folder). Here: ${stateDir}
                    It holds the run journals (runs/), replication caches (cache/) and the
                    single-pass block store (store/). A replica's restore points and its hold
                    live beside the replica, on the target.

exit codes: 0 success, 1 the work failed, 2 the input is wrong.
`;

const OPTIONS = {
  'state-dir': { type: 'string' },
  json: { type: 'boolean', default: false },
  rollback: { type: 'boolean', default: false },
  abandon: { type: 'boolean', default: false },
  full: { type: 'boolean', default: false },
  dir: { type: 'string' },
  keep: { type: 'boolean', default: false },
  'size-a': { type: 'string' },
  'size-b': { type: 'string' },
  'single-pass': { type: 'boolean', default: false },
  network: { type: 'boolean', default: false },
  xen: { type: 'boolean', default: false },
  hyperv: { type: 'boolean', default: false },
  job: { type: 'string' },
  to: { type: 'string' },
  'block-size': { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
  version: { type: 'boolean', short: 'V', default: false },
  root: { type: 'string' },
  copy: { type: 'boolean', default: false },
  disk: { type: 'string', multiple: true },
  'metrics-port': { type: 'string' },
  window: { type: 'string', multiple: true },
  orphans: { type: 'boolean', default: false },
  point: { type: 'string' },
  force: { type: 'boolean', default: false },
  'map-network': { type: 'string', multiple: true },
  'shutdown-timeout': { type: 'string' },
  store: { type: 'string' },
  'max-per-host': { type: 'string' },
  'max-per-target': { type: 'string' },
} as const;

/** The CLI package's version, from its package.json (beside dist/ and src/). */
function cliVersion(): string {
  const text = readFileSync(new URL('../package.json', import.meta.url), 'utf8');
  return (JSON.parse(text) as { version: string }).version;
}

/** `--disk` of `disk convert`: at most one (the flag repeats only for `vm create`). */
function oneDisk(values: string[] | undefined): string | undefined {
  if (values && values.length > 1) throw new UsageError(`disk convert takes one --disk, got ${values.length}`);
  return values?.[0];
}

function one(positionals: string[], what: string): string {
  if (positionals.length !== 1) throw new UsageError(`expected one ${what}, got ${positionals.length}`);
  return positionals[0]!;
}

/**
 * Each command's module is imported only when that command runs: a one-shot `replikit run` from a
 * shell or cron loads neither the demo, the disk tools nor the network transport.
 */
async function dispatch(context: CliContext, argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message.split('\n')[0]!.replace(/\. To specify a positional.*$/, ''));
  }
  const { values, positionals } = parsed;
  const [command, ...rest] = positionals;
  const stateDir = stateDirOf(context, values['state-dir']);
  if (values.version) {
    context.stdout.write(`replikit ${cliVersion()}\n`);
    return 0;
  }
  if (values.help || command === undefined || command === 'help') {
    context.stdout.write(help(stateDir));
    return command === undefined && !values.help ? 2 : 0;
  }
  if (['run', 'plan', 'resume', 'runs', 'backup', 'daemon', 'status', 'failover'].includes(command))
    noteOldStateDir(context, stateDir, values['state-dir']);
  switch (command) {
    case 'validate':
      if (rest.length === 0) throw new UsageError('validate needs at least one job file');
      return (await import('./commands/validate.js')).validateCommand(context, rest, { json: values.json });
    case 'run':
      return (await import('./commands/run.js')).runCommand(context, one(rest, 'job file'), stateDir, {
        full: values.full,
      });
    case 'plan':
      return (await import('./commands/plan.js')).planCommand(context, one(rest, 'job file'), stateDir, {
        json: values.json,
      });
    case 'resume':
      if (values.rollback && values.abandon) throw new UsageError('resume takes --rollback or --abandon, not both');
      return (await import('./commands/run.js')).resumeCommand(context, one(rest, 'run id'), stateDir, {
        rollback: values.rollback,
        abandon: values.abandon,
      });
    case 'runs':
      return (await import('./commands/runs.js')).runsCommand(context, stateDir, { json: values.json });
    case 'daemon':
      if (rest[0] === 'pause' || rest[0] === 'resume') {
        return (await import('./commands/daemon-request.js')).daemonRequestCommand(
          context,
          rest[0],
          rest.slice(1),
          stateDir,
        );
      }
      return (await import('./commands/daemon.js')).daemonCommand(context, rest, stateDir, {
        ...(values.store === undefined ? {} : { store: values.store }),
        ...(values['metrics-port'] === undefined ? {} : { metricsPort: values['metrics-port'] }),
        ...(values.window ? { windows: values.window } : {}),
        ...(values['max-per-host'] === undefined ? {} : { maxPerHost: values['max-per-host'] }),
        ...(values['max-per-target'] === undefined ? {} : { maxPerTarget: values['max-per-target'] }),
      });
    case 'status':
      return (await import('./commands/status.js')).statusCommand(context, stateDir, {
        ...(values.store === undefined ? {} : { store: values.store }),
        json: values.json,
        orphans: values.orphans,
      });
    case 'workers':
      return (await import('./commands/workers.js')).workersCommand(context, values.store, { json: values.json });
    case 'failover':
      return (await import('./commands/failover.js')).failoverCommand(context, rest, stateDir, {
        ...(values.point ? { point: values.point } : {}),
        force: values.force,
        ...(values['map-network'] ? { mapNetwork: values['map-network'] } : {}),
        ...(values['shutdown-timeout'] ? { shutdownTimeout: values['shutdown-timeout'] } : {}),
        full: values.full,
        json: values.json,
      });
    case 'points':
      return (await import('./commands/points.js')).pointsCommand(context, rest, values.json);
    case 'vm':
      return (await import('./commands/vm.js')).vmCommand(context, rest, {
        ...(values.root ? { root: values.root } : {}),
        ...(values.disk ? { disks: values.disk } : {}),
        copy: values.copy,
        json: values.json,
        ...(values.job ? { job: values.job } : {}),
      });
    case 'backup':
      return (await import('./commands/backup.js')).backupCommand(context, rest, stateDir, values.json);
    case 'disk':
      return (await import('./commands/disk.js')).diskCommand(context, rest, {
        json: values.json,
        to: values.to,
        disk: oneDisk(values.disk),
        blockSize: values['block-size'],
      });
    case 'demo':
      if (values.hyperv) {
        if (values.network) throw new UsageError('demo takes --hyperv or --network, not both');
        // `--xen` with `--hyperv` is accepted and changes nothing: XenServer ► Hyper-V is always part of it.
        return (await import('./commands/demo-hyperv.js')).demoHyperVCommand(context, { keep: values.keep });
      }
      if (values.xen) {
        if (values.network) throw new UsageError('demo takes --xen or --network, not both');
        return (await import('./commands/demo-xen.js')).demoXenCommand(context, { keep: values.keep });
      }
      if (values.network) {
        return (await import('./commands/demo-network.js')).demoNetworkCommand(context, {
          keep: values.keep,
          ...(values['size-a'] ? { sizeA: values['size-a'] } : {}),
          ...(values['size-b'] ? { sizeB: values['size-b'] } : {}),
        });
      }
      return (await import('./commands/demo.js')).demoCommand(context, {
        ...(values.dir ? { dir: values.dir } : {}),
        keep: values.keep,
        singlePass: values['single-pass'],
        ...(values['size-a'] ? { sizeA: values['size-a'] } : {}),
        ...(values['size-b'] ? { sizeB: values['size-b'] } : {}),
      });
    default:
      throw new UsageError(`unknown command '${command}'`);
  }
}

/** Commands that run (or resume) a replication run, which an interruption rolls back. */
const RUN_COMMANDS = new Set(['run', 'resume', 'demo', 'daemon']);

/**
 * True when `signal` stops `replikit <argv>`'s run at a checkpoint, leaving it unfinished and
 * resumable, instead of rolling it back: SIGTERM (what service managers send) of `run` and
 * `resume`, and either signal of `daemon`. SIGINT (Ctrl-C) of `run` still rolls back.
 */
export function checkpointsOn(argv: string[], signal: string): boolean {
  const [command] = commandWords(argv);
  if (command === 'daemon') return true;
  return signal === 'SIGTERM' && (command === 'run' || command === 'resume');
}

/** The command line's words that are not options or their values (`--state-dir DIR run j` → run, j). */
function commandWords(argv: string[]): string[] {
  try {
    return parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: false }).positionals;
  } catch {
    return argv.filter((arg) => !arg.startsWith('-'));
  }
}

/**
 * The line printed when `signal` interrupts `replikit <argv>`: only commands that run a
 * replication speak of the run (stopped at a checkpoint, or rolled back); `disk convert` says its
 * output is left as it was.
 */
export function interruptNotice(argv: string[], signal: string): string {
  const [command, sub] = commandWords(argv);
  const what = checkpointsOn(argv, signal)
    ? 'stopping at a checkpoint; the run stays unfinished and is resumed later'
    : command !== undefined && RUN_COMMANDS.has(command)
      ? 'stopping; the run is rolled back'
      : command === 'disk' && sub === 'convert'
        ? 'stopping; the output file is left as it was'
        : 'stopping';
  return `replikit: ${signal}: ${what} (send it again to quit at once)\n`;
}

/**
 * Says so when the working folder has a `.replikit` state folder of an older version (the default
 * was per working folder) that is not the one in use: its unfinished runs are not seen from here.
 */
function noteOldStateDir(context: CliContext, stateDir: string, flag: string | undefined): void {
  if (flag !== undefined || context.env.REPLIKIT_STATE_DIR) return;
  const old = join(context.cwd, '.replikit');
  if (old !== stateDir && existsSync(join(old, 'runs'))) {
    context.stderr.write(
      `note: runs are journaled in ${stateDir}; ${old} (the old default) is not read: pass --state-dir .replikit to work on its runs\n`,
    );
  }
}

/**
 * Runs the `replikit` command line with `argv` (without the node and script paths) and returns
 * the exit code. Errors are printed as one line per problem on `stderr`; never as a stack unless
 * `REPLIKIT_DEBUG=1`.
 */
export async function main(argv: string[], context: CliContext): Promise<number> {
  try {
    return await dispatch(context, argv);
  } catch (error) {
    context.stderr.write(`${describeForUser(error, context.env.REPLIKIT_DEBUG === '1')}\n`);
    return exitCodeOf(error);
  }
}

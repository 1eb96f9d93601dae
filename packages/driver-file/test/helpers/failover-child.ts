/**
 * Child process of the failover crash tests. Usage:
 *
 *   node --conditions=@replikit/source --import tsx failover-child.ts <request.json>
 *
 * The request names a world folder (see failover-world.ts), an operation, and `killAt`: the
 * process kills itself with SIGKILL at the `killAt`-th fault point it reaches (driver and failover
 * engine points counted together; 0 never), or at the first fault point named `killAtName`. It prints `started` before the operation and
 * `done calls=<n>` after it.
 */
import { readFileSync } from 'node:fs';
import { worldEngines, worldJob } from './failover-world.js';

interface FailoverCrashRequest {
  dir: string;
  op: 'test' | 'unplanned' | 'undo' | 'planned' | 'commit' | 'permanent' | 'reverse' | 'failback';
  killAt: number;
  killAtName?: string;
}

const request = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as FailoverCrashRequest;
let calls = 0;
const hit = (point: string) => {
  calls += 1;
  if (calls === request.killAt || point === request.killAtName) process.kill(process.pid, 'SIGKILL');
};
const { failover, replication } = worldEngines(request.dir, { driver: hit, failover: hit });
const job = worldJob(request.dir);
process.stdout.write('started\n');
if (request.op === 'test') await failover.test(job, {});
else if (request.op === 'unplanned') await failover.unplanned(job, { force: true });
else if (request.op === 'undo') await failover.undo(job);
else if (request.op === 'planned') await failover.planned(job, { shutdownTimeoutMs: 60_000 });
else if (request.op === 'commit') await failover.commit(job);
else if (request.op === 'reverse') await failover.reverse(job);
else if (request.op === 'failback') await failover.failback(job, { shutdownTimeoutMs: 60_000 });
else await failover.permanent(job);
await replication.close();
process.stdout.write(`done calls=${calls}\n`);

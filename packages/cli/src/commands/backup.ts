import { join, resolve } from 'node:path';
import { formatBytes } from '@replikit/core';
import { FileBlockStore } from '@replikit/dedup';
import { UsageError } from '../cli-error.js';
import type { CliContext } from '../context.js';
import { renderTable } from '../output/table.js';

/**
 * The block store of a state folder (where single-pass runs record versions), encrypted with the
 * key file `$REPLIKIT_STORE_KEY_FILE` names, if any.
 */
export function blockStoreOf(stateDir: string, env: NodeJS.ProcessEnv = process.env): FileBlockStore {
  const keyFile = env.REPLIKIT_STORE_KEY_FILE || undefined;
  return new FileBlockStore(join(stateDir, 'store'), keyFile ? { keyFile: resolve(keyFile) } : {});
}

/**
 * `replikit backup list [vm] | verify <vm> <version> | restore <vm> <version> <disk> <out.raw> |
 * delete <vm> <version> | gc`: the backup versions single-pass runs recorded.
 */
export async function backupCommand(
  context: CliContext,
  args: string[],
  stateDir: string,
  json: boolean,
): Promise<number> {
  const store = blockStoreOf(stateDir, context.env);
  const [action, ...rest] = args;
  const need = (count: number, usage: string) => {
    if (rest.length !== count) throw new UsageError(`usage: replikit backup ${usage}`);
  };
  switch (action) {
    case 'list': {
      if (rest.length > 1) throw new UsageError('usage: replikit backup list [vm]');
      const vms = rest.length ? rest : await store.vms();
      const versions = (await Promise.all(vms.map((vm) => store.list(vm)))).flat();
      if (json) context.stdout.write(`${JSON.stringify(versions, null, 2)}\n`);
      else if (versions.length === 0) context.stdout.write(`no backup versions in ${store.dir}\n`);
      else {
        const rows = versions.map((v) => [
          v.vm,
          v.id,
          v.createdAt,
          v.disks.map((d) => `${d.id} (${formatBytes(d.size)})`).join(', '),
        ]);
        context.stdout.write(
          `${renderTable([{ header: 'vm' }, { header: 'version' }, { header: 'created' }, { header: 'disks' }], rows)}\n`,
        );
      }
      return 0;
    }
    case 'verify': {
      need(2, 'verify <vm> <version>');
      const report = await store.verify(rest[0]!, rest[1]!, { signal: context.signal });
      if (json) context.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else {
        context.stdout.write(`${report.chunks} chunks checked, ${report.bad.length} damaged or missing\n`);
        for (const bad of report.bad) context.stdout.write(`  ${bad.address}: ${bad.reason}\n`);
      }
      return report.bad.length === 0 ? 0 : 1;
    }
    case 'restore': {
      need(4, 'restore <vm> <version> <disk> <out.raw>');
      const out = resolve(context.cwd, rest[3]!);
      await store.restore(rest[0]!, rest[1]!, rest[2]!, out, { signal: context.signal });
      context.stdout.write(`restored disk '${rest[2]}' of version ${rest[1]} to ${out}\n`);
      return 0;
    }
    case 'delete': {
      need(2, 'delete <vm> <version>');
      await store.delete(rest[0]!, rest[1]!);
      context.stdout.write(`deleted version ${rest[1]} (its chunks go at the next \`replikit backup gc\`)\n`);
      return 0;
    }
    case 'gc': {
      need(0, 'gc');
      const report = await store.gc({ signal: context.signal });
      context.stdout.write(
        `${report.deleted} chunks deleted (${formatBytes(report.bytesFreed)}), ${report.kept} kept\n`,
      );
      if (report.unused > 0) {
        context.stdout.write(
          `${report.unused} unused chunks (${formatBytes(report.unusedBytes)}) stay in packs still mostly in use: a pack is rewritten once less than half of it is in use\n`,
        );
      }
      if (report.damaged > 0) {
        context.stdout.write(
          `${report.damaged} pack(s) left as they are: a chunk a version needs is damaged in them (\`replikit backup verify\` names it)\n`,
        );
      }
      return 0;
    }
    default:
      throw new UsageError(`unknown backup action '${action ?? ''}' (list, verify, restore, delete, gc)`);
  }
}

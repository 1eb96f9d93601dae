import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { AbstractDiskWriter, StateError } from '@replikit/core';
import type { VhdxReader, VhdxWriter } from '@replikit/formats';
import { pendingName } from './replica-files.js';
import type { TargetFiles } from './target-files.js';

const MiB = 2 ** 20;
/** BAT states of a block holding data of its own file (fully or partially present). */
const OWN = new Set([6, 7]);

/** What {@link openPendingWriter} needs. */
export interface PendingWriterInit {
  /** Where the replica's files are (this machine, or the host through its agent). */
  files: TargetFiles;
  /** The replica's folder. */
  dir: string;
  /** The replica disk's index. */
  index: number;
  /** The run's key (see `runKey`). */
  key: string;
  /** The frozen file of the replica's newest restore point for this disk, or none (no point yet). */
  parentPath: string | undefined;
  /** The disk's size. */
  size: number;
  /** For messages. */
  what: string;
}

/**
 * A run's writes to one replica disk, kept in a pending VHDX next to the disk's files: a
 * differencing file over the newest restore point's frozen file (or a dynamic file before the
 * first point). Nothing of it is visible in the replica until the restore point commits it (a
 * rename over the disk's live file, then a checkpoint), so a killed run leaves the replica at its
 * last restore point. The file is written under a temporary name and takes its pending name at the
 * first flush; a second writer of the same run copies what the first left, so a resumed run goes on.
 */
class PendingWriter extends AbstractDiskWriter {
  private named = false;

  constructor(
    private readonly files: TargetFiles,
    private readonly file: VhdxWriter,
    private readonly parent: VhdxReader | undefined,
    private readonly finalPath: string,
    size: number,
    what: string,
  ) {
    super({ size, what });
  }

  protected override async _write(offset: number, data: Uint8Array): Promise<void> {
    await this.file.write(offset, data);
  }

  protected override async _writeZeroes(offset: number, length: number): Promise<void> {
    await this.file.writeZeroes(offset, length);
  }

  protected override async _flush(): Promise<void> {
    await this.file.flush();
    if (!this.named) {
      await this.files.rename(this.file.path, this.finalPath);
      this.named = true;
    }
  }

  protected override async _close(): Promise<void> {
    try {
      await this.file.close();
    } finally {
      await this.parent?.close();
      if (!this.named) await this.files.remove(this.file.path);
    }
  }
}

/**
 * The pending file a writer of the same run left. One that does not open is refused rather than
 * dropped: the run believes those writes done, and only a rollback may forget them.
 */
async function openEarlier(files: TargetFiles, path: string, what: string): Promise<VhdxReader> {
  try {
    return await files.openVhdx(path);
  } catch (error) {
    throw new StateError(
      `${what}: the pending writes this run left (${path}) are unreadable; roll the run back (replikit resume <run id> --rollback)`,
      { cause: error },
    );
  }
}

/** Opens the pending writer of a run for one replica disk (see {@link PendingWriter}). */
export async function openPendingWriter(init: PendingWriterInit): Promise<AbstractDiskWriter> {
  const finalPath = join(init.dir, pendingName(init.index, init.key));
  const tmp = `${finalPath}.tmp-${randomUUID()}`;
  const { files } = init;
  const parent = init.parentPath ? await files.openVhdx(init.parentPath) : undefined;
  let file: VhdxWriter | undefined;
  try {
    file = await files.createVhdx(tmp, {
      size: Math.ceil(init.size / 512) * 512,
      blockSize: 2 * MiB,
      ...(parent ? { parent } : {}),
    });
    const earlier = (await files.exists(finalPath)) ? await openEarlier(files, finalPath, init.what) : undefined;
    if (earlier) {
      try {
        for (let b = 0; b < earlier.states.length; b++) {
          const start = b * earlier.blockSize;
          if (start >= earlier.size || !OWN.has(earlier.states[b] ?? 0)) continue;
          const length = Math.min(earlier.blockSize, earlier.size - start);
          await file.write(start, await earlier.read(start, length));
        }
      } finally {
        await earlier.close();
      }
    }
    return new PendingWriter(files, file, parent, finalPath, init.size, init.what);
  } catch (error) {
    await file?.close().catch(() => undefined);
    await parent?.close();
    await files.remove(tmp);
    throw error;
  }
}

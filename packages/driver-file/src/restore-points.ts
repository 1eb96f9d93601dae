import { readFile } from 'node:fs/promises';
import { FormatError, toStorageError } from '@replikit/core';
import { writeJsonAtomic } from './atomic-write.js';
import { isSafeName } from './names.js';

/** One restore point as the file driver keeps it in `restore-points.json`. */
export interface PointRecord {
  /** Sortable id (`rp-<time>-<hex>`). */
  id: string;
  /** The label given at creation (the engine passes the run id). */
  label: string;
  /** ISO 8601 creation time. */
  createdAt: string;
  /** The replica's `writeGeneration` once this point was committed. */
  generation: number;
  /**
   * Disk files that have an undo file for this point (`undo/<id>/<file>.undo`), which takes them
   * back to the previous point. Empty for the first point and for points that changed nothing.
   */
  undoFiles: string[];
}

/**
 * Reads a replica's restore points, oldest first; a missing file means none.
 *
 * @throws {@link @replikit/core!FormatError} naming the file when it is malformed.
 */
export async function readPoints(file: string): Promise<PointRecord[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw toStorageError(error, `reading ${file}`);
  }
  const bad = (why: string): never => {
    throw new FormatError(
      `${file} is malformed (${why}); restore it from a copy or delete the replica and seed it again`,
      {
        details: { file },
      },
    );
  };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return bad('not JSON');
  }
  const points = (parsed as { points?: unknown })?.points;
  if (!Array.isArray(points)) return bad('no "points" array');
  return points.map((p: unknown, i): PointRecord => {
    const r = p as Partial<PointRecord> | null;
    if (!r || !isSafeName(r.id)) return bad(`points[${i}].id`);
    if (typeof r.label !== 'string') return bad(`points[${i}].label`);
    if (typeof r.createdAt !== 'string') return bad(`points[${i}].createdAt`);
    if (typeof r.generation !== 'number' || !Number.isSafeInteger(r.generation)) return bad(`points[${i}].generation`);
    if (!Array.isArray(r.undoFiles) || !r.undoFiles.every(isSafeName)) return bad(`points[${i}].undoFiles`);
    return { id: r.id, label: r.label, createdAt: r.createdAt, generation: r.generation, undoFiles: [...r.undoFiles] };
  });
}

/** Writes a replica's restore points atomically. */
export async function writePoints(file: string, points: PointRecord[]): Promise<void> {
  await writeJsonAtomic(file, { version: 1, points });
}

import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** A single-quoted POSIX shell word (the launcher embeds only paths of this installation). */
function shellWord(text: string): string {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

/**
 * The Node arguments that run the fake pwsh: the built `pwsh-main.js` beside this bundle, or,
 * when running from the TypeScript sources (tests), the source entry through the `tsx` loader.
 */
function mainArgs(): string[] {
  const here = fileURLToPath(import.meta.url);
  if (!here.endsWith('.ts')) return [join(dirname(here), 'pwsh-main.js')];
  const tsx = join(dirname(createRequire(import.meta.url).resolve('tsx/package.json')), 'dist', 'loader.mjs');
  return ['--conditions=@replikit/source', '--import', pathToFileURL(tsx).href, join(dirname(here), 'pwsh-main.ts')];
}

/**
 * Writes the fake `pwsh` executable of a simulated host, `<root>/.pwsh/pwsh`, and returns its path:
 * give it to node-powershell as its `executable` option. It is a small `sh` script that `exec`s
 * Node on the simulator (so killing it kills the simulator) and passes its own path, from which
 * the simulator finds the host folder; the host's path is never written into it.
 */
export async function writeFakePwsh(root: string): Promise<string> {
  const dir = join(root, '.pwsh');
  await mkdir(dir, { recursive: true });
  const path = join(dir, 'pwsh');
  const words = [process.execPath, ...mainArgs()].map(shellWord).join(' ');
  await writeFile(path, `#!/bin/sh\nexec ${words} "$0" "$@"\n`);
  await chmod(path, 0o755);
  return path;
}

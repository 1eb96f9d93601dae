// `pnpm bench` / `npm run bench`: runs every bench/*.bench.ts in turn (or only those whose name
// contains one of the words given: `npm run bench -- formats`). Each benchmark builds its own
// data, measures replikit against a real peer tool in the same run, and prints ratios. A
// benchmark module exports `run(args: string[]): Promise<void>`.
import { readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const words = args.filter((arg) => !arg.startsWith('-'));
const flags = args.filter((arg) => arg.startsWith('-'));
const files = (await readdir(here))
  .filter((name) => name.endsWith('.bench.ts'))
  .filter((name) => words.length === 0 || words.some((word) => name.includes(word)))
  .sort();
if (files.length === 0) {
  console.error(`no benchmark matches ${words.join(', ') || '(none found)'}`);
  process.exitCode = 2;
}
for (const file of files) {
  console.log(`\n=== ${file.replace(/\.bench\.ts$/, '')} ===`);
  const module = (await import(pathToFileURL(join(here, file)).href)) as { run(args: string[]): Promise<void> };
  await module.run(flags);
}

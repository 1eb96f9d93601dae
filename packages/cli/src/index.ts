/**
 * `@replikit/cli`: the `replikit` command. Its `main` can be called from another program (tests,
 * wrappers) with its own streams.
 *
 * @packageDocumentation
 */

export { exitCodeOf, UsageError } from './cli-error.js';
export { type DemoOptions, demoCommand } from './commands/demo.js';
export type { CliContext } from './context.js';
export { main } from './main.js';

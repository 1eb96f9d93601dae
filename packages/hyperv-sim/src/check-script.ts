import { firstParseError, powershellParser } from './grammar.js';
import { PsError } from './ps-error.js';
import { scriptCommands } from './script-commands.js';

/** What {@link checkPowerShellScript} found. */
export type ScriptCheck =
  | { readonly ok: true; readonly cmdlets: string[] }
  | { readonly ok: false; readonly category: string; readonly message: string };

/**
 * Checks a script as the fake `pwsh` does before running it: it must parse with the PowerShell
 * grammar, and every cmdlet and parameter it names must be in the signature table. Lets a driver's
 * tests check every script it can send without a shell.
 */
export async function checkPowerShellScript(text: string): Promise<ScriptCheck> {
  const tree = (await powershellParser()).parse(text);
  if (!tree) return { ok: false, category: 'ParserError', message: 'the parser returned no tree' };
  const failure = firstParseError(tree.rootNode);
  if (failure) {
    return {
      ok: false,
      category: 'ParserError',
      message: `line ${failure.line} column ${failure.column}, near '${failure.near}'`,
    };
  }
  try {
    return { ok: true, cmdlets: scriptCommands(tree.rootNode).map((c) => c.name) };
  } catch (error) {
    if (error instanceof PsError) return { ok: false, category: error.category, message: error.message };
    throw error;
  }
}

import type { Node } from 'web-tree-sitter';
import { CMDLETS as HANDLERS } from './cmdlets/all-cmdlets.js';
import { hashtableArguments } from './cmdlets/cim-arguments.js';
import type { CmdletContext, CmdletHandler } from './cmdlets/context.js';
import { firstParseError, powershellParser } from './grammar.js';
import { logScript, takeHang } from './host/host-files.js';
import { loadState, saveState } from './host/host-state.js';
import { PsError } from './ps-error.js';
import { argumentValue, type ScriptCommand, scriptCommands } from './script-commands.js';

/** node-powershell's delimiter lines: `[Console]::Out.WriteLine("<id>")` and the Error twin. */
const DELIMITER = /^\[Console\]::(Out|Error)\.WriteLine\("([0-9A-Za-z]+)"\)$/;

/**
 * A call line: a script and its parameters, both base64, the parameters passed as `$args[0]`:
 * `& ([scriptblock]::Create([Text.Encoding]::UTF8.GetString([Convert]::FromBase64String('<s>')))) '<p>'`.
 */
const CALL =
  /^& \(\[scriptblock\]::Create\(\[Text\.Encoding\]::UTF8\.GetString\(\[Convert\]::FromBase64String\('([A-Za-z0-9+/=]*)'\)\)\)\) '([A-Za-z0-9+/=]*)'$/;

/** Where a session writes. */
export interface SessionOutput {
  stdout(text: string): void;
  stderr(text: string): void;
}

/** What a line did: `hang` means the shell must stop answering (an armed fault). */
export type LineOutcome = 'done' | 'hang';

/**
 * One fake PowerShell session over a simulated host: it takes the lines node-powershell writes in
 * `-Command -` mode, one at a time.
 */
export class PwshSession {
  constructor(
    private readonly root: string,
    private readonly out: SessionOutput,
  ) {}

  /** Handles one stdin line. */
  async line(text: string): Promise<LineOutcome> {
    const line = text.replace(/\r$/, '');
    await logScript(this.root, { kind: 'line', text: line });
    const delimiter = DELIMITER.exec(line);
    if (delimiter) {
      if (delimiter[1] === 'Out') this.out.stdout(`${delimiter[2]}\n`);
      else this.out.stderr(`${delimiter[2]}\n`);
      return 'done';
    }
    if (line.trim() === '') return 'done';
    const parser = await powershellParser();
    const tree = parser.parse(line);
    if (!tree) throw new Error('the PowerShell parser returned no tree');
    const failure = firstParseError(tree.rootNode);
    if (failure) {
      this.out.stderr(parserError(failure));
      return 'done';
    }
    const call = CALL.exec(line);
    if (!call) return this.plainLine(tree.rootNode);
    return this.call(
      Buffer.from(call[1] ?? '', 'base64').toString('utf8'),
      Buffer.from(call[2] ?? '', 'base64').toString('utf8'),
    );
  }

  /** A line that is not a call (the session's set-up): checked, nothing to run or print. */
  private plainLine(root: Node): LineOutcome {
    try {
      scriptCommands(root);
    } catch (error) {
      this.out.stderr(errorRecord(error));
    }
    return 'done';
  }

  private async call(script: string, paramsJson: string): Promise<LineOutcome> {
    await logScript(this.root, { kind: 'script', text: script });
    const tree = (await powershellParser()).parse(script);
    if (!tree) throw new Error('the PowerShell parser returned no tree');
    const failure = firstParseError(tree.rootNode);
    if (failure) {
      this.out.stderr(parserError(failure));
      return 'done';
    }
    if (!hasEnvelope(tree.rootNode)) {
      this.out.stderr(
        errorRecord(
          new PsError(
            'NotImplemented',
            'The simulator runs only scripts that wrap their work in try/catch and ConvertTo-Json.',
            'SimulatorUnsupportedScript',
          ),
        ),
      );
      return 'done';
    }
    let commands: ScriptCommand[];
    let params: Record<string, unknown>;
    try {
      params = JSON.parse(paramsJson) as Record<string, unknown>;
      commands = scriptCommands(tree.rootNode);
    } catch (error) {
      this.out.stdout(`${envelopeOf(error)}\n`);
      return 'done';
    }
    const runnable = commands.filter((c) => HANDLERS[c.name]);
    const first = runnable[0];
    if (first && (await takeHang(this.root, first.name))) return 'hang';
    try {
      const data = await this.run(runnable, params);
      this.out.stdout(`${JSON.stringify({ ok: true, data })}\n`);
    } catch (error) {
      this.out.stdout(`${envelopeOf(error)}\n`);
    }
    return 'done';
  }

  private async run(commands: ScriptCommand[], params: Record<string, unknown>): Promise<unknown[]> {
    const state = await loadState(this.root);
    let dirty = false;
    let last: unknown = null;
    try {
      for (const command of commands) {
        const context: CmdletContext = {
          root: this.root,
          state,
          markDirty: () => {
            dirty = true;
          },
          arg: (name) => {
            if (!command.arguments.has(name)) return undefined;
            const text = command.arguments.get(name);
            if (text?.trim().startsWith('@{')) return hashtableArguments(text, params);
            return argumentValue(text, params);
          },
          has: (name) => command.arguments.has(name),
        };
        last = await (HANDLERS[command.name] as CmdletHandler)(context);
      }
    } finally {
      if (dirty) await saveState(this.root, state);
    }
    if (last === null || last === undefined) return [];
    return Array.isArray(last) ? last : [last];
  }
}

function hasEnvelope(root: Node): boolean {
  const types = new Set<string>();
  const visit = (n: Node): void => {
    types.add(n.type);
    if (n.type === 'command') types.add(`cmd:${n.childForFieldName('command_name')?.text.toLowerCase()}`);
    for (const c of n.namedChildren) if (c) visit(c);
  };
  visit(root);
  return types.has('try_statement') && types.has('cmd:convertto-json');
}

function parserError(f: { line: number; column: number; near: string }): string {
  return `ParserError: At line:${f.line} char:${f.column}: unexpected token near '${f.near}'.\n`;
}

/** The error envelope a call's catch block prints. */
function envelopeOf(error: unknown): string {
  if (error instanceof PsError) {
    return JSON.stringify({ ok: false, category: error.category, message: error.message, errorId: error.errorId });
  }
  const message = error instanceof Error ? error.message : String(error);
  return JSON.stringify({ ok: false, category: 'NotSpecified', message, errorId: 'System.Exception' });
}

/** An error as PowerShell prints one on stderr. */
function errorRecord(error: unknown): string {
  if (error instanceof PsError)
    return `${error.message}\n    + CategoryInfo          : ${error.category}\n    + FullyQualifiedErrorId : ${error.errorId}\n`;
  return `${error instanceof Error ? error.message : String(error)}\n`;
}

import type { Node } from 'web-tree-sitter';
import { CMDLETS as HANDLERS } from './cmdlets/all-cmdlets.js';
import { hashtableArguments } from './cmdlets/cim-arguments.js';
import type { CmdletContext, CmdletHandler } from './cmdlets/context.js';
import { firstParseError, powershellParser } from './grammar.js';
import { logScript, takeHang } from './host/host-files.js';
import { withHostLock } from './host/host-lock.js';
import { loadState, saveState } from './host/host-state.js';
import { bootId, readRemoteHosts } from './host/remoting.js';
import { runDownstream } from './pipeline.js';
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

/**
 * A call line through PowerShell remoting: the same script and parameters, run in the PSSession the
 * driver opened (`$global:ReplikitSession`) by `Invoke-Command`.
 */
const INVOKE =
  /^Invoke-Command -Session \$global:ReplikitSession -ScriptBlock \(\[scriptblock\]::Create\(\[Text\.Encoding\]::UTF8\.GetString\(\[Convert\]::FromBase64String\('([A-Za-z0-9+/=]*)'\)\)\)\) -ArgumentList '([A-Za-z0-9+/=]*)'$/;

/** `-Credential ([pscredential]::new($p.<user>, $<secure string variable>))`, as the driver writes it. */
const CREDENTIAL = /^\(\[pscredential\]::new\(\$p\.([A-Za-z_][A-Za-z0-9_]*), *\$[A-Za-z_][A-Za-z0-9_]*\)\)$/;

/** A PSSession this shell opened to a simulated host. */
interface OpenSession {
  readonly computerName: string;
  /** The host's boot id when the session opened: a reboot breaks the session. */
  readonly boot: string;
  readonly root: string;
  /** The host side of the session: runs the scripts `Invoke-Command` sends. */
  readonly shell: PwshSession;
}

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
  /** The PSSession opened by `New-PSSession` (one per shell, as the driver keeps one). */
  private remote: OpenSession | undefined;

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
    const invoke = INVOKE.exec(line);
    if (invoke) return this.invokeRemote(tree.rootNode, invoke[1] ?? '', invoke[2] ?? '');
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
    if (commands.some((c) => c.name === 'New-PSSession' || c.name === 'Remove-PSSession')) {
      try {
        const data = await this.sessionCommand(commands, params);
        this.out.stdout(`${JSON.stringify({ ok: true, data })}\n`);
      } catch (error) {
        this.out.stdout(`${envelopeOf(error)}\n`);
      }
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

  /**
   * `Invoke-Command -Session`: the decoded script runs on the session's host, and its envelope
   * comes back as the command's output. No session, or a broken one (the host rebooted), is the
   * non-terminating error real PowerShell writes to the error stream.
   */
  private async invokeRemote(root: Node, script: string, params: string): Promise<LineOutcome> {
    try {
      scriptCommands(root);
    } catch (error) {
      this.out.stderr(errorRecord(error));
      return 'done';
    }
    const session = this.remote;
    if (!session) {
      this.out.stderr(
        errorRecord(
          new PsError(
            'InvalidData',
            "Invoke-Command: Cannot validate argument on parameter 'Session'. The argument is null or empty.",
            'ParameterArgumentValidationError,Microsoft.PowerShell.Commands.InvokeCommandCommand',
          ),
        ),
      );
      return 'done';
    }
    if ((await bootId(session.root)) !== session.boot) {
      this.out.stderr(
        errorRecord(
          new PsError(
            'InvalidOperation',
            `Invoke-Command: Because the session state for session ReplikitSession, ${session.computerName} is not equal to Open, you cannot run a command in the session. The session state is Broken.`,
            'InvalidSessionState,Microsoft.PowerShell.Commands.InvokeCommandCommand',
          ),
        ),
      );
      return 'done';
    }
    return session.shell.call(
      Buffer.from(script, 'base64').toString('utf8'),
      Buffer.from(params, 'base64').toString('utf8'),
    );
  }

  /**
   * `New-PSSession -ComputerName … [-Credential …]` and `Remove-PSSession`: the computer name is
   * looked up in this shell's folder's registry of simulated hosts; a host configured with a user
   * and password refuses any other credential ("Access is denied"), as WinRM does.
   */
  private async sessionCommand(commands: ScriptCommand[], params: Record<string, unknown>): Promise<unknown[]> {
    const value = (command: ScriptCommand | undefined, name: string) =>
      command ? argumentValue(command.arguments.get(name), params) : undefined;
    if (commands.some((c) => c.name === 'Remove-PSSession')) {
      this.remote = undefined;
      return [];
    }
    const open = commands.find((c) => c.name === 'New-PSSession')!;
    const computerName = value(open, 'ComputerName');
    if (typeof computerName !== 'string' || computerName === '') {
      throw new PsError(
        'InvalidArgument',
        "Cannot validate argument on parameter 'ComputerName'. The argument is null or empty.",
        'ParameterArgumentValidationError,Microsoft.PowerShell.Commands.NewPSSessionCommand',
      );
    }
    let user: unknown;
    let password: unknown;
    if (open.arguments.has('Credential')) {
      const field = CREDENTIAL.exec(open.arguments.get('Credential') ?? '');
      if (!field?.[1]) {
        throw new PsError(
          'NotImplemented',
          'The simulator takes -Credential only as ([pscredential]::new($p.<user>, $<secure string>)).',
          'SimulatorUnsupportedScript',
        );
      }
      user = params[field[1]];
      password = value(
        commands.find((c) => c.name === 'ConvertTo-SecureString'),
        'String',
      );
    }
    const host = (await readRemoteHosts(this.root))[computerName.toLowerCase()];
    const failed = (why: string, id: string) =>
      new PsError(
        'OpenError',
        `[${computerName}] Connecting to remote server ${computerName} failed with the following error message : ${why} For more information, see the about_Remote_Troubleshooting Help topic.`,
        `${id},PSSessionOpenFailed`,
      );
    if (!host) {
      throw failed(
        'WinRM cannot process the request because the computer cannot be found or is not reachable.',
        'NetworkPathNotFound',
      );
    }
    if (host.password !== undefined && (user !== host.user || password !== host.password)) {
      throw failed('Access is denied.', 'AccessDenied');
    }
    this.remote = {
      computerName,
      boot: await bootId(host.root),
      root: host.root,
      shell: new PwshSession(host.root, this.out),
    };
    return [{ Name: 'ReplikitSession', ComputerName: computerName, State: 'Opened' }];
  }

  private run(commands: ScriptCommand[], params: Record<string, unknown>): Promise<unknown[]> {
    return withHostLock(this.root, () => this.runLocked(commands, params));
  }

  private async runLocked(commands: ScriptCommand[], params: Record<string, unknown>): Promise<unknown[]> {
    const state = await loadState(this.root);
    const variables = new Map<string, unknown>();
    let dirty = false;
    let last: unknown[] = [];
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
            if (text?.trim().startsWith('@{')) return hashtableArguments(text, params, variables);
            return argumentValue(text, params, variables);
          },
          has: (name) => command.arguments.has(name),
        };
        const written = await (HANDLERS[command.name] as CmdletHandler)(context);
        const target = assignedVariable(command.node);
        if (target === undefined) {
          last = runDownstream(command.node, written, params);
        } else {
          // As PowerShell assigns a pipeline's output: nothing is $null, one object is itself.
          const kept = runDownstream(command.node, written, params, true);
          variables.set(target, kept.length === 0 ? null : kept.length === 1 ? kept[0] : kept);
        }
      }
    } finally {
      if (dirty) await saveState(this.root, state);
    }
    return last;
  }
}

/**
 * The variable (lower-case, without `$`) a command's pipeline is assigned to
 * (`$name = <command> | …`), or `undefined` when its output is not assigned.
 */
function assignedVariable(command: Node): string | undefined {
  const assignment = command.parent?.parent?.parent;
  if (assignment?.type !== 'assignment_expression') return undefined;
  const left = assignment.namedChildren.find((c) => c?.type === 'left_assignment_expression');
  const name = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(left?.text.trim() ?? '')?.[1];
  return name?.toLowerCase();
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

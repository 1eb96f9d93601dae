/**
 * A PowerShell error as the simulator reports it: the `ErrorCategory` name (for example
 * `ObjectNotFound`), the exception's message, and the fully qualified error id, the three facts a
 * script's `catch` block reads from `$_`.
 */
export class PsError extends Error {
  constructor(
    /** The `System.Management.Automation.ErrorCategory` name. */
    readonly category: string,
    message: string,
    /** The `FullyQualifiedErrorId`. */
    readonly errorId: string,
  ) {
    super(message);
    this.name = 'PsError';
  }
}

/** The error PowerShell raises for a command name it cannot resolve. */
export function commandNotFound(name: string): PsError {
  return new PsError(
    'ObjectNotFound',
    `The term '${name}' is not recognized as a name of a cmdlet, function, script file, or executable program.`,
    'CommandNotFoundException',
  );
}

/** The error PowerShell raises for a parameter name the cmdlet does not have. */
export function parameterNotFound(cmdlet: string, parameter: string): PsError {
  return new PsError(
    'InvalidArgument',
    `A parameter cannot be found that matches parameter name '${parameter}'.`,
    `NamedParameterNotFound,${cmdlet}`,
  );
}

import { readFile } from 'node:fs/promises';
import { AuthError } from '@replikit/core';

/** Where the password comes from. */
export interface CredentialRef {
  /** The user, unless the credentials file names one (`user:password`). */
  user: string;
  /** An environment variable holding the password. */
  passwordEnv?: string | undefined;
  /** A file whose first line is the password, or `user:password`. */
  credentialsFile?: string | undefined;
}

/**
 * Resolves the user and password a job names by reference. The password never appears in a
 * message or `details`.
 *
 * @throws {@link @replikit/core!AuthError} when the variable is unset or empty, or the file cannot be read.
 */
export async function resolveCredentials(ref: CredentialRef): Promise<{ user: string; password: string }> {
  if (ref.passwordEnv !== undefined) {
    const password = process.env[ref.passwordEnv];
    if (!password) {
      throw new AuthError(
        `environment variable ${ref.passwordEnv} (passwordEnv) is unset or empty; set it to the XAPI password`,
      );
    }
    return { user: ref.user, password };
  }
  if (ref.credentialsFile !== undefined) {
    let text: string;
    try {
      text = await readFile(ref.credentialsFile, 'utf8');
    } catch (error) {
      throw new AuthError(
        `cannot read credentialsFile ${JSON.stringify(ref.credentialsFile)}; check the path and its permissions`,
        {
          cause: error,
        },
      );
    }
    const line = text.split(/\r?\n/, 1)[0] ?? '';
    const colon = line.indexOf(':');
    const [user, password] = colon > 0 ? [line.slice(0, colon), line.slice(colon + 1)] : [ref.user, line];
    if (!password)
      throw new AuthError(`credentialsFile ${JSON.stringify(ref.credentialsFile)} holds no password on its first line`);
    return { user, password };
  }
  throw new AuthError('no credentials: name passwordEnv or credentialsFile in the job');
}

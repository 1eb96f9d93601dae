/** C0 controls, DEL and C1 controls: what a terminal acts on instead of printing. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what we escape
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what we escape
const CONTROL_BUT_NEWLINE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/g;

const escapeControl = (c: string): string =>
  c === '\n' ? '\\n' : c === '\r' ? '\\r' : c === '\t' ? '\\t' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/**
 * `text` (a VM name from a pool, say) as one printable line: every control character written as
 * an escape (`\n`, `\u001b`…), so that a name can neither break a listing into forged lines nor
 * send a terminal its escape sequences.
 */
export function printableLine(text: string): string {
  return text.replace(CONTROL, escapeControl);
}

/**
 * `text` with its line breaks kept (a message of several lines) but every other control character
 * escaped as {@link printableLine} does: no escape sequence reaches the terminal.
 */
export function printableLines(text: string): string {
  return text.replace(CONTROL_BUT_NEWLINE, escapeControl);
}

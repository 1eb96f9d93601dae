import { InputError } from '../errors.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses a duration into milliseconds: a number of seconds, or a string of one or more parts such
 * as `30s`, `5m`, `1h30m`, `500ms`, `2d`.
 *
 * @throws {@link InputError} for anything else, naming `what`.
 */
export function parseDuration(value: number | string, what = 'duration'): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new InputError(`${what}: expected seconds, got ${value}`);
    return Math.round(value * 1000);
  }
  const text = value.trim().toLowerCase();
  const part = /(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)/gy;
  let ms = 0;
  let at = 0;
  for (let match = part.exec(text); match; match = part.exec(text)) {
    ms += Number(match[1]) * UNITS[match[2]!]!;
    at = part.lastIndex;
    while (text[at] === ' ') at++;
    part.lastIndex = at;
  }
  if (text.length === 0 || at !== text.length) {
    throw new InputError(`${what}: '${value}' is not a duration; write seconds or a value such as 30s, 5m or 1h30m`);
  }
  return Math.round(ms);
}

/** Formats milliseconds for humans: `1h 2m 3s`, `45s`, `250ms`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  let seconds = Math.round(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
  ] as const) {
    if (seconds >= size) {
      parts.push(`${Math.floor(seconds / size)}${unit}`);
      seconds %= size;
    }
  }
  if (seconds > 0 || parts.length === 0) parts.push(`${seconds}s`);
  return parts.join(' ');
}

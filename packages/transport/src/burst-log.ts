/** How long a burst of like events is gathered into one line by default: 1 second. */
export const DEFAULT_BURST_MS = 1000;

interface Tally {
  count: number;
  byAddress: Map<string, number>;
}

/**
 * Logs events that come in floods (connections dropped or refused before they authenticated) as
 * one line per burst instead of one per event. The first event after a quiet period is logged at
 * once, as is; the ones that follow within `windowMs` are counted per kind and per remote address
 * and logged as one line per kind when the window ends (a flood that goes on gives one line per
 * kind and window).
 */
export class BurstLog {
  private readonly tallies = new Map<string, Tally>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly log: (line: string) => void,
    private readonly windowMs = DEFAULT_BURST_MS,
  ) {}

  /**
   * Records one event.
   *
   * @param kind - What happened, as the summary says it (`dropped at the handshake deadline`).
   * @param address - The remote address (without the port) the summary counts it under.
   * @param line - The line logged when this event is the first of a burst.
   */
  add(kind: string, address: string, line: string): void {
    if (!this.timer) {
      this.log(line);
      this.arm();
      return;
    }
    let tally = this.tallies.get(kind);
    if (!tally) {
      tally = { count: 0, byAddress: new Map() };
      this.tallies.set(kind, tally);
    }
    tally.count++;
    tally.byAddress.set(address, (tally.byAddress.get(address) ?? 0) + 1);
  }

  /** Logs what was gathered and stops the timer (call when the agent stops). */
  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.flush();
  }

  private arm(): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      // A window with events opens the next one: a long flood gives one line per kind and window.
      if (this.flush()) this.arm();
    }, this.windowMs);
    this.timer.unref();
  }

  /** Logs one line per kind gathered; true when there was any. */
  private flush(): boolean {
    const any = this.tallies.size > 0;
    const seconds = this.windowMs >= 1000 ? `${Math.round(this.windowMs / 1000)} s` : `${this.windowMs} ms`;
    for (const [kind, tally] of this.tallies) {
      const top = [...tally.byAddress].sort((a, b) => b[1] - a[1]);
      const named = top
        .slice(0, 3)
        .map(([address, count]) => `${address} (${count})`)
        .join(', ');
      const more = top.length > 3 ? ` and ${top.length - 3} more addresses` : '';
      this.log(`${kind}: ${tally.count} more connections within ${seconds}, from ${named}${more}`);
    }
    this.tallies.clear();
    return any;
  }
}

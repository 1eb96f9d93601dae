/**
 * The "record in the backup store" step of a single-pass run: the bytes of every block sent
 * (`null` for zeros) go to the backup version. A version without a base (`hasBase` false) also
 * gets every non-zero block examined, sent or not; one with a base inherits those.
 */
export class BackupTap {
  constructor(
    private readonly put: (index: number, data: Uint8Array | null) => Promise<void>,
    private readonly hasBase: boolean,
  ) {}

  /** A block sent with data (whole or as a delta). */
  sent(index: number, block: Uint8Array): Promise<void> {
    return this.put(index, block);
  }

  /** A block the replica already holds. */
  async unchanged(index: number, block: Uint8Array): Promise<void> {
    if (!this.hasBase) await this.put(index, block);
  }

  /** `count` blocks sent as zeros. */
  async zero(index: number, count = 1): Promise<void> {
    if (this.hasBase) for (let i = 0; i < count; i++) await this.put(index + i, null);
  }
}

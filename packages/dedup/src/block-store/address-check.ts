import { webcrypto } from 'node:crypto';
import type { StoreKeys } from './chunk-crypto.js';

/**
 * Computes content addresses off the calling thread: Web Crypto's `digest` and `sign` run on
 * libuv's thread pool, so a restore checks the chunk it decoded last while it reads and decodes
 * the next ones. Same addresses as the store's synchronous `addressOf`: sha256 of the plain
 * block, or HMAC-SHA-256 under the address key of an encrypted store.
 */
export class AddressCheck {
  private hmacKey: Promise<webcrypto.CryptoKey> | undefined;

  constructor(private readonly keys: StoreKeys | null) {}

  /** The address of `plain` (32 bytes). */
  async addressOf(plain: Uint8Array): Promise<Uint8Array> {
    if (!this.keys) return new Uint8Array(await webcrypto.subtle.digest('SHA-256', plain));
    this.hmacKey ??= webcrypto.subtle.importKey('raw', this.keys.address, { name: 'HMAC', hash: 'SHA-256' }, false, [
      'sign',
    ]);
    return new Uint8Array(await webcrypto.subtle.sign('HMAC', await this.hmacKey, plain));
  }

  /** Whether `plain`'s address is `address` (64 hex digits). */
  async matches(plain: Uint8Array, address: string): Promise<boolean> {
    return Buffer.from(await this.addressOf(plain)).toString('hex') === address;
  }
}

import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { open } from 'node:fs/promises';
import { FormatError, InputError, ReplikitError, VerifyError } from '@replikit/core';

/** Bytes of a store key. */
export const KEY_BYTES = 32;
/** Bytes of the random nonce before each encrypted chunk. */
export const NONCE_BYTES = 12;
/** Bytes of the GCM tag after each encrypted chunk. */
export const TAG_BYTES = 16;

/** The keys derived from a store's master key and salt (HKDF-SHA-256). */
export interface StoreKeys {
  /** HMAC-SHA-256 key of content addresses. */
  address: Buffer;
  /** AES-256-GCM key of chunks. */
  encrypt: Buffer;
  /** HMAC-SHA-256 key of the key check value. */
  check: Buffer;
}

/** The key check record `key.json` of an encrypted store. */
export interface KeyCheckRecord {
  format: 'replikit-block-store-key';
  version: 1;
  cipher: 'aes-256-gcm';
  kdf: 'hkdf-sha256';
  /** 16 random bytes, hex: the HKDF salt. */
  salt: string;
  /** HMAC-SHA-256 of "replikit block store key check" under the check key, hex. */
  check: string;
}

/**
 * Reads a key file: exactly 32 bytes, or (surrounding white space ignored) 64 hex digits, or the
 * base64 of 32 bytes. Outside Windows the file must be private: no permission for its group or
 * others (as `ssh` asks of a private key).
 * @throws {@link @replikit/core!InputError} when it holds none of these, is not private, or cannot be read.
 */
export async function readKeyFile(path: string): Promise<Buffer> {
  let bytes: Buffer;
  let mode: number;
  try {
    const handle = await open(path, 'r');
    try {
      mode = (await handle.stat()).mode;
      bytes = await handle.readFile();
    } finally {
      await handle.close();
    }
  } catch (error) {
    throw new InputError(`the block store key file ${path} cannot be read (${(error as Error).message})`, {
      cause: error,
    });
  }
  if (process.platform !== 'win32' && (mode & 0o077) !== 0) {
    throw new InputError(
      `the block store key file ${path} is open to other users (mode ${(mode & 0o777).toString(8).padStart(4, '0')}): make it private with \`chmod 600 ${path}\``,
    );
  }
  if (bytes.length === KEY_BYTES) return bytes;
  const text = bytes.toString('latin1').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  if (/^[A-Za-z0-9+/]{43}=$/.test(text)) return Buffer.from(text, 'base64');
  throw new InputError(
    `the block store key file ${path} holds no key: give 32 random bytes, 64 hex digits or their base64 (e.g. \`(umask 077 && head -c 32 /dev/urandom > ${path})\`)`,
  );
}

/** Derives the address, encryption and check keys from a master key and a store's salt. */
export function deriveKeys(master: Buffer, salt: Buffer): StoreKeys {
  const derive = (info: string) => Buffer.from(hkdfSync('sha256', master, salt, info, KEY_BYTES));
  return {
    address: derive('replikit block store address v1'),
    encrypt: derive('replikit block store chunk v1'),
    check: derive('replikit block store check v1'),
  };
}

/** The check value of `keys` (hex). */
export function checkValue(keys: StoreKeys): string {
  return createHmac('sha256', keys.check).update('replikit block store key check').digest('hex');
}

/** A new key check record (and its keys) for `master`, with a fresh random salt. */
export function newKeyCheck(master: Buffer): { record: KeyCheckRecord; keys: StoreKeys } {
  const salt = randomBytes(16);
  const keys = deriveKeys(master, salt);
  const record: KeyCheckRecord = {
    format: 'replikit-block-store-key',
    version: 1,
    cipher: 'aes-256-gcm',
    kdf: 'hkdf-sha256',
    salt: salt.toString('hex'),
    check: checkValue(keys),
  };
  return { record, keys };
}

/**
 * The keys of a store whose key check record is `record`, when `master` is its key.
 * @throws {@link @replikit/core!ReplikitError} `E_AUTH` when it is not.
 * @throws {@link @replikit/core!FormatError} when the record is malformed.
 */
export function unlockKeys(master: Buffer, record: KeyCheckRecord, store: string, keyFile: string): StoreKeys {
  if (record.format !== 'replikit-block-store-key' || record.version !== 1 || !/^[0-9a-f]{32}$/.test(record.salt)) {
    throw new FormatError(`${store}/key.json is not a key check record replikit can read`);
  }
  const keys = deriveKeys(master, Buffer.from(record.salt, 'hex'));
  const expected = Buffer.from(record.check, 'hex');
  const actual = Buffer.from(checkValue(keys), 'hex');
  if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) {
    throw new ReplikitError(
      'E_AUTH',
      `the key in ${keyFile} does not open the encrypted block store ${store}: give the key file the store was created with`,
    );
  }
  return keys;
}

/** The keyed content address of a block: HMAC-SHA-256 of its plain bytes. */
export function keyedAddress(keys: StoreKeys, plain: Uint8Array): Buffer {
  return createHmac('sha256', keys.address).update(plain).digest();
}

/** Encrypts an encoded chunk: a random nonce, the AES-256-GCM ciphertext (address as AAD), the tag. */
export function sealChunk(keys: StoreKeys, address: Uint8Array, encoded: Uint8Array): Buffer {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', keys.encrypt, nonce);
  cipher.setAAD(address);
  return Buffer.concat([nonce, cipher.update(encoded), cipher.final(), cipher.getAuthTag()]);
}

/**
 * Decrypts a sealed chunk.
 * @throws {@link @replikit/core!VerifyError} when it does not authenticate (damaged, or another chunk's).
 */
export function openChunk(keys: StoreKeys, address: Uint8Array, sealed: Uint8Array, what: string): Buffer {
  if (sealed.length < NONCE_BYTES + TAG_BYTES) throw new VerifyError(`${what} is damaged: too short to be encrypted`);
  const decipher = createDecipheriv('aes-256-gcm', keys.encrypt, sealed.subarray(0, NONCE_BYTES));
  decipher.setAAD(address);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES)), decipher.final()]);
  } catch (error) {
    throw new VerifyError(`${what} is damaged: it does not authenticate`, { cause: error });
  }
}

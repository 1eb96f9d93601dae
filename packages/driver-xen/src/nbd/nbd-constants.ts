/** NBD protocol numbers, the subset xapi-nbd speaks (fixed newstyle, simple replies). */
export const NBD = {
  MAGIC: 0x4e42444d41474943n, // "NBDMAGIC"
  IHAVEOPT: 0x49484156454f5054n, // "IHAVEOPT"
  OPT_REPLY_MAGIC: 0x3e889045565a9n,
  REQUEST_MAGIC: 0x25609513,
  SIMPLE_REPLY_MAGIC: 0x67446698,
  FLAG_FIXED_NEWSTYLE: 1,
  CLIENT_FLAG_FIXED_NEWSTYLE: 1,
  OPT_EXPORT_NAME: 1,
  OPT_STARTTLS: 5,
  REP_ACK: 1,
  FLAG_HAS_FLAGS: 1,
  CMD_READ: 0,
  CMD_DISC: 2,
  /** Size, flags and 124 zero bytes: the EXPORT_NAME reply xapi-nbd always sends. */
  EXPORT_REPLY_LENGTH: 8 + 2 + 124,
  /** Longest option reply payload we accept from a server. */
  MAX_OPTION_REPLY: 64 * 1024,
  /** Reads are aligned to this (xapi-nbd answers EINVAL otherwise). */
  SECTOR: 512,
} as const;

/** An errno from a reply, by name, for messages. */
export function errnoName(errno: number): string {
  return (
    (
      { 1: 'EPERM', 5: 'EIO', 12: 'ENOMEM', 22: 'EINVAL', 28: 'ENOSPC', 75: 'EOVERFLOW', 108: 'ESHUTDOWN' } as Record<
        number,
        string
      >
    )[errno] ?? `errno ${errno}`
  );
}

/** NBD protocol constants as xapi-nbd uses them (fixed newstyle only). */
export const NBD = {
  MAGIC: Buffer.from('NBDMAGIC', 'latin1'),
  IHAVEOPT: Buffer.from('IHAVEOPT', 'latin1'),
  REPLY_MAGIC: 0x3e889045565a9n,
  REQUEST_MAGIC: 0x25609513,
  SIMPLE_REPLY_MAGIC: 0x67446698,
  FLAG_FIXED_NEWSTYLE: 1,
  OPT_EXPORT_NAME: 1,
  OPT_ABORT: 2,
  OPT_LIST: 3,
  OPT_STARTTLS: 5,
  REP_ACK: 1,
  REP_ERR_UNSUP: 0x80000001,
  REP_ERR_POLICY: 0x80000002,
  REP_ERR_INVALID: 0x80000003,
  REP_ERR_TLS_REQD: 0x80000005,
  /** Transmission flags: HAS_FLAGS | READ_ONLY, nothing else (no multi-conn, flush or trim). */
  TRANSMISSION_FLAGS: 3,
  CMD_READ: 0,
  CMD_WRITE: 1,
  CMD_DISC: 2,
  EPERM: 1,
  EIO: 5,
  EINVAL: 22,
} as const;

/** An option reply header with no payload. */
export function optionReply(option: number, type: number): Buffer {
  const b = Buffer.alloc(20);
  b.writeBigUInt64BE(NBD.REPLY_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(0, 16);
  return b;
}

/** A simple reply header. */
export function simpleReply(error: number, handle: Buffer): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(NBD.SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  handle.copy(b, 8);
  return b;
}

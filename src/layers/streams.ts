/**
 * Byte streams of layers: decompression (gzip through zlib, zstd through fzstd — Node 20's
 * zlib has no zstd), told apart by their magic bytes or named by a media type, and taps
 * that hash or count the bytes going through (the digest of a blob, the diffID of the
 * tar inside it). Everything is an async iterable of Buffers, so a consumer that stops
 * early (a refused entry) also stops the reading.
 */
import type { Hash } from 'node:crypto';
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import { Decompress } from 'fzstd';
import { fail, isThinfsError } from '../errors.js';

export type Compression = 'none' | 'gzip' | 'zstd';

const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/** The compression the first bytes of a stream show (`none` for anything else, a plain tar included). */
export function detectCompression(head: Buffer): Compression {
  if (head.length >= 2 && head.subarray(0, 2).equals(GZIP_MAGIC)) return 'gzip';
  if (head.length >= 4 && head.subarray(0, 4).equals(ZSTD_MAGIC)) return 'zstd';
  return 'none';
}

/**
 * The uncompressed bytes of `input`: compressed as `how` says, or (`auto`) as its first
 * bytes show. A truncated or corrupt stream fails with EINVAL naming `source`.
 */
export async function* decompressed(input: AsyncIterable<Buffer>, how: Compression | 'auto', source: string): AsyncGenerator<Buffer> {
  const it = input[Symbol.asyncIterator]();
  let first = await it.next();
  while (!first.done && first.value.length < 4) {
    // A tiny first chunk: gather a few bytes to see the magic.
    const more = await it.next();
    if (more.done) break;
    first = { done: false, value: Buffer.concat([first.value, more.value]) };
  }
  const head = first.done ? Buffer.alloc(0) : first.value;
  const kind = how === 'auto' ? detectCompression(head) : how;
  async function* rest(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  }
  if (kind === 'none') yield* rest();
  else if (kind === 'gzip') yield* gunzip(rest(), source);
  else yield* unzstd(rest(), source);
}

async function* gunzip(input: AsyncIterable<Buffer>, source: string): AsyncGenerator<Buffer> {
  const z = zlib.createGunzip();
  const src = Readable.from(input);
  src.on('error', (err) => z.destroy(err));
  src.pipe(z);
  try {
    for await (const chunk of z) yield chunk as Buffer;
  } catch (err) {
    throw compressionError(err, 'gzip', source);
  } finally {
    src.destroy();
    z.destroy();
  }
}

async function* unzstd(input: AsyncIterable<Buffer>, source: string): AsyncGenerator<Buffer> {
  const out: Buffer[] = [];
  // fzstd may hand out views of its own window: copy each piece.
  const d = new Decompress((chunk) => out.push(Buffer.from(chunk)));
  try {
    for await (const chunk of input) {
      d.push(chunk);
      while (out.length > 0) yield out.shift()!;
    }
    d.push(new Uint8Array(0), true);
  } catch (err) {
    throw compressionError(err, 'zstd', source);
  }
  while (out.length > 0) yield out.shift()!;
}

function compressionError(err: unknown, kind: string, source: string): unknown {
  if (isThinfsError(err)) return err;
  const e = err as NodeJS.ErrnoException;
  // Read errors of the source itself (an fs error with a syscall) pass unchanged.
  if (e?.syscall !== undefined) return err;
  return fail('EINVAL', 'import', source, `the ${kind} stream is truncated or corrupt (${e?.message ?? String(err)})`);
}

/** `input` unchanged, every byte also fed to `hash` and counted in `count.bytes`. */
export async function* tapped(input: AsyncIterable<Buffer>, hash: Hash | undefined, count: { bytes: number }): AsyncGenerator<Buffer> {
  for await (const chunk of input) {
    hash?.update(chunk);
    count.bytes += chunk.length;
    yield chunk;
  }
}

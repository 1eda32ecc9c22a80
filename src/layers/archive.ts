/**
 * The files of an image, wherever they are: a directory (an OCI image layout on disk) or
 * a tar archive of one (oci-archive, docker-archive), read in place.
 *
 * A tar archive is indexed once by walking its headers (pread of 512-byte blocks, bodies
 * skipped), so a blob is then read straight from its offset: no extraction, no copy.
 * PAX `path`/`size` records and GNU long names are honoured; symbolic and hard links
 * inside the archive (docker-archive's legacy `ID/layer.tar -> ../DIGEST.tar`) resolve
 * to their target entry, and never outside the archive. A compressed archive (`docker
 * save | gzip`) can't be read in place: the caller decompresses it to a file first.
 *
 * Names are archive paths without `./` or trailing `/`: `index.json`, `blobs/sha256/HEX`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { Header } from 'tar';
import { fail, type ErrnoCode } from '../errors.js';
import { parseRecords } from './pax.js';

/** Read access to the files of an image layout or archive. */
export interface FileStore {
  /** What it is, for messages: the directory or archive path. */
  readonly where: string;
  /** True when file `name` exists (a regular file, after links). */
  has(name: string): boolean;
  /** Its size in bytes; ENOENT naming it when missing. */
  size(name: string): number;
  /** Its whole content (small files: index.json, manifests, configs). */
  read(name: string): Buffer;
  /** A stream of its content (blobs). */
  stream(name: string): Readable;
  /** Every file name (for recognising a format). */
  names(): string[];
}

const BLOCK = 512;
/** Names an image archive holds: the layout's files and blobs, docker's manifest, configs, layers and legacy files. */
const IMAGE_ARCHIVE_NAME =
  /^(?:oci-layout|index\.json|manifest\.json|repositories|blobs|blobs\/[a-z0-9]+(?:\/[0-9a-f]+)?|[0-9a-f]{64}(?:\.tar|\.json)?|[0-9a-f]{64}\/(?:layer\.tar|json|VERSION))$/;
const MAX_META_BYTES = 1024 * 1024;
/** Documents read whole are small; anything bigger is not one (a blob given as a manifest). */
const MAX_DOCUMENT_BYTES = 16 * 1024 * 1024;

/** A directory on disk. Names never leave it: no '..', no absolute names. */
export class DirectoryStore implements FileStore {
  constructor(readonly where: string) {}

  has(name: string): boolean {
    try {
      return fs.statSync(this.resolve(name)).isFile();
    } catch {
      return false;
    }
  }

  size(name: string): number {
    return this.stat(name).size;
  }

  read(name: string): Buffer {
    const size = this.size(name);
    if (size > MAX_DOCUMENT_BYTES) throw fail('EINVAL', 'load', this.where, `${name} is too big to be an image document (${size} bytes)`);
    return fs.readFileSync(this.resolve(name));
  }

  stream(name: string): Readable {
    this.stat(name);
    return fs.createReadStream(this.resolve(name), { highWaterMark: 1024 * 1024 });
  }

  names(): string[] {
    const out: string[] = [];
    const walk = (rel: string, depth: number) => {
      if (depth > 4) return; // a layout is shallow: index.json, oci-layout, blobs/ALG/HEX
      for (const e of fs.readdirSync(path.join(this.where, rel), { withFileTypes: true })) {
        const r = rel === '' ? e.name : `${rel}/${e.name}`;
        if (e.isDirectory()) walk(r, depth + 1);
        else out.push(r);
      }
    };
    walk('', 0);
    return out;
  }

  private resolve(name: string): string {
    if (name.split('/').some((c) => c === '..' || c === '') || name.startsWith('/')) {
      throw fail('EINVAL', 'load', this.where, `'${name}' is not a name inside the layout`);
    }
    return path.join(this.where, name);
  }

  private stat(name: string): fs.Stats {
    try {
      const st = fs.statSync(this.resolve(name));
      if (!st.isFile()) throw fail('EINVAL', 'load', this.where, `${name} is not a file`);
      return st;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT') throw fail('ENOENT', 'load', this.where, `${name} is missing from the image`);
      if (e.code === undefined || e.syscall === undefined) throw err;
      throw fail(e.code as ErrnoCode, 'load', this.where, `cannot read ${name} (${e.message})`);
    }
  }
}

interface TarEntry {
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'other';
  /** Offset of the body in the archive file. */
  offset: number;
  size: number;
  linkpath: string;
}

/** A tar archive read in place (see the top of this file). */
export class TarStore implements FileStore {
  private readonly entries = new Map<string, TarEntry>();
  /** True when index() stopped early at a name `stopAt` asked to stop at. */
  private stopped = false;

  private constructor(readonly where: string) {}

  /** Index archive `file`; EINVAL "not a tar archive" when its first header is not one. */
  static open(file: string): TarStore {
    const store = new TarStore(file);
    store.index();
    return store;
  }

  /**
   * True when uncompressed tar `file` is an image archive (oci-archive, docker-archive)
   * rather than a layer or rootfs: every name is one such archives hold, and it has
   * oci-layout or manifest.json. Stops at the first other name, so a rootfs tar costs a
   * header or two. False for anything it can't read.
   */
  static isImageArchive(file: string): boolean {
    const store = new TarStore(file);
    try {
      store.index((name) => !IMAGE_ARCHIVE_NAME.test(name));
    } catch {
      return false;
    }
    if (store.stopped) return false;
    return store.entries.has('oci-layout') || store.entries.has('manifest.json');
  }

  has(name: string): boolean {
    return this.find(name) !== undefined;
  }

  size(name: string): number {
    return this.require(name).size;
  }

  read(name: string): Buffer {
    const e = this.require(name);
    if (e.size > MAX_DOCUMENT_BYTES) throw fail('EINVAL', 'load', this.where, `${name} is too big to be an image document (${e.size} bytes)`);
    const buf = Buffer.alloc(e.size);
    const fd = fs.openSync(this.where, 'r');
    try {
      let done = 0;
      while (done < e.size) {
        const n = fs.readSync(fd, buf, done, e.size - done, e.offset + done);
        if (n === 0) throw fail('EINVAL', 'load', this.where, `the archive is truncated inside ${name}`);
        done += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    return buf;
  }

  stream(name: string): Readable {
    const e = this.require(name);
    if (e.size === 0) return Readable.from([]);
    return fs.createReadStream(this.where, { start: e.offset, end: e.offset + e.size - 1, highWaterMark: 1024 * 1024 });
  }

  names(): string[] {
    return [...this.entries.entries()].filter(([, e]) => e.type !== 'dir' && e.type !== 'other').map(([n]) => n);
  }

  private require(name: string): TarEntry {
    const e = this.find(name);
    if (e === undefined) throw fail('ENOENT', 'load', this.where, `${name} is missing from the archive`);
    return e;
  }

  /** The regular-file entry `name` stands for, following links inside the archive. */
  private find(name: string): TarEntry | undefined {
    let n = normalize(name);
    for (let hops = 0; hops < 16 && n !== undefined; hops++) {
      const e = this.entries.get(n);
      if (e === undefined) return undefined;
      if (e.type === 'file') return e;
      if (e.type === 'hardlink') n = normalize(e.linkpath);
      else if (e.type === 'symlink') n = e.linkpath.startsWith('/') ? undefined : normalize(path.posix.join(path.posix.dirname(n), e.linkpath));
      else return undefined;
    }
    return undefined;
  }

  private index(stopAt?: (name: string) => boolean): void {
    let fd: number;
    try {
      fd = fs.openSync(this.where, 'r');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw fail((e.code as ErrnoCode | undefined) ?? 'EIO', 'load', this.where, `cannot read the archive (${e.message})`);
    }
    try {
      const fileSize = fs.fstatSync(fd).size;
      const block = Buffer.alloc(BLOCK);
      let at = 0;
      let local: Map<string, Buffer> | undefined;
      let longName: string | undefined;
      let longLink: string | undefined;
      let sawEnd = false;
      let first = true;
      while (at + BLOCK <= fileSize) {
        readFully(fd, block, at);
        if (block.every((b) => b === 0)) {
          sawEnd = true;
          break;
        }
        let h: Header;
        try {
          h = new Header(block);
        } catch {
          throw this.notTar(first, at);
        }
        if (!h.cksumValid) throw this.notTar(first, at);
        first = false;
        const headerSize = h.size ?? 0;
        const type = h.type ?? '';
        const bodyAt = at + BLOCK;
        if (type === 'ExtendedHeader' || type === 'OldExtendedHeader' || type === 'NextFileHasLongPath' || type === 'OldGnuLongPath' || type === 'NextFileHasLongLinkpath') {
          if (headerSize > MAX_META_BYTES || bodyAt + headerSize > fileSize) throw fail('EINVAL', 'load', this.where, 'corrupt archive: a meta header is too large or cut off');
          const body = Buffer.alloc(headerSize);
          readFully(fd, body, bodyAt);
          if (type === 'ExtendedHeader' || type === 'OldExtendedHeader') local = new Map([...(local ?? []), ...parseRecords(body)]);
          else if (type === 'NextFileHasLongLinkpath') longLink = cString(body);
          else longName = cString(body);
          at = bodyAt + pad(headerSize);
          continue;
        }
        if (type === 'GlobalExtendedHeader') {
          at = bodyAt + pad(headerSize);
          continue;
        }
        const paxSize = local?.get('size');
        const size = paxSize !== undefined ? Number(paxSize.toString('latin1')) : headerSize;
        if (!Number.isSafeInteger(size) || size < 0) throw fail('EINVAL', 'load', this.where, 'corrupt archive: a size does not parse');
        const rawName = local?.get('path')?.toString('utf8') ?? longName ?? h.path ?? '';
        const linkpath = local?.get('linkpath')?.toString('utf8') ?? longLink ?? h.linkpath ?? '';
        const name = normalize(rawName);
        const kind: TarEntry['type'] =
          type === 'File' || type === 'OldFile' || type === 'ContiguousFile'
            ? 'file'
            : type === 'Directory'
              ? 'dir'
              : type === 'SymbolicLink'
                ? 'symlink'
                : type === 'Link'
                  ? 'hardlink'
                  : 'other';
        if (name !== undefined && stopAt?.(name) === true) {
          this.stopped = true;
          return;
        }
        if (name !== undefined) this.entries.set(name, { type: kind, offset: bodyAt, size: kind === 'file' ? size : 0, linkpath });
        if (kind === 'file' && bodyAt + size > fileSize) throw fail('EINVAL', 'load', this.where, `the archive is truncated inside ${rawName}`);
        local = undefined;
        longName = undefined;
        longLink = undefined;
        at = bodyAt + pad(kind === 'file' || kind === 'other' ? size : 0);
      }
      if (first) throw this.notTar(true, 0);
      if (!sawEnd && at < fileSize) throw fail('EINVAL', 'load', this.where, 'the archive is truncated (a header is cut off)');
    } finally {
      fs.closeSync(fd);
    }
  }

  private notTar(first: boolean, at: number) {
    return first
      ? fail('EINVAL', 'load', this.where, 'not an image: not a tar archive')
      : fail('EINVAL', 'load', this.where, `corrupt archive: the header at offset ${at} fails its checksum`);
  }
}

function readFully(fd: number, buf: Buffer, at: number): void {
  let done = 0;
  while (done < buf.length) {
    const n = fs.readSync(fd, buf, done, buf.length - done, at + done);
    if (n === 0) throw fail('EINVAL', 'load', undefined, 'the archive is truncated');
    done += n;
  }
}

/** `./a/b/` → `a/b`; undefined for names that leave the archive or name its root. */
function normalize(name: string): string | undefined {
  const parts: string[] = [];
  for (const c of name.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (parts.length === 0) return undefined;
      parts.pop();
      continue;
    }
    parts.push(c);
  }
  return parts.length === 0 ? undefined : parts.join('/');
}

function cString(b: Buffer): string {
  const nul = b.indexOf(0);
  return (nul < 0 ? b : b.subarray(0, nul)).toString('utf8');
}

function pad(n: number): number {
  return Math.ceil(n / BLOCK) * BLOCK;
}

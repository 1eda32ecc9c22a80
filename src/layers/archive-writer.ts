/**
 * Writing an image archive (oci-archive, docker-archive): a plain ustar stream of a few
 * directories and regular files with short ASCII names (`blobs/sha256/HEX`,
 * `manifest.json`), owned by root, mtime 0, as skopeo writes them — so the same image
 * always gives the same archive. Layer tars themselves are written by export.ts.
 */
import { once } from 'node:events';
import * as fs from 'node:fs';
import { Header } from 'tar';

const BLOCK = 512;

/** Sequential tar writer onto a file. */
export class ArchiveWriter {
  private readonly out: fs.WriteStream;
  private readonly opened: Promise<void>;

  constructor(file: string) {
    this.out = fs.createWriteStream(file, { mode: 0o644, flags: 'wx' });
    this.opened = new Promise((resolve, reject) => {
      this.out.once('open', () => resolve());
      this.out.once('error', reject);
    });
  }

  /** A directory entry (`name` without the trailing slash). */
  async dir(name: string): Promise<void> {
    await this.opened;
    await this.put(this.header(`${name}/`, 'Directory', 0, 0o755));
  }

  /** A regular file holding `data`. */
  async buffer(name: string, data: Buffer): Promise<void> {
    await this.opened;
    await this.put(this.header(name, 'File', data.length, 0o644));
    await this.put(data);
    await this.pad(data.length);
  }

  /** A regular file holding the content of host file `src` (`sizeBytes` long). */
  async file(name: string, src: string, sizeBytes: number): Promise<void> {
    await this.opened;
    await this.put(this.header(name, 'File', sizeBytes, 0o644));
    let done = 0;
    for await (const chunk of fs.createReadStream(src, { highWaterMark: 1024 * 1024 })) {
      await this.put(chunk as Buffer);
      done += (chunk as Buffer).length;
    }
    if (done !== sizeBytes) throw new Error(`${src} changed while it was archived (${done} of ${sizeBytes} bytes)`);
    await this.pad(sizeBytes);
  }

  /** The end-of-archive blocks; then the file is closed (and synced). */
  async end(): Promise<void> {
    await this.opened;
    await this.put(Buffer.alloc(2 * BLOCK));
    this.out.end();
    await once(this.out, 'finish');
    const fd = fs.openSync(this.out.path as string, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Stop writing (after a failure); the caller removes the file. */
  destroy(): void {
    this.out.destroy();
  }

  private header(name: string, type: 'File' | 'Directory', size: number, mode: number): Buffer {
    if (Buffer.byteLength(name) > 99) throw new Error(`archive name too long: ${name}`);
    const buf = Buffer.alloc(BLOCK);
    new Header({ path: name, type, size, mode, uid: 0, gid: 0, mtime: new Date(0), uname: '', gname: '' }).encode(buf, 0);
    return buf;
  }

  private async pad(n: number): Promise<void> {
    const rest = (BLOCK - (n % BLOCK)) % BLOCK;
    if (rest > 0) await this.put(Buffer.alloc(rest));
  }

  private async put(buf: Buffer): Promise<void> {
    if (!this.out.write(buf)) await once(this.out, 'drain');
  }
}

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** A fresh temp directory; removed by the returned cleanup (call it in afterEach/finally). */
export function tmpDir(prefix = 'thinfs-test-'): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** Bytes the file really occupies on disk (st_blocks * 512). */
export function allocatedBytes(file: string): number {
  return fs.statSync(file).blocks * 512;
}

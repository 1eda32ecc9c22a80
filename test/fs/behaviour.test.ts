/**
 * The POSIX behaviour suite on thinfs (through its path-based API, and through its
 * inode-based one as the kernel drives it), and on a real directory (node:fs) to prove it.
 */
import * as nodefs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { Filesystem } from '../../src/fs/index.js';
import { Pool, MiB } from '../../src/pool/index.js';
import { tmpDir } from '../helpers/tmp.js';
import { nodeAdapter, thinfsAdapter, thinfsInoAdapter } from './adapters.js';
import { behaviourSuite } from './behaviour.js';

let oldMask = 0;
beforeAll(() => {
  oldMask = process.umask(0);
});
afterAll(() => {
  process.umask(oldMask);
});

function thinfsSubject(api: 'path' | 'inode') {
  return () => {
    const t = tmpDir('thinfs-behaviour-');
    const pool = Pool.create(path.join(t.dir, 'pool'), { dataSizeBytes: 256 * MiB, minFreePercent: 0 });
    const fs = Filesystem.open(pool, pool.createThin('base'));
    return {
      fs: api === 'path' ? thinfsAdapter(() => fs) : thinfsInoAdapter(() => fs),
      cleanup: () => {
        fs.close(); // forgets the inode adapter's lookups: what they kept of unlinked files is freed
        const report = pool.check();
        pool.close();
        t.cleanup();
        if (!report.clean) throw new Error(`pool check: ${JSON.stringify(report.issues)}`);
      },
    };
  };
}

behaviourSuite('thinfs', thinfsSubject('path'));
behaviourSuite('thinfs by inode', thinfsSubject('inode'));

behaviourSuite('node:fs', () => {
  const t = tmpDir('thinfs-behaviour-node-');
  nodefs.chmodSync(t.dir, 0o755);
  return { fs: nodeAdapter(t.dir), cleanup: t.cleanup };
});

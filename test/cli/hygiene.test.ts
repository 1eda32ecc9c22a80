/**
 * Every failure of a command is exactly one line on stderr, `thinfs: ...`, and its exit
 * status (2: the command line is wrong; 1: anything else) — no stack trace, no JSON log
 * record besides it. The cases are the ones issue 7 found: a bad $THINFS_LOG_LEVEL, an
 * empty --root, and error records (the pool's "needs check") printed next to the error.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tmpDir } from '../helpers/tmp.js';
import { CLI, thinfs, type Run } from './helpers.js';

let t: { dir: string; cleanup: () => void };
let root: string;
beforeEach(() => {
  t = tmpDir('thinfs-cli-');
  root = path.join(t.dir, 'root');
});
afterEach(() => t.cleanup());

/** The run failed with `code` and said so in one line matching `message`, nothing on stdout. */
function oneLine(r: Run, code: number, message: RegExp): void {
  expect({ code: r.code, errLines: r.errLines, stdout: r.stdout }).toEqual({ code, errLines: [expect.stringMatching(message)], stdout: '' });
  expect(r.errLines[0]).toMatch(/^thinfs: /);
}

/** A pool holding an image with data, whose data file was then cut to one block: the pool needs a check. */
async function truncatedPool(): Promise<void> {
  expect((await thinfs(['--root', root, 'init', '--data-size', '1G'])).code).toBe(0);
  const src = path.join(t.dir, 'src');
  fs.mkdirSync(path.join(src, 'd'), { recursive: true });
  fs.writeFileSync(path.join(src, 'd', 'f'), Buffer.alloc(300_000, 7));
  expect((await thinfs(['--root', root, 'import', 'img', src])).code).toBe(0);
  fs.truncateSync(path.join(root, 'pool', 'data'), 64 * 1024);
}

describe('the log level', () => {
  it.each(['bogus', 'WARN', '40'])('THINFS_LOG_LEVEL=%s: one line naming the choices, exit 2, nothing created', async (level) => {
    const r = await thinfs(['--root', root, 'init'], { THINFS_LOG_LEVEL: level });
    oneLine(r, 2, new RegExp(`^thinfs: THINFS_LOG_LEVEL '${level}' is not a log level \\(one of fatal, error, warn, info, debug, trace, silent\\)$`));
    expect(fs.existsSync(root)).toBe(false);
  });

  it('--log-level bogus: one line, exit 2', async () => {
    oneLine(await thinfs(['--root', root, '--log-level', 'bogus', 'info']), 2, /^thinfs: option '--log-level <level>' argument 'bogus' is invalid\. Allowed choices are fatal, error/);
  });

  it('--log-level wins over a bad THINFS_LOG_LEVEL', async () => {
    oneLine(await thinfs(['--root', root, '--log-level', 'error', 'info'], { THINFS_LOG_LEVEL: 'bogus' }), 1, /^thinfs: ENOENT: no thinfs pool here/);
  });

  it('an empty THINFS_LOG_LEVEL counts as unset', async () => {
    oneLine(await thinfs(['--root', root, 'info'], { THINFS_LOG_LEVEL: '' }), 1, /^thinfs: ENOENT: no thinfs pool here/);
  });

  it('--help still works with a bad THINFS_LOG_LEVEL (no command runs)', async () => {
    const r = await thinfs(['--help'], { THINFS_LOG_LEVEL: 'bogus' });
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
  });
});

describe('the pool root', () => {
  it.each([[''], ['  ']])('--root %j: one line, exit 2, the default root (THINFS_ROOT here) untouched', async (value) => {
    const envRoot = path.join(t.dir, 'env-root');
    const r = await thinfs(['--root', value, 'init'], { THINFS_ROOT: envRoot });
    oneLine(r, 2, /^thinfs: option '--root <dir>' argument '\s*' is invalid\. the pool root must not be empty/);
    expect(fs.existsSync(envRoot)).toBe(false);
  });
});

describe('failures print only their one line (no log record beside it)', () => {
  it('info on a directory that is no pool', async () => {
    fs.mkdirSync(root);
    oneLine(await thinfs(['--root', root, 'info']), 1, /^thinfs: ENOENT: no thinfs pool here; run `thinfs init` first/);
  });

  it('init with a data size below one block; nothing created', async () => {
    oneLine(await thinfs(['--root', root, 'init', '--data-size', '1K']), 1, /^thinfs: EINVAL: data size must be at least one block/);
    expect(fs.existsSync(root)).toBe(false);
  });

  it('import of a source that does not exist', async () => {
    expect((await thinfs(['--root', root, 'init', '--data-size', '1G'])).code).toBe(0);
    oneLine(await thinfs(['--root', root, 'import', 'img', path.join(t.dir, 'missing')]), 1, /^thinfs: ENOENT: cannot read the source/);
  });

  it.each([['info'], ['check'], ['create', 'c', 'img'], ['ls']])('%s on a metadata file full of garbage', async (...args) => {
    expect((await thinfs(['--root', root, 'init', '--data-size', '1G'])).code).toBe(0);
    fs.writeFileSync(path.join(root, 'pool', 'metadata.db'), Buffer.alloc(100_000, 0x5a));
    oneLine(await thinfs(['--root', root, ...args]), 1, /^thinfs: EINVAL: metadata is not a thinfs pool or is corrupt/);
  });

  it('create on a pool whose data file was truncated: the EROFS line only, not the pool\'s "needs check" record', async () => {
    await truncatedPool();
    oneLine(await thinfs(['--root', root, 'create', 'c', 'img']), 1, /^thinfs: EROFS: pool needs a check; run `thinfs check --repair`/);
  });

  it('check on that pool: its report on stdout, exit 1, nothing on stderr', async () => {
    await truncatedPool();
    const r = await thinfs(['--root', root, 'check']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^fatal: the data file /m);
    expect(r.stderr).toBe('');
  });

  it('the record shows as it comes when a level is asked for (--log-level error)', async () => {
    await truncatedPool();
    const r = await thinfs(['--root', root, '--log-level', 'error', 'create', 'c', 'img']);
    expect(r.code).toBe(1);
    expect(r.errLines.at(-1)).toMatch(/^thinfs: EROFS: /);
    expect(r.errLines.slice(0, -1).map((l) => (JSON.parse(l) as { msg: string }).msg)).toContain('pool needs check; run `thinfs check --repair`');
  });

  it('output that cannot be written (stdout on a full disk): one line, exit 1', async () => {
    expect((await thinfs(['--root', root, 'init', '--data-size', '1G'])).code).toBe(0);
    const full = fs.openSync('/dev/full', 'w');
    try {
      const r = spawnSync(process.execPath, [CLI, '--root', root, 'info'], { stdio: ['ignore', full, 'pipe'], encoding: 'utf8' });
      expect(r.status).toBe(1);
      expect(r.stderr.split('\n').filter((l) => l !== '')).toEqual([expect.stringMatching(/^thinfs: cannot write the output: ENOSPC: no space left on device/)]);
    } finally {
      fs.closeSync(full);
    }
  });
});

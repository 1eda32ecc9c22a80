/**
 * `--json` on every command, errors included: a failure with --json prints exactly one
 * line on stderr, a JSON object {"error": {code, errno, message}} whose message is the
 * text line's, with the same exit status as without --json (2 for a wrong command line,
 * 1 for a failed operation), and nothing on stdout. Successes print their result as JSON
 * on stdout (create, commit, rm, import, export, diff added --json here).
 */
import * as fs from 'node:fs';
import { constants } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tmpDir } from '../helpers/tmp.js';
import { json, thinfs, type Run } from './helpers.js';

let t: { dir: string; cleanup: () => void };
let root: string;
let empty: string;
beforeAll(async () => {
  t = tmpDir('thinfs-json-');
  root = path.join(t.dir, 'root');
  empty = path.join(t.dir, 'nopool');
  const src = path.join(t.dir, 'src');
  fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(src, 'etc', 'motd'), 'hello\n');
  expect((await thinfs(['--root', root, 'init', '--data-size', '256M'])).code).toBe(0);
  expect((await thinfs(['--root', root, 'import', 'img', src])).code).toBe(0);
  expect((await thinfs(['--root', root, 'create', 'ctr', 'img'])).code).toBe(0);
});
afterAll(() => t?.cleanup());

interface JsonError {
  error: { code: string; errno: number; message: string };
}

/** The one JSON error line of a failed run. */
function jsonError(r: Run): JsonError {
  expect(r.stdout).toBe('');
  expect(r.errLines).toHaveLength(1);
  return JSON.parse(r.errLines[0]!) as JsonError;
}

describe('errors with --json: one JSON object on stderr, the same exit status and message as the text line', () => {
  it.each([
    // [description, args, pool root, expected code, exit status]
    ['info without a pool', ['info'], 'none', 'ENOENT', 1],
    ['check without a pool', ['check'], 'none', 'ENOENT', 1],
    ['ls without a pool', ['ls'], 'none', 'ENOENT', 1],
    ['inspect of nothing', ['inspect', 'nope'], 'pool', 'ENOENT', 1],
    ['diff of nothing', ['diff', 'nope'], 'pool', 'ENOENT', 1],
    ['rm of nothing', ['rm', 'nope'], 'pool', 'ENOENT', 1],
    ['create on a container', ['create', 'c2', 'ctr'], 'pool', 'EINVAL', 1],
    ['create of a name in use', ['create', 'ctr', 'img'], 'pool', 'EEXIST', 1],
    ['commit of an image', ['commit', 'img', 'x'], 'pool', 'EINVAL', 1],
    ['import of a missing source', ['import', 'x', '/nonexistent/thinfs-src'], 'pool', 'ENOENT', 1],
    ['export of nothing', ['export', 'nope', '/tmp/thinfs-never.tar'], 'pool', 'ENOENT', 1],
    ['load of a missing source', ['load', '/nonexistent/thinfs-image'], 'pool', 'ENOENT', 1],
    ['mount of nothing', ['mount', 'nope'], 'pool', 'ENOENT', 1],
    ['umount of what is not mounted', ['umount', 'ctr'], 'pool', 'EINVAL', 1],
    ['stats of what is not mounted', ['stats', 'ctr'], 'pool', 'EINVAL', 1],
    ['stats of nothing', ['stats', 'nope'], 'pool', 'ENOENT', 1],
    ['resize that shrinks', ['resize', '--data-size', '1M'], 'pool', 'EINVAL', 1],
    ['trim without a pool', ['trim'], 'none', 'ENOENT', 1],
    ['an unknown option', ['info', '--bogus'], 'pool', 'EINVAL', 2],
    ['a missing argument', ['diff'], 'pool', 'EINVAL', 2],
    ['a size that does not parse', ['resize', '--data-size', '12Q'], 'pool', 'EINVAL', 2],
    ['umount with a target and --all', ['umount', 'ctr', '--all'], 'pool', 'EINVAL', 2],
  ] as const)('%s', async (_what, args, where, code, status) => {
    const r0 = where === 'pool' ? root : empty;
    const text = await thinfs(['--root', r0, ...args]);
    const r = await thinfs(['--root', r0, ...args, '--json']);
    expect(text.code).toBe(status);
    expect(r.code).toBe(status);
    expect(text.errLines).toHaveLength(1);
    const e = jsonError(r);
    expect(e).toEqual({ error: { code, errno: constants.errno[code], message: text.errLines[0]!.replace(/^thinfs: /, '') } });
    expect(fs.existsSync(empty)).toBe(false);
  });

  it('--json before the command name of a failing line counts too, and -- ends the words that count', async () => {
    const r = await thinfs(['--root', empty, 'info', '--json']);
    expect(jsonError(r).error.code).toBe('ENOENT');
    // `--json` after `--` is an argument, not the option: the error stays a text line.
    const after = await thinfs(['--root', root, 'diff', '--', '--json']);
    expect(after.code).toBe(1);
    expect(after.errLines).toEqual([`thinfs: ENOENT: no image or container named '--json' (see \`thinfs ls\`), diff '--json'`]);
  });
});

describe('results with --json on the commands that gained it', () => {
  it('create, commit, diff, export, import and rm print their results as JSON on stdout', async () => {
    const cli = (...args: string[]) => thinfs(['--root', root, ...args]);
    const c = await cli('create', 'c3', 'img', '--json');
    expect(c).toMatchObject({ code: 0, stderr: '' });
    expect(json(c)).toMatchObject({ name: 'c3', kind: 'container', parent: 'img', readOnly: false });
    const m = await cli('commit', 'c3', 'snap', '--json');
    expect(json(m)).toMatchObject({ name: 'snap', kind: 'image', readOnly: true });
    const d = await cli('diff', 'snap', '--json');
    expect(json(d)).toEqual({ name: 'snap', kind: 'image', parent: 'img', changes: [] });
    const tar = path.join(t.dir, 'img.tar');
    const x = await cli('export', 'img', tar, '--json');
    expect(json(x)).toMatchObject({ name: 'img', file: tar, diff: false, stats: { entries: 3 } });
    // The tar on stdout: the JSON summary goes to stderr.
    const piped = await thinfs(['--root', root, 'export', 'img', '--json']);
    expect(piped.code).toBe(0);
    expect(JSON.parse(piped.stderr)).toMatchObject({ name: 'img', file: '-', stats: { entries: 3 } });
    expect(piped.stdout.length).toBeGreaterThan(1024);
    const i = await cli('import', 'again', tar, '--json');
    expect(json(i)).toMatchObject({ name: 'again', parent: null, sourceKind: 'tar', stats: { files: 1 } });
    const r = await cli('rm', 'again', '--json');
    expect(json(r)).toEqual({ name: 'again', kind: 'image', result: 'deleted', waitingFor: [], containers: [], layers: [] });
  });
});

/**
 * Commands that change the pool while no daemon runs take the pool's lock one at a time:
 * a second command waits (bounded) instead of failing with EBUSY. 20 parallel `create`s
 * used to give 4 successes and 16 EBUSY.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { json, thinfs } from './helpers.js';
import { tmpDir } from '../helpers/tmp.js';

describe('parallel commands without a daemon', () => {
  const { dir, cleanup } = tmpDir('thinfs-parallel-');
  afterAll(cleanup);

  it('20 parallel creates all succeed, each container exists once, the pool is clean', async () => {
    const root = path.join(dir, 'root');
    const src = path.join(dir, 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'hello'), 'hello\n');
    expect((await thinfs(['--root', root, 'init', '--data-size', '1G'])).code).toBe(0);
    expect((await thinfs(['--root', root, 'import', 'base', src])).code).toBe(0);
    const runs = await Promise.all(Array.from({ length: 20 }, (_, i) => thinfs(['--root', root, 'create', `c${i}`, 'base'])));
    for (const r of runs) expect({ code: r.code, err: r.errLines }).toEqual({ code: 0, err: [] });
    const ls = json<{ name: string }[] | { devices: { name: string }[] }>(await thinfs(['--root', root, 'ls', '--json']));
    const names = (Array.isArray(ls) ? ls : ls.devices).map((d) => d.name).sort();
    expect(names).toEqual(['base', ...Array.from({ length: 20 }, (_, i) => `c${i}`)].sort());
    expect((await thinfs(['--root', root, 'check'])).code).toBe(0);
  }, 120_000);
});

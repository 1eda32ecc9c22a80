/**
 * Progress of `export` for a caller that shows it (ctx.progress): the exporter
 * (layers/export.ts) reports none, so the tar it writes is watched instead — its size
 * every PROGRESS_INTERVAL_MS, against the bytes the device maps (its own blocks for
 * --diff) as the expected total. That total is an estimate: tar headers add to it, holes
 * and small files kept inline take less than a block; the total grows to what was written
 * when the estimate falls short. The reports have the shape of an import's; the last one
 * comes when the tar is complete, with its size as the total (100%).
 *
 * The file is watched with asynchronous stats only: in the daemon it may lie on a view the
 * daemon serves itself.
 */
import * as fsp from 'node:fs/promises';
import { resolveImageName, type ImportProgress } from '../../layers/index.js';
import { argsObject, optBool, optString, withPool, type OpFn } from './context.js';

const PROGRESS_INTERVAL_MS = 200;

/** `exportOp` with progress reports of the tar written so far, when the caller wants them. */
export function withExportProgress(exportOp: OpFn): OpFn {
  return async (ctx, raw) => {
    const a = argsObject('export', raw);
    const name = optString('export', a, 'name');
    const file = optString('export', a, 'file');
    const report = ctx.progress;
    // Bad arguments are the operation's to refuse.
    if (report === undefined || name === undefined || file === undefined) return exportOp(ctx, raw);
    const diff = optBool('export', a, 'diff');
    const expected = await withPool(ctx, 'read', (pool) => {
      const d = resolveImageName(pool, name);
      return d === undefined ? 0 : diff ? d.exclusiveBytes : d.mappedBytes;
    }).catch(() => 0);
    let done = 0;
    const tell = (total = Math.max(expected, done, 1)): void => report({ done, total, unit: 'bytes', entries: 0 } satisfies ImportProgress);
    const timer = setInterval(() => {
      fsp.stat(file).then(
        (st) => {
          done = st.size;
          tell();
        },
        () => {},
      );
    }, PROGRESS_INTERVAL_MS);
    let result: unknown;
    try {
      result = await exportOp(ctx, raw);
    } finally {
      clearInterval(timer);
    }
    // The last report: the tar is complete, its size is the total (also for an export shorter than one interval).
    done = await fsp.stat(file).then((st) => st.size, () => done);
    tell(done);
    return result;
  };
}

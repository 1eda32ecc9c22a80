/**
 * `thinfs import NAME SOURCE [--parent IMAGE]`: a new read-only image from a rootfs
 * directory or a tar layer (plain or gzip; `-` reads the tar from stdin). OCI whiteouts
 * apply. The operation may run in the pool's daemon, which reads SOURCE itself: so
 * SOURCE becomes an absolute path, and stdin is first spooled to a file under ROOT/tmp
 * (removed afterwards). A progress bar shows on stderr when it is a terminal (without
 * --json), wherever the import runs: the daemon sends its progress over the control socket.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { ImportResult } from '../../daemon/ops/index.js';
import { UsageError } from '../errors.js';
import { formatBytes, formatCount as count, formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';
import { progressBar } from '../progress.js';

/** Add `thinfs import` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('import')
      .description('import a rootfs directory or a tar layer as a new read-only image (OCI whiteouts applied)')
      .argument('<name>', 'name of the new image')
      .argument('<source>', 'a directory, a tar or tar.gz file, or - for a tar on stdin')
      .option('--parent <image>', 'the image this layer goes on (default: a new base image)')
      .addHelpText(
        'after',
        `
Ownership, modes (setuid/setgid/sticky), times, xattrs (PAX SCHILY.xattr.*), hard links,
symlinks, fifos and device nodes are kept. Entries that would land outside the image
(.. components, absolute names, hard links out of the tree) and truncated or corrupt
tars are refused, and nothing of a refused import remains.`,
      ),
  ).action(async (name: string, source: string, o: { parent?: string; json?: boolean }, cmd: Command) => {
    const { root } = globals(cmd);
    let spooled: string | undefined;
    const cleanup = () => {
      if (spooled !== undefined) fs.rmSync(spooled, { force: true });
    };
    const onSignal = () => {
      cleanup();
      process.exit(130);
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    const bar = o.json === true ? undefined : progressBar(`importing ${name}`);
    try {
      let src = path.resolve(source);
      if (source === '-') {
        if (process.stdin.isTTY === true) throw new UsageError('refusing to read a tar from a terminal: pipe one into `thinfs import NAME -`');
        // Without a pool there is nowhere to spool to: the operation reports the missing pool.
        if (fs.existsSync(path.join(root, 'pool'))) spooled = await spoolStdin(root);
        src = spooled ?? '/dev/stdin';
      }
      const r = await runOp<ImportResult>(root, 'import', { name, source: src, parent: o.parent }, { onProgress: bar?.update });
      bar?.stop();
      out(o.json === true ? formatJson(r) : formatImport(r, source === '-' ? 'stdin' : r.source));
    } finally {
      bar?.stop();
      cleanup();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  });
}

function formatImport(r: ImportResult, from: string): string {
  const s = r.stats;
  const parts = [
    count(s.entries, 'entry', 'entries'),
    `${count(s.files, 'file')} (${formatBytes(s.dataBytes)})`,
    count(s.directories, 'directory', 'directories'),
    count(s.symlinks, 'symlink'),
  ];
  if (s.hardlinks > 0) parts.push(count(s.hardlinks, 'hard link'));
  if (s.nodes > 0) parts.push(count(s.nodes, 'device node or fifo', 'device nodes and fifos'));
  if (s.whiteouts > 0 || s.opaques > 0) parts.push(`${count(s.whiteouts, 'whiteout')}, ${count(s.opaques, 'opaque directory', 'opaque directories')}`);
  if (s.skippedXattrs > 0) parts.push(`${count(s.skippedXattrs, 'xattr')} not stored (only user.*, trusted.* and security.* are)`);
  const on = r.parent === null ? '' : ` on ${r.parent}`;
  return `imported image ${r.name}${on} from ${from} (${r.sourceKind}): ${parts.join(', ')} in ${(s.elapsedMs / 1000).toFixed(2)} s\n`;
}

/** Copy stdin to a private file under ROOT/tmp; returns its path. */
async function spoolStdin(root: string): Promise<string> {
  const dir = path.join(root, 'tmp');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `import-${process.pid}-${randomBytes(4).toString('hex')}.tar`);
  try {
    await pipeline(process.stdin, fs.createWriteStream(file, { mode: 0o600, flags: 'wx' }));
  } catch (err) {
    fs.rmSync(file, { force: true });
    throw err;
  }
  return file;
}

/**
 * `thinfs export NAME [FILE] [--diff] [--json]`: an image or container as an OCI layer tar
 * — the whole view, or with --diff only what it changes over its parent (whiteouts
 * included), which `thinfs import NEW FILE --parent PARENT` takes back. The operation may
 * run in the pool's daemon, which writes the file itself: FILE becomes an absolute path,
 * and for stdout the tar is written to a file under ROOT/tmp first, copied out and
 * removed. A progress bar (bytes of tar written) shows on stderr when it is a terminal.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { ExportResult } from '../../daemon/ops/index.js';
import { UsageError } from '../errors.js';
import { formatBytes, formatCount as count, formatJson } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';
import { progressBar } from '../progress.js';

/** Add `thinfs export` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('export')
      .description('write an image or container as an OCI layer tar (whole, or --diff: its changes over its parent)')
      .argument('<name>', 'an image or container (or the reference of a loaded image)')
      .argument('[file]', 'the tar to write, or - for stdout', '-')
      .option('--diff', 'only what it changes over its parent, with OCI whiteouts (a layer for `thinfs import --parent`)')
      .addHelpText('after', '\nWith FILE the summary (--json: the result) goes to stdout; with the tar on stdout it goes to stderr.'),
  ).action(async (name: string, file: string, o: { diff?: boolean; json?: boolean }, cmd: Command) => {
    const { root } = globals(cmd);
    if (file === '-' && process.stdout.isTTY === true) throw new UsageError('refusing to write a tar to a terminal: give a FILE or redirect stdout');
    let spool: string | undefined;
    try {
      let target = path.resolve(file);
      if (file === '-') {
        const dir = path.join(root, 'tmp');
        // Without a pool there is nowhere to spool to: the operation reports the missing pool.
        if (fs.existsSync(path.join(root, 'pool'))) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
        spool = path.join(dir, `export-${process.pid}-${randomBytes(4).toString('hex')}.tar`);
        target = spool;
      }
      const bar = o.json === true ? undefined : progressBar(`exporting ${name}`, { entries: false });
      let r: ExportResult;
      try {
        r = await runOp<ExportResult>(root, 'export', { name, file: target, diff: o.diff === true }, { onProgress: bar?.update });
      } finally {
        bar?.stop();
      }
      if (spool !== undefined) await pipeline(fs.createReadStream(spool), process.stdout, { end: false });
      const s = r.stats;
      // The tar owns stdout when it goes there; the summary then goes to stderr.
      const summary = spool === undefined ? process.stdout : process.stderr;
      if (o.json === true) summary.write(formatJson(spool === undefined ? r : { ...r, file: '-' }));
      else {
        summary.write(
          `exported ${r.diff ? 'the changes of ' : ''}${r.name} to ${spool === undefined ? r.file : 'stdout'}: ` +
            `${count(s.entries, 'entry', 'entries')} (${formatBytes(s.dataBytes)} of file data)` +
            `${r.diff ? `, ${count(s.whiteouts, 'whiteout')}, ${count(s.opaques, 'opaque directory', 'opaque directories')}` : ''}\n`,
        );
      }
    } finally {
      if (spool !== undefined) fs.rmSync(spool, { force: true });
    }
  });
}

/**
 * `thinfs diff NAME [--json]`: what a container or image changes over its parent, one
 * `A /path`, `C /path` or `D /path` line each, as `docker diff` prints them (the
 * directories above a change count as changed). Computed from the device's own layer in
 * the metadata, not by walking trees (daemon/ops/diff-ops.ts). Names that are not UTF-8
 * print with \xNN for their other bytes; --json also gives their raw bytes (base64).
 */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { DiffResult } from '../../daemon/ops/index.js';
import { formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs diff` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('diff')
      .description('list what a container or image adds (A), changes (C) and deletes (D) over its parent, like docker diff')
      .argument('<name>', 'a container or image (or the reference of a loaded image)')
      .addHelpText(
        'after',
        `
The parent is the device the data sits on (\`thinfs inspect\` shows it): a container's
image, or for a committed container the image of its last commit. A loaded image's own
device holds nothing (its diff is empty); each of its layers is a layer device that
\`thinfs ls --all\` lists and \`thinfs diff\` takes. A mounted container can be diffed while
it runs. --json: {name, kind, parent, changes: [{kind, path, pathBase64?, opaque?}]}.`,
      ),
  ).action(async (name: string, o: { json?: boolean }, cmd: Command) => {
    const r = await runOp<DiffResult>(globals(cmd).root, 'diff', { name });
    out(o.json === true ? formatJson(r) : r.changes.map((c) => `${c.kind} ${c.path}\n`).join(''));
  });
}

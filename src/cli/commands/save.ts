/**
 * `thinfs save NAME DEST`: write an image back as an OCI image layout (oci:DIR[:TAG]), a
 * tar of one (oci-archive:FILE[:TAG]) or a docker archive (docker-archive:FILE[:REF]),
 * its config included; an image committed from a container saves with one more layer
 * per commit. The pool's daemon may write DEST itself, so its path becomes absolute here.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { SaveResult } from '../../layers/index.js';
import { formatImageSpec, parseImageSpec } from '../../layers/index.js';
import { UsageError } from '../errors.js';
import { formatBytes, formatCount as count, formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs save` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('save')
      .description('write an image, config included, as an OCI layout, an oci-archive or a docker-archive')
      .argument('<name>', 'an image (a device name or the reference it was loaded as)')
      .argument('<dest>', 'oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REF]')
      .addHelpText(
        'after',
        `
Each layer is written as thinfs exports it (whiteouts for what it deletes), so the
layer digests are new ones and the config's rootfs.diff_ids say so; everything else
of the config is kept. TAG defaults to the image's tag, REF to its name. A layout
directory may already hold other images: a manifest of the same tag is replaced.`,
      ),
  ).action(async (name: string, dest: string, o: { json?: boolean }, cmd: Command) => {
    const s = parseImageSpec(dest, 'save');
    if (s.transport === undefined) throw new UsageError(`say which format to write: oci:${dest}, oci-archive:${dest} or docker-archive:${dest}`);
    const r = await runOp<SaveResult>(globals(cmd).root, 'save', { name, dest: formatImageSpec({ ...s, path: path.resolve(s.path) }) });
    const bytes = r.layers.reduce((n, l) => n + l.sizeBytes, 0);
    out(
      o.json === true
        ? formatJson(r)
        : `saved image ${r.reference} to ${r.dest} (${r.format}, ${r.format === 'docker-archive' ? 'as' : 'tag'} ${r.tag}): ${count(r.layers.length, 'layer')} (${formatBytes(bytes)}), config ${r.configDigest.slice(0, 19)}\n`,
    );
  });
}

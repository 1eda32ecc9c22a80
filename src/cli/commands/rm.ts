/**
 * `thinfs rm NAME [--force]`: remove an image or a container. Deletion is deferred,
 * as devicemapper defers it, while the device is mounted or other devices sit on it.
 */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { RmResult } from '../../daemon/ops/index.js';
import { formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs rm` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('rm')
      .description('remove an image or a container (deferred while it is mounted or has devices on it)')
      .argument('<name>', 'an image or container (or the reference of a loaded image)')
      .option('--force', "also remove the image's containers (mounted ones when they are unmounted)")
      .addHelpText(
        'after',
        `
An image with containers on it is refused unless --force is given; --force removes
those containers too (a mounted one is deferred until it is unmounted). Images on it
and a mount only defer the removal: it completes when the last of them goes, and
\`thinfs info\` counts it meanwhile. The layer devices of a loaded image that no other
image needs any more are removed with it, and listed.`,
      ),
  ).action(async (name: string, o: { force?: boolean; json?: boolean }, cmd: Command) => {
    const r = await runOp<RmResult>(globals(cmd).root, 'rm', { name, force: o.force === true });
    out(o.json === true ? formatJson(r) : formatRm(r));
  });
}

function formatRm(r: RmResult): string {
  const lines = r.containers.map((c) => (c.result === 'deleted' ? `deleted container ${c.name}` : `deferred container ${c.name} (mounted: it goes when unmounted)`));
  lines.push(r.result === 'deleted' ? `deleted ${r.kind} ${r.name}` : `deferred ${r.kind} ${r.name} (waiting for ${r.waitingFor.join(', ')})`);
  // (An older daemon answers without layers.)
  for (const l of r.layers ?? []) lines.push(l.result === 'deleted' ? `deleted layer ${l.name}` : `deferred layer ${l.name} (a device on it waits for its mount)`);
  return `${lines.join('\n')}\n`;
}

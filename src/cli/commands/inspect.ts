/** `thinfs inspect NAME [--json]`: one image or container in detail, with its chain and children. */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { InspectResult } from '../../daemon/ops/index.js';
import { formatBytes, formatJson, formatSection, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs inspect` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('inspect')
      .description('show one image or container: its chain of parents down to the base, the devices on it, space used')
      .argument('<name>', 'an image or container'),
  ).action(async (name: string, o: { json?: boolean }, cmd: Command) => {
    const r = await runOp<InspectResult>(globals(cmd).root, 'inspect', { name });
    out(o.json ? formatJson(r) : formatInspect(r));
  });
}

function formatInspect(r: InspectResult): string {
  const list = (xs: { name: string; kind: string }[]) => (xs.length === 0 ? '-' : xs.map((x) => `${x.name} (${x.kind})`).join(', '));
  return formatSection(`${r.kind === 'container' ? 'Container' : 'Image'}: ${r.name}`, [
    ['Id', r.id],
    ['Kind', r.kind],
    ['Mode', r.readOnly ? 'read-only' : 'read-write'],
    ['State', r.state],
    ['Parent', r.parent ?? '-'],
    ['Created from', r.origin ?? '-'],
    ['Chain', list(r.chain)],
    ['Children', list(r.children)],
    ['Layers', r.depth],
    ['Used', formatBytes(r.mappedBytes)],
    ['Exclusive', formatBytes(r.exclusiveBytes)],
    ['Size limit', formatBytes(r.sizeLimitBytes)],
    ['Created', r.created],
  ]);
}

/**
 * `thinfs inspect NAME [--json]`: one image or container in detail, with its chain and
 * children and where it is mounted (the daemon's mount table, as in `ls`); for a loaded
 * image (or a container or commit of one) its config — Entrypoint, Cmd, Env, WorkingDir,
 * User, Labels... — and its layers.
 */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { InspectResult, StatusResult } from '../../daemon/ops/index.js';
import type { ImageDetail } from '../../daemon/ops/image-ops.js';
import { formatBytes, formatJson, formatSection, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';
import { mountCell, withMounts, type DeviceMount } from './ls.js';

/** Add `thinfs inspect` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('inspect')
      .description('show one image or container: its chain down to the base, the devices on it, space used, and an image\'s config and layers')
      .argument('<name>', 'an image or container (or the reference a loaded image has)'),
  ).action(async (name: string, o: { json?: boolean }, cmd: Command) => {
    const { root } = globals(cmd);
    const [r] = withMounts([await runOp<InspectResult>(root, 'inspect', { name })], await runOp<StatusResult>(root, 'status'));
    out(o.json ? formatJson(r) : formatInspect(r!));
  });
}

function formatInspect(r: InspectResult & { mount: DeviceMount | null }): string {
  const list = (xs: { name: string; kind: string }[]) => (xs.length === 0 ? '-' : xs.map((x) => `${x.name} (${x.kind})`).join(', '));
  const device = formatSection(`${r.kind === 'container' ? 'Container' : 'Image'}: ${r.name}`, [
    ['Id', r.id],
    ['Kind', r.kind],
    ['Mode', r.readOnly ? 'read-only' : 'read-write'],
    ['State', r.state],
    ['Mounted', r.mount === null ? '-' : `${mountCell(r.mount)} (${r.mount.readOnly ? 'ro' : 'rw'}, since ${r.mount.mountedAt})`],
    ['Parent', r.parent ?? '-'],
    ['Created from', r.origin ?? '-'],
    ['Chain', list(r.chain)],
    ['Children', list(r.children)],
    ['Layers', r.depth],
    ['Used', withInline(r.mappedBytes, r.inlineBytes)],
    ['Exclusive', withInline(r.exclusiveBytes, r.inlineExclusiveBytes)],
    ['Size limit', formatBytes(r.sizeLimitBytes)],
    ['Created', r.created],
    ...(r.layerIds.length > 0 ? ([['Layer of', r.layerIds.map((l) => `${l.chainId} (diffID ${l.diffId}${l.how === 'save' ? ', as saved' : ''})`).join(', ')]] as [string, string][]) : []),
  ]);
  return r.imageInfo === null ? device : `${device}${formatImage(r.imageInfo)}`;
}

/** Bytes, and how many of them are held inline in the metadata when any are: `40 KB (2.5 KB inline)`. */
function withInline(total: number, inline: number | undefined): string {
  return inline === undefined || inline === 0 ? formatBytes(total) : `${formatBytes(total)} (${formatBytes(inline)} inline)`;
}

/** A value of the config as one line: strings as they are, lists and objects as JSON. */
function shown(v: unknown): string {
  if (v === undefined || v === null) return '-';
  if (typeof v === 'string') return v === '' ? '-' : v;
  if (Array.isArray(v) && v.length === 0) return '-';
  return JSON.stringify(v);
}

function formatImage(i: ImageDetail): string {
  const c = (i.config.config ?? {}) as Record<string, unknown>;
  const known = ['Entrypoint', 'Cmd', 'Env', 'WorkingDir', 'User', 'Labels', 'ExposedPorts', 'Volumes', 'StopSignal'];
  const entries: [string, string][] = [
    ['Reference', i.reference],
    ...(i.inherited ? ([['Device', i.device ?? '(removed)']] as [string, string][]) : []),
    ['Id', i.configDigest],
    ['Manifest', i.manifestDigest ?? '-'],
    ['Loaded from', i.source],
    ['Loaded', i.loaded],
    ['Created', shown(i.config.created)],
    ['Platform', `${shown(i.config.os)}/${shown(i.config.architecture)}`],
  ];
  for (const k of known) if (k === 'Env' || k === 'Cmd' || k === 'Entrypoint' || c[k] !== undefined) entries.push([k, k === 'Env' && Array.isArray(c.Env) && c.Env.length > 0 ? (c.Env as string[]).join(' ') : shown(c[k])]);
  for (const [k, v] of Object.entries(c)) if (!known.includes(k)) entries.push([k, shown(v)]);
  entries.push(['Layers', String(i.layers.length)]);
  const text = formatSection(`${i.inherited ? 'Created from image' : 'Image'}: ${i.reference}`, entries);
  const layers = i.layers.map((l, n) => `   ${n + 1}. ${l.diffId} ${l.device ?? '(not in the pool)'}`);
  return `${text}${layers.length === 0 ? '' : `${layers.join('\n')}\n`}`;
}

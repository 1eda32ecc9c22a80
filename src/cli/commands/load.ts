/**
 * `thinfs load [--name NAME[:TAG]] SOURCE`: a whole OCI or docker image — its layers as
 * read-only layer devices shared with every image on the same layers, its config kept —
 * as one image device per name. SOURCE is in skopeo's transport syntax (oci:DIR[:TAG],
 * oci-archive:FILE[:TAG], docker-archive:FILE[:REF]), a plain path recognised by its
 * content, or - for an archive on stdin (spooled to a file under ROOT/tmp first, since
 * the pool's daemon may be the one reading it). Paths become absolute here.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import { formatImageSpec, parseImageSpec, type LoadProgress, type LoadResult } from '../../layers/index.js';
import { UsageError } from '../errors.js';
import { formatBytes, formatCount as count, formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs load` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('load')
      .description('load an OCI or docker image (layers shared by diffID, config kept) from a layout, an archive or stdin')
      .argument('<source>', 'oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF], a path (format told by content), or - for stdin')
      .option('--name <name[:tag]>', 'the name to give the image (default: the names the source gives, else FILE:TAG)')
      .addHelpText(
        'after',
        `
Layers are identified by their chain ID (OCI: the diffIDs of a layer and all below it):
a layer already in the pool is shared, not loaded again. Blobs are checked against the
manifest's digests and every layer against the config's diff_ids; a mismatch is refused
and nothing of the load remains. gzip and zstd layers; a gzip'ed archive is fine too.
A layout holding several images needs a TAG; a docker archive loads all its images
unless REF (a tag, or @N) picks one. The image's config (Entrypoint, Cmd, Env,
WorkingDir, User, Labels) shows in \`thinfs inspect\`; \`thinfs run\` uses it.`,
      ),
  ).action(async (source: string, o: { name?: string; json?: boolean }, cmd: Command) => {
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
    const bar = o.json === true ? undefined : progressBar();
    try {
      let spec: string;
      if (source === '-') {
        if (process.stdin.isTTY === true) throw new UsageError('refusing to read an archive from a terminal: pipe one into `thinfs load -`');
        // Without a pool there is nowhere to spool to: the operation reports the missing pool.
        if (fs.existsSync(path.join(root, 'pool'))) spooled = await spoolStdin(root);
        spec = spooled ?? '/dev/stdin';
      } else {
        const s = parseImageSpec(source, 'load');
        spec = formatImageSpec({ ...s, path: path.resolve(s.path) });
      }
      const r = await runOp<LoadResult>(root, 'load', { source: spec, name: o.name }, { onProgress: bar?.update });
      bar?.stop();
      out(o.json === true ? formatJson(r) : formatLoad(r, source === '-' ? 'stdin' : r.source));
    } finally {
      bar?.stop();
      cleanup();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  });
}

function formatLoad(r: LoadResult, from: string): string {
  const lines = r.images.map((i) =>
    i.result === 'exists'
      ? `image ${i.reference} is already loaded (${short(i.configDigest)})`
      : `loaded image ${i.reference}${i.device !== i.reference ? ` (device ${i.device})` : ''}: ${short(i.configDigest)}, ${count(i.layers.length, 'layer')}`,
  );
  lines.push(
    `from ${from}: ${count(r.newLayers, 'new layer')} (${formatBytes(r.dataBytes)} of file data), ${count(r.sharedLayers, 'layer')} already in the pool, in ${(r.elapsedMs / 1000).toFixed(2)} s`,
  );
  return `${lines.join('\n')}\n`;
}

/** `sha256:` and the first 12 hex digits, as docker shows image IDs. */
function short(digest: string): string {
  return digest.slice(0, 'sha256:'.length + 12);
}

/** Copy stdin to a private file under ROOT/tmp; returns its path. */
async function spoolStdin(root: string): Promise<string> {
  const dir = path.join(root, 'tmp');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, `load-stdin-${process.pid}-${randomBytes(4).toString('hex')}.tar`);
  try {
    await pipeline(process.stdin, fs.createWriteStream(file, { mode: 0o600, flags: 'wx' }));
  } catch (err) {
    fs.rmSync(file, { force: true });
    throw err;
  }
  return file;
}

interface Bar {
  update: (p: unknown) => void;
  stop: () => void;
}

/** A progress bar on stderr, only when stderr is a terminal. */
function progressBar(): Bar | undefined {
  if (process.stderr.isTTY !== true) return undefined;
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: 'loading layer {layer}/{layers} [{bar}] {percentage}% | {done} of {total_h} | {entries} entries',
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  let stopped = false;
  return {
    update: (raw) => {
      const p = raw as LoadProgress;
      const payload = { done: formatBytes(p.done), total_h: formatBytes(p.total), entries: p.entries, layer: p.layer, layers: p.layers };
      if (!started) {
        started = true;
        bar.start(Math.max(p.total, 1), p.done, payload);
      } else bar.update(p.done, payload);
    },
    stop: () => {
      if (started && !stopped) {
        stopped = true;
        bar.stop();
      }
    },
  };
}

/**
 * `thinfs snapshotter [--address PATH]`: serve containerd's snapshots API (a proxy
 * snapshotter plugin) on a unix socket, in the foreground, logging to stderr (level info
 * unless --log-level says otherwise). Starts the pool's daemon (with --stay) when none
 * runs; SIGTERM/SIGINT stop it cleanly, leaving the daemon and its views to the running
 * containers.
 */
import * as path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { configureLog, isLogLevel } from '../../log.js';
import { defaultAddress, serveSnapshotter } from '../../snapshotter/index.js';
import { globals } from '../globals.js';

/** Add `thinfs snapshotter` to the program. */
export function register(program: Command): void {
  program
    .command('snapshotter')
    .description("serve containerd's snapshots API over gRPC (proxy plugin: type \"snapshot\"); stays in the foreground")
    .option('--address <path>', 'unix socket to serve on (default: ROOT/run/snapshotter.sock)', socketArg)
    .addHelpText(
      'after',
      `
containerd's config.toml:
  [proxy_plugins]
    [proxy_plugins.thinfs]
      type = "snapshot"
      address = "/var/lib/thinfs/run/snapshotter.sock"
then: ctr images pull --snapshotter thinfs IMAGE; ctr run --snapshotter thinfs IMAGE ID.`,
    )
    .action(async (o: { address?: string }, cmd: Command) => {
      const { root } = globals(cmd);
      const asked = cmd.optsWithGlobals<{ logLevel?: string }>().logLevel ?? (process.env.THINFS_LOG_LEVEL || undefined);
      const level = asked !== undefined && isLogLevel(asked) ? asked : 'info';
      // A service: its log goes to stderr as it comes (the journal, under systemd), not held for a one-line outcome.
      configureLog({ level, pretty: process.stderr.isTTY === true });
      const code = await serveSnapshotter({ root, address: o.address ?? defaultAddress(root), logLevel: asked });
      process.exit(code);
    });
}

function socketArg(text: string): string {
  if (text.trim() === '') throw new InvalidArgumentError('the socket address must not be empty');
  return path.resolve(text);
}

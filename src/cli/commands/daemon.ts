/**
 * `thinfs daemon [--foreground] [--stay]` (hidden): run the pool's daemon. `thinfs
 * mount` starts it detached; --foreground keeps it attached with logs on stderr.
 */
import type { Command } from 'commander';
import { runDaemon } from '../../daemon/server.js';
import { globals } from '../globals.js';

/** Add the hidden `thinfs daemon` to the program. */
export function register(program: Command): void {
  program
    .command('daemon', { hidden: true })
    .description('run the pool daemon (serves mounts and the control socket)')
    .option('--foreground', 'stay attached; log to stderr (pretty on a terminal)')
    .option('--stay', 'keep running after the last unmount')
    .action(async (o: { foreground?: boolean; stay?: boolean }, cmd: Command) => {
      const logLevel = cmd.optsWithGlobals<{ logLevel?: string }>().logLevel ?? (process.env.THINFS_LOG_LEVEL || undefined);
      const code = await runDaemon({ root: globals(cmd).root, foreground: o.foreground === true, stay: o.stay === true, logLevel });
      // fuse-native keeps libuv handles of unmounted filesystems referenced: leave explicitly.
      process.exit(code);
    });
}

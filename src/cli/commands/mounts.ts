/** `thinfs mounts [--json]`: the pool's mounted views and its daemon (pid, memory). */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { StatusResult } from '../../daemon/ops/index.js';
import { formatBytes, formatJson, formatTable, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs mounts` to the program. */
export function register(program: Command): void {
  withJson(program.command('mounts').description('list mounted views and the pool daemon')).action(
    async (o: { json?: boolean }, cmd: Command) => {
      const r = await runOp<StatusResult>(globals(cmd).root, 'status', {});
      out(o.json ? formatJson(r) : formatStatus(r));
    },
  );
}

function formatStatus(r: StatusResult): string {
  let text =
    r.daemon === null
      ? 'daemon: not running\n'
      : `daemon: pid ${r.daemon.pid}, ${formatBytes(r.daemon.rssBytes)} resident, up ${Math.round(r.daemon.uptimeMs / 1000)} s${r.daemon.stay ? ', --stay' : ''}\n`;
  if (r.daemon !== null && r.daemon.poolMode !== 'write') {
    text += r.daemon.poolMode === 'fail'
      ? `pool mode: fail (${r.daemon.failReason ?? 'a commit failed'}); the views only read; restart the daemon to go on from the last commit\n`
      : `pool mode: ${r.daemon.poolMode}\n`;
  }
  if (r.mounts.length === 0) return `${text}no mounts\n`;
  text += formatTable(
    ['NAME', 'MOUNTPOINT', 'MODE', 'STATE', 'ID MAPS'],
    r.mounts.map((m) => [
      m.name,
      m.mountpoint,
      m.readOnly ? 'ro' : 'rw',
      m.state === 'stale' ? 'stale (daemon gone; run thinfs umount)' : 'mounted',
      [...m.uidMap.map((x) => `u:${x}`), ...m.gidMap.map((x) => `g:${x}`)].join(' ') || '-',
    ]),
  );
  return text;
}

/**
 * `thinfs check [--repair]`: like thin_check / thin_repair, for the metadata file (SQLite),
 * the space map and the namespace of every image and container (daemon/ops/check-ops.ts).
 * Exit status 0 only when the pool is clean (after --repair: when the re-check is clean),
 * 1 otherwise.
 */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { CheckResult } from '../../daemon/ops/index.js';
import { EXIT_FAILURE } from '../errors.js';
import { formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs check` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('check')
      .description('check the metadata (SQLite), the space map and every namespace (exit 0 only when clean)')
      .option('--repair', 'back up the metadata, fix what can be fixed, then check again'),
  ).action(async (o: { repair?: boolean; json?: boolean }, cmd: Command) => {
    const r = await runOp<CheckResult>(globals(cmd).root, 'check', { repair: o.repair === true });
    out(o.json ? formatJson(r) : formatCheck(r));
    if (!r.clean) process.exitCode = EXIT_FAILURE;
  });
}

function formatCheck(r: CheckResult): string {
  let text = formatReport(r.report, true);
  if (r.recheck !== null && r.recheck !== undefined) {
    // (An older daemon answers without backup and actions.)
    if (r.backup !== null && r.backup !== undefined) text += `backup of the metadata: ${r.backup}\n`;
    for (const a of r.actions ?? []) text += `repaired: ${a}\n`;
    text += r.report.repaired ? 'repaired; checking again\n' : 'nothing repaired; checking again\n';
    text += formatReport(r.recheck, false);
  }
  if (r.needsCheck) text += 'the pool is marked needs_check and stays read-only; run `thinfs check --repair` to clear the flag\n';
  return text;
}

/** The findings and a verdict line; the first report also says what was examined. */
function formatReport(c: CheckResult['report'], overview: boolean): string {
  const lines: string[] = [];
  const infos = c.infos ?? 0;
  if (overview && c.sqlite !== undefined && c.namespace !== undefined) {
    const sqlite = c.sqlite.ok ? 'SQLite integrity ok' : 'SQLite integrity damaged';
    const ns = c.opened === false
      ? 'namespace: not checked'
      : c.namespace.error !== undefined
        ? 'namespace: cannot be read'
        : c.namespace.checked
          ? `namespace: ${c.namespace.views} view(s), ${c.namespace.inodes} inode row(s), ${c.namespace.entries} entry row(s)`
          : 'namespace: no filesystem tables yet';
    lines.push(`metadata: ${sqlite}; ${ns}`);
  }
  for (const i of c.issues) {
    lines.push(`${i.severity}: ${i.message}`);
    lines.push(`  fix: ${i.fix}`);
  }
  const harmless = infos > 0 ? `, ${infos} harmless` : '';
  if (c.opened === false) {
    lines.push(`the pool does not open: space map and namespace not checked; ${c.issues.length} issue(s), ${c.fatal} fatal`);
    return `${lines.join('\n')}\n`;
  }
  if (c.clean) lines.push(`examined ${c.blocksChecked} data blocks: clean${infos > 0 ? ` (${infos} harmless finding(s))` : ''}`);
  else lines.push(`examined ${c.blocksChecked} data blocks: ${c.issues.length} issue(s), ${c.fatal} fatal, ${c.leaks} repairable${harmless}`);
  return `${lines.join('\n')}\n`;
}

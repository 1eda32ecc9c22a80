/**
 * `thinfs check [--repair]`: like thin_check / thin_repair. Exit status 0 only when the
 * pool is clean (after --repair: when the re-check is clean), 1 otherwise.
 */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { CheckResult } from '../../daemon/ops/index.js';
import type { CheckReport } from '../../pool/index.js';
import { EXIT_FAILURE } from '../errors.js';
import { formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs check` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('check')
      .description('check the space map against the block mappings (exit 0 only when clean)')
      .option('--repair', 'fix what can be fixed (leaks, counts), then check again'),
  ).action(async (o: { repair?: boolean; json?: boolean }, cmd: Command) => {
    const r = await runOp<CheckResult>(globals(cmd).root, 'check', { repair: o.repair === true });
    out(o.json ? formatJson(r) : formatCheck(r));
    if (!r.clean) process.exitCode = EXIT_FAILURE;
  });
}

function formatCheck(r: CheckResult): string {
  let text = formatReport(r.report);
  if (r.recheck !== null) {
    text += r.report.repaired ? 'repaired; checking again\n' : 'nothing repaired; checking again\n';
    text += formatReport(r.recheck);
  }
  if (r.needsCheck) text += 'the pool is marked needs_check and stays read-only; run `thinfs check --repair` to clear the flag\n';
  return text;
}

function formatReport(c: CheckReport): string {
  if (c.clean) return `examined ${c.blocksChecked} data blocks: clean\n`;
  const lines = [`examined ${c.blocksChecked} data blocks: ${c.issues.length} issue(s), ${c.fatal} fatal, ${c.leaks} repairable`];
  for (const i of c.issues) {
    lines.push(`${i.severity === 'fatal' ? 'fatal' : 'leak'}: ${i.message}`);
    lines.push(`  fix: ${i.fix}`);
  }
  return `${lines.join('\n')}\n`;
}

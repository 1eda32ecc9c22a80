/**
 * Runs once before all tests: compile to dist/ when any source is newer than the built
 * CLI, so the CLI tests run the command exactly as users do (`node dist/src/cli/main.js`).
 * Type errors are reported but do not stop the run (tsc still emits; `npm run typecheck`
 * is where they fail the build).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BUILT = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

function newestSource(): number {
  let newest = 0;
  for (const f of ['tsconfig.json', 'package.json']) newest = Math.max(newest, fs.statSync(path.join(ROOT, f)).mtimeMs);
  for (const dir of ['src', 'bench']) {
    const abs = path.join(ROOT, dir);
    if (!fs.existsSync(abs)) continue;
    for (const f of fs.readdirSync(abs, { recursive: true, encoding: 'utf8' })) {
      if (f.endsWith('.ts')) newest = Math.max(newest, fs.statSync(path.join(abs, f)).mtimeMs);
    }
  }
  return newest;
}

export default function setup(): void {
  if (fs.existsSync(BUILT) && fs.statSync(BUILT).mtimeMs > newestSource()) return;
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', ROOT], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) console.warn(`tsc -p . reported errors (the emitted JavaScript is used anyway):\n${r.stdout}${r.stderr}`);
  if (!fs.existsSync(BUILT)) throw new Error(`tsc did not produce ${BUILT}`);
}

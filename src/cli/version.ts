/** The version of thinfs, from its package.json (found from src/ and from dist/src/ alike). */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The `version` of the nearest package.json named "thinfs" above this file. */
export function packageVersion(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'thinfs' && pkg.version !== undefined) return pkg.version;
    }
    if (dirname(dir) === dir) return '0.0.0-unknown';
  }
}

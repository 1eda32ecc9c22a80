/** Size and percentage parsing, root resolution and output formatting (in-process). */
import { describe, expect, it } from 'vitest';
import { isThinfsError } from '../../src/errors.js';
import { formatBytes, formatTable } from '../../src/cli/format.js';
import { resolveRoot } from '../../src/cli/globals.js';
import { parsePercent, parseSize } from '../../src/cli/sizes.js';

const K = 1024;
const G = K ** 3;

describe('parseSize', () => {
  it.each([
    ['512', 512],
    ['512B', 512],
    ['64K', 64 * K],
    ['64k', 64 * K],
    ['64KB', 64 * K],
    ['64KiB', 64 * K],
    ['100G', 100 * G],
    ['100GB', 100 * G],
    ['10GiB', 10 * G],
    ['1.5T', 1.5 * K * G],
    ['0.5K', 512],
    ['2 M', 2 * K * K],
  ])('%s = %d bytes', (text, n) => {
    expect(parseSize(text)).toBe(n);
  });

  it.each(['12Q', '', 'G', '-1G', '1.3K', '1e9', '0x10', '10 GiBs', '1.5', '100000E', 'ten', '5iB'])('refuses %j with EINVAL', (text) => {
    let err: unknown;
    try {
      parseSize(text);
    } catch (e) {
      err = e;
    }
    expect(isThinfsError(err, 'EINVAL')).toBe(true);
  });
});

describe('parsePercent', () => {
  it('reads 10%, 10 and 12.5%', () => {
    expect(parsePercent('10%')).toBe(10);
    expect(parsePercent('10')).toBe(10);
    expect(parsePercent('12.5%')).toBe(12.5);
  });
  it.each(['ten', '-5%', '%', '10%%', ''])('refuses %j', (text) => {
    expect(() => parsePercent(text)).toThrow(/EINVAL/);
  });
});

describe('resolveRoot', () => {
  it('prefers --root, then THINFS_ROOT, then /var/lib/thinfs for root, then XDG_DATA_HOME, then ~/.local/share', () => {
    expect(resolveRoot('/a/b', { THINFS_ROOT: '/env' }, 0, '/home/u')).toBe('/a/b');
    expect(resolveRoot(undefined, { THINFS_ROOT: '/env' }, 1000, '/home/u')).toBe('/env');
    expect(resolveRoot(undefined, {}, 0, '/root')).toBe('/var/lib/thinfs');
    expect(resolveRoot(undefined, { XDG_DATA_HOME: '/xdg' }, 1000, '/home/u')).toBe('/xdg/thinfs');
    expect(resolveRoot(undefined, { XDG_DATA_HOME: 'relative' }, 1000, '/home/u')).toBe('/home/u/.local/share/thinfs');
    expect(resolveRoot(undefined, {}, 1000, '/home/u')).toBe('/home/u/.local/share/thinfs');
  });
  it('makes a relative --root absolute', () => {
    expect(resolveRoot('rel', {}, 0, '/root')).toBe(`${process.cwd()}/rel`);
  });
});

describe('format', () => {
  it('formats bytes in binary units', () => {
    expect(formatBytes(64 * K)).toBe('64 KB');
    expect(formatBytes(100 * G)).toBe('100 GB');
    expect(formatBytes(0)).toBe('0 B');
  });
  it('prints a borderless table', () => {
    expect(formatTable(['NAME', 'SIZE'], [['a', 1], ['bbb', 22]])).toBe('NAME   SIZE\na      1\nbbb    22\n');
  });
});

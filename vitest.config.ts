import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Builds dist/ once (when stale): the CLI tests run the compiled `thinfs`.
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // Mount tests and pool tests share /dev/fuse and the disk; two cores only.
    fileParallelism: true,
    maxWorkers: 2,
    minWorkers: 1,
  },
});

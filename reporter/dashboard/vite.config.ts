// Vite builds the dashboard to dist/ (served by helios-reporter --dashboard-dir). JSX is
// compiled by esbuild with React's automatic runtime, so no React plugin is needed.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  base: '/',
  esbuild: { jsx: 'automatic' },
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 800 },
  server: { proxy: { '/api': 'http://127.0.0.1:8090' } },
  test: { environment: 'node', include: ['src/**/*.test.ts'] },
});

import { defineConfig } from "vite";

// The dashboard is embedded in fleetpulse-analyzer (analyzer/build.rs reads dist/), served at
// `/` with hashed files under `/assets/`. `npm run dev` proxies the API to a local analyzer.
export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // One small bundle: first paint on loopback needs index.html + one script + one stylesheet.
    modulePreload: false,
    sourcemap: false,
    chunkSizeWarningLimit: 300,
  },
  server: {
    proxy: { "/api": process.env.FLEETPULSE_ANALYZER_URL ?? "http://127.0.0.1:7700" },
  },
});

// Builds the demo page into gateway/static/demo/, which the gateway serves at /demo.
// Fixed file names (no content hashes) keep the committed build's diffs readable; the page is
// served with Cache-Control: no-cache.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

export default defineConfig({
  base: "/demo/",
  build: {
    outDir: fileURLToPath(new URL("../gateway/static/demo", import.meta.url)),
    emptyOutDir: true,
    target: "es2022",
    modulePreload: { polyfill: false },
    rollupOptions: {
      output: {
        entryFileNames: "assets/demo.js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: "assets/[name][extname]",
      },
    },
  },
  server: {
    // `npm run dev`: the page on Vite's server, everything else from a gateway on :3001.
    proxy: {
      "/socket.io": { target: "http://localhost:3001", ws: true },
      "/api": "http://localhost:3001",
      "/demo/config": "http://localhost:3001",
      "/demo/token": "http://localhost:3001",
    },
  },
});

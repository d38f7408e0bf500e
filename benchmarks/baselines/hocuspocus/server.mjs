// Baseline for the Yjs benchmark (benchmarks/yjs.py): Hocuspocus 3.4 with its defaults and no
// extensions (documents in memory, no persistence, no authentication hook).
//
//   node server.mjs --host 127.0.0.1 --port 3002

import { parseArgs } from "node:util";
import { Server } from "@hocuspocus/server";

const { values: opts } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "3002" },
  },
});

const server = new Server({ address: opts.host, port: Number(opts.port), quiet: true });
await server.listen();
console.log(`hocuspocus listening on ${opts.host}:${opts.port}`);

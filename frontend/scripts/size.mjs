// Prints the built panel's size and fails when it exceeds the budget (400 KB gzipped).
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const BUDGET_BYTES = 400 * 1024;
const file = process.argv[2] ?? 'dist/management.html';
const bytes = readFileSync(file);
const gzipped = gzipSync(bytes, { level: 9 }).length;
const kib = (value) => `${(value / 1024).toFixed(1)} KiB`;
console.log(`panel: ${file}: ${kib(bytes.length)}, ${kib(gzipped)} gzipped (budget ${kib(BUDGET_BYTES)} gzipped)`);
if (gzipped > BUDGET_BYTES) {
  console.error(`panel: over the size budget by ${kib(gzipped - BUDGET_BYTES)}; remove weight before landing`);
  process.exit(1);
}

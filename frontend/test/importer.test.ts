import { beforeEach, expect, test, vi } from 'vitest';

import { ImportRunner, resumeKeyFor, type FileLike, type ImportApi } from '../src/lib/importer';
import type { ImportSession } from '../src/lib/types';
import { MemoryStorage } from './support';


let storage: MemoryStorage;
beforeEach(() => {
  storage = new MemoryStorage();
  vi.stubGlobal('localStorage', storage);
});

function file(size: number): FileLike {
  const bytes = new Uint8Array(size).fill(65);
  return { name: 'usage.jsonl', size, lastModified: 7, slice: (start, end) => new Blob([bytes.slice(start, end)]) };
}

/** An import-session server in memory, following the API's rules. */
function fakeServer(chunkSize: number, processingPolls = 2) {
  let session: ImportSession | null = null;
  let polls = 0;
  const chunks: [number, number][] = [];
  const api: ImportApi = {
    async create(filename, sizeBytes, resumeKey) {
      expect(resumeKey).toMatch(/^[0-9a-f]{32}$/);
      session ??= { id: 'a'.repeat(32), filename, status: 'uploading', size_bytes: sizeBytes, received_bytes: 0, chunk_size_bytes: chunkSize, created_at_ms: 0, updated_at_ms: 0, expires_at_ms: 0, retryable: false };
      return { ...session };
    },
    async get() {
      if (session!.status === 'processing' && ++polls >= processingPolls) {
        session = { ...session!, status: 'completed', result: { format: 'usage_service_jsonl', added: 3, skipped: 0, total: 3, failed: 0, unsupported: 0, warnings: null } };
      }
      return { ...session! };
    },
    async chunk(_id, offset, chunk, signal) {
      if (signal?.aborted) throw new DOMException('aborted', 'AbortError');
      expect(offset).toBe(session!.received_bytes);
      chunks.push([offset, chunk.size]);
      const received = offset + chunk.size;
      session = { ...session!, received_bytes: received, status: received === session!.size_bytes ? 'ready' : 'uploading' };
      return { ...session };
    },
    async complete() {
      session = { ...session!, status: 'processing' };
      return { ...session };
    },
    async cancel() {
      session = { ...session!, status: 'cancelled' };
      return { ...session };
    },
  };
  return { api, chunks, state: () => session };
}

test('a file is sent in order, in chunks, then imported on the server', async () => {
  const server = fakeServer(4);
  const phases: string[] = [];
  const runner = new ImportRunner(server.api, file(10), (progress) => phases.push(progress.phase), 1, async () => undefined);
  const result = await runner.start();
  expect(server.chunks).toEqual([[0, 4], [4, 4], [8, 2]]);
  expect(result.phase).toBe('completed');
  expect(result.session?.result?.added).toBe(3);
  expect(phases).toContain('processing');
  // A finished import forgets its resume key.
  expect([...storage.values.keys()].some((key) => key.startsWith('cpamp.importResume.'))).toBe(false);
});

test('a paused upload resumes from where the server stands', async () => {
  const server = fakeServer(4);
  let runner!: ImportRunner;
  let chunksSeen = 0;
  runner = new ImportRunner(server.api, file(12), (progress) => {
    if (progress.phase === 'uploading' && progress.sentBytes > 0 && ++chunksSeen === 1) runner.pause();
  }, 1, async () => undefined);
  const paused = await runner.start();
  expect(paused.phase).toBe('paused');
  expect(server.state()!.received_bytes).toBe(4);
  const done = await runner.start();
  expect(done.phase).toBe('completed');
  expect(server.chunks.map(([offset]) => offset)).toEqual([0, 4, 8]);
});

test('the same file gets the same resume key across reloads', () => {
  const first = resumeKeyFor({ name: 'a.jsonl', size: 5, lastModified: 1 });
  expect(resumeKeyFor({ name: 'a.jsonl', size: 5, lastModified: 1 })).toBe(first);
  expect(resumeKeyFor({ name: 'a.jsonl', size: 6, lastModified: 1 })).not.toBe(first);
});

test('cancel waits for the server to confirm', async () => {
  const server = fakeServer(4);
  const runner = new ImportRunner(server.api, file(8), () => undefined, 1, async () => undefined);
  let cancelled: Promise<unknown> | null = null;
  const original = server.api.chunk;
  server.api.chunk = async (...args) => {
    const session = await original(...args);
    cancelled ??= runner.cancel();
    return session;
  };
  await runner.start();
  await cancelled;
  expect(runner.state.phase).toBe('cancelled');
  expect(server.state()!.status).toBe('cancelled');
});

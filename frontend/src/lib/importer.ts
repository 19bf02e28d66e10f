// Resumable upload of a usage file through import sessions: chunks are sent in order from
// where the server says it stands, so a pause, a reload or a lost connection resumes
// without sending a byte twice; the import itself runs on the server.
import { ApiError, isAbort } from './api';
import type { ImportSession } from './types';
import { storage } from './store';

export interface ImportApi {
  create(filename: string, sizeBytes: number, resumeKey: string): Promise<ImportSession>;
  get(id: string, signal?: AbortSignal): Promise<ImportSession>;
  chunk(id: string, offset: number, chunk: Blob, signal?: AbortSignal): Promise<ImportSession>;
  complete(id: string): Promise<ImportSession>;
  cancel(id: string): Promise<ImportSession>;
}

export type Phase = 'idle' | 'uploading' | 'paused' | 'processing' | 'completed' | 'failed' | 'cancelled';

export interface Progress {
  phase: Phase;
  session?: ImportSession;
  sentBytes: number;
  totalBytes: number;
  error?: unknown;
}

export interface FileLike {
  name: string;
  size: number;
  lastModified: number;
  slice(start: number, end: number): Blob;
}

const RESUME_PREFIX = 'cpamp.importResume.';

/** The resume key of a file: the same file (name, size, date) resumes its session. */
export function resumeKeyFor(file: Pick<FileLike, 'name' | 'size' | 'lastModified'>, random: () => string = randomHex): string {
  const id = `${RESUME_PREFIX}${file.name}|${file.size}|${file.lastModified}`;
  const saved = storage.get(id);
  if (saved && /^[0-9a-f]{32}$/.test(saved)) return saved;
  const key = random();
  storage.set(id, key);
  return key;
}

export function forgetResumeKey(file: Pick<FileLike, 'name' | 'size' | 'lastModified'>): void {
  storage.set(`${RESUME_PREFIX}${file.name}|${file.size}|${file.lastModified}`, null);
}

function randomHex(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('');
}

export class ImportRunner {
  private controller: AbortController | null = null;
  private progress: Progress;
  private stopped = false;

  constructor(
    private readonly api: ImportApi,
    private readonly file: FileLike,
    private readonly onProgress: (progress: Progress) => void,
    private readonly pollMs = 500,
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  ) {
    this.progress = { phase: 'idle', sentBytes: 0, totalBytes: file.size };
  }

  get state(): Progress {
    return this.progress;
  }

  /** Starts or resumes the upload, then waits for the server-side import. */
  async start(): Promise<Progress> {
    this.stopped = false;
    try {
      let session = this.progress.session;
      session = session
        ? await this.api.get(session.id)
        : await this.api.create(this.file.name, this.file.size, resumeKeyFor(this.file));
      this.update({ phase: 'uploading', session, sentBytes: session.received_bytes, totalBytes: this.file.size });
      while (session.status === 'uploading' && !this.stopped) {
        const offset = session.received_bytes;
        const end = Math.min(offset + session.chunk_size_bytes, session.size_bytes);
        this.controller = new AbortController();
        session = await this.api.chunk(session.id, offset, this.file.slice(offset, end), this.controller.signal);
        this.controller = null;
        // Paused or cancelled meanwhile: the server knows what it has; `start()` asks again.
        if (this.stopped) return this.progress;
        this.update({ phase: 'uploading', session, sentBytes: session.received_bytes, totalBytes: this.file.size });
      }
      if (this.stopped) return this.progress;
      if (session.status === 'ready' || (session.status === 'failed' && session.retryable)) {
        session = await this.api.complete(session.id);
      }
      return await this.waitForServer(session);
    } catch (error) {
      this.controller = null;
      if (isAbort(error) && this.stopped) return this.progress;
      this.update({ ...this.progress, phase: 'failed', error });
      return this.progress;
    }
  }

  /** Stops sending after the chunk in flight is aborted; `start()` resumes. */
  pause(): void {
    if (this.progress.phase !== 'uploading') return;
    this.stopped = true;
    this.controller?.abort();
    this.update({ ...this.progress, phase: 'paused' });
  }

  /** Cancels on the server and waits until the server confirms. */
  async cancel(): Promise<Progress> {
    this.stopped = true;
    this.controller?.abort();
    const session = this.progress.session;
    if (!session) {
      this.update({ ...this.progress, phase: 'cancelled' });
      return this.progress;
    }
    try {
      let current = await this.api.cancel(session.id);
      for (let attempt = 0; current.status === 'processing' && attempt < 120; attempt += 1) {
        await this.sleep(250);
        current = await this.api.get(session.id);
      }
      this.finish(current);
    } catch (error) {
      this.update({ ...this.progress, phase: 'failed', error });
    }
    return this.progress;
  }

  private async waitForServer(initial: ImportSession): Promise<Progress> {
    let session = initial;
    this.update({ ...this.progress, phase: 'processing', session, sentBytes: session.received_bytes });
    while (session.status === 'processing' && !this.stopped) {
      await this.sleep(this.pollMs);
      session = await this.api.get(session.id);
      this.update({ ...this.progress, session });
    }
    this.finish(session);
    return this.progress;
  }

  private finish(session: ImportSession): void {
    const phase: Phase =
      session.status === 'completed' ? 'completed' : session.status === 'cancelled' ? 'cancelled' : session.status === 'failed' ? 'failed' : this.progress.phase;
    if (phase === 'completed' || phase === 'cancelled' || (phase === 'failed' && !session.retryable)) forgetResumeKey(this.file);
    const error = phase === 'failed' ? new ApiError(500, 'import_failed', session.error ?? 'import failed') : undefined;
    this.update({ phase, session, sentBytes: session.received_bytes, totalBytes: this.file.size, error });
  }

  private update(progress: Progress): void {
    this.progress = progress;
    this.onProgress(progress);
  }
}

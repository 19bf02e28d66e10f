// Data loading for cards and pages: one request per resource at a time, stale requests
// aborted when the inputs change, and periodic refresh only while the tab is visible.
import { useEffect, useRef, useState } from 'preact/hooks';

import { isAbort } from './api';
import { Store } from './store';

export interface ResourceState<T> {
  data: T | undefined;
  error: unknown;
  /** True until the first answer for the current key arrived. */
  loading: boolean;
  /** True while any request is in flight (first load or refresh). */
  busy: boolean;
  updatedAt: number;
}

export interface Resource<T> extends ResourceState<T> {
  reload: () => void;
}

/** What the controller needs from its surroundings (real browser or a test). */
export interface Environment {
  now(): number;
  visible(): boolean;
  setTimer(callback: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
}

export const browserEnvironment: Environment = {
  now: () => Date.now(),
  visible: () => globalThis.document?.visibilityState !== 'hidden',
  setTimer: (callback, ms) => setTimeout(callback, ms),
  clearTimer: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * The state machine behind `useResource`, free of any framework. A new key aborts the
 * request for the old one; a periodic refresh is skipped while a request is still in
 * flight, so a slow server never receives a pile of requests; timers stop while the tab is
 * hidden and a stale resource reloads as soon as it is visible again.
 */
export class ResourceController<T> {
  private key: string | null = null;
  private controller: AbortController | null = null;
  private timer: unknown = null;
  private state: ResourceState<T> = { data: undefined, error: undefined, loading: false, busy: false, updatedAt: 0 };

  constructor(
    private load: (signal: AbortSignal) => Promise<T>,
    private readonly onChange: (state: ResourceState<T>) => void,
    private refreshMs = 0,
    private readonly environment: Environment = browserEnvironment,
  ) {}

  get current(): ResourceState<T> {
    return this.state;
  }

  setLoader(load: (signal: AbortSignal) => Promise<T>, refreshMs: number): void {
    this.load = load;
    if (refreshMs !== this.refreshMs) {
      this.refreshMs = refreshMs;
      this.schedule();
    }
  }

  setKey(key: string | null): void {
    if (key === this.key) return;
    this.key = key;
    if (key === null) {
      this.abort();
      this.clearTimer();
      this.update({ data: undefined, error: undefined, loading: false, busy: false, updatedAt: 0 });
      return;
    }
    this.update({ ...this.state, loading: true, error: undefined });
    this.run(true);
  }

  /** Loads now; `force` aborts a request in flight instead of leaving it be. */
  run(force: boolean): void {
    const key = this.key;
    if (key === null) return;
    if (this.controller && !force) return;
    this.abort();
    const controller = new AbortController();
    this.controller = controller;
    this.update({ ...this.state, busy: true });
    this.load(controller.signal).then(
      (data) => {
        if (controller !== this.controller) return;
        this.controller = null;
        this.update({ data, error: undefined, loading: false, busy: false, updatedAt: this.environment.now() });
        this.schedule();
      },
      (error: unknown) => {
        if (controller !== this.controller || isAbort(error)) return;
        this.controller = null;
        this.update({ ...this.state, error, loading: false, busy: false, updatedAt: this.environment.now() });
        this.schedule();
      },
    );
  }

  /** The tab became visible or hidden. */
  visibilityChanged(): void {
    if (!this.environment.visible()) {
      this.clearTimer();
      return;
    }
    if (this.refreshMs > 0 && this.environment.now() - this.state.updatedAt >= this.refreshMs) this.run(false);
    else this.schedule();
  }

  dispose(): void {
    this.abort();
    this.clearTimer();
    this.key = null;
  }

  private schedule(): void {
    this.clearTimer();
    if (this.refreshMs > 0 && this.key !== null && this.environment.visible()) {
      this.timer = this.environment.setTimer(() => {
        this.timer = null;
        this.run(false);
      }, this.refreshMs);
    }
  }

  private clearTimer(): void {
    if (this.timer !== null) this.environment.clearTimer(this.timer);
    this.timer = null;
  }

  private abort(): void {
    const controller = this.controller;
    this.controller = null;
    controller?.abort();
  }

  private update(state: ResourceState<T>): void {
    this.state = state;
    this.onChange(state);
  }
}

/** Bumped by the header's "refresh" button: every mounted resource reloads. */
export const refreshAll = new Store(0);

/** Loads `load()` whenever `key` changes (null: nothing to load). */
export function useResource<T>(
  key: string | null,
  load: (signal: AbortSignal) => Promise<T>,
  options: { refreshMs?: number } = {},
): Resource<T> {
  const [, setVersion] = useState(0);
  const controllerRef = useRef<ResourceController<T> | null>(null);
  if (!controllerRef.current) {
    controllerRef.current = new ResourceController<T>(load, () => setVersion((version) => version + 1), options.refreshMs ?? 0);
  }
  const controller = controllerRef.current;
  controller.setLoader(load, options.refreshMs ?? 0);

  useEffect(() => {
    controller.setKey(key);
  }, [controller, key]);

  useEffect(() => {
    const onVisibility = () => controller.visibilityChanged();
    document.addEventListener('visibilitychange', onVisibility);
    const unsubscribe = refreshAll.subscribe(() => controller.run(true));
    return () => {
      document.removeEventListener('visibilitychange', onVisibility);
      unsubscribe();
      controller.dispose();
    };
  }, [controller]);

  const state = controller.current;
  // Before the first effect ran, a non-null key is about to load.
  const pending = key !== null && state.updatedAt === 0 && !state.busy && state.error === undefined;
  return { ...state, loading: state.loading || pending, reload: () => controller.run(true) };
}

/** `value`, but only after it stopped changing for `delayMs`. */
export function useDebounced<T>(value: T, delayMs: number): T {
  const [debounced, setDebounced] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setDebounced(value), delayMs);
    return () => clearTimeout(timer);
  }, [value, delayMs]);
  return debounced;
}

import { describe, expect, test } from 'vitest';

import { ResourceController, type Environment, type ResourceState } from '../src/lib/resource';

/** A clock and timers under the test's control. */
class FakeEnvironment implements Environment {
  time = 0;
  isVisible = true;
  private timers: { at: number; callback: () => void; id: number }[] = [];
  private nextId = 1;
  now() {
    return this.time;
  }
  visible() {
    return this.isVisible;
  }
  setTimer(callback: () => void, ms: number) {
    const id = this.nextId++;
    this.timers.push({ at: this.time + ms, callback, id });
    return id;
  }
  clearTimer(handle: unknown) {
    this.timers = this.timers.filter((timer) => timer.id !== handle);
  }
  get pendingTimers() {
    return this.timers.length;
  }
  advance(ms: number) {
    this.time += ms;
    const due = this.timers.filter((timer) => timer.at <= this.time);
    this.timers = this.timers.filter((timer) => timer.at > this.time);
    for (const timer of due) timer.callback();
  }
}

interface Call {
  signal: AbortSignal;
  resolve: (value: string) => void;
  reject: (error: unknown) => void;
}

function harness(refreshMs = 0) {
  const calls: Call[] = [];
  const states: ResourceState<string>[] = [];
  const environment = new FakeEnvironment();
  const controller = new ResourceController<string>(
    (signal) => new Promise<string>((resolve, reject) => calls.push({ signal, resolve, reject })),
    (state) => states.push(state),
    refreshMs,
    environment,
  );
  return { calls, states, environment, controller };
}

const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

describe('resources', () => {
  test('a new key aborts the request for the old one and ignores its answer', async () => {
    const { calls, controller } = harness();
    controller.setKey('a');
    controller.setKey('b');
    expect(calls).toHaveLength(2);
    expect(calls[0]!.signal.aborted).toBe(true);
    calls[0]!.resolve('old');
    calls[1]!.resolve('new');
    await flush();
    expect(controller.current.data).toBe('new');
    expect(controller.current.loading).toBe(false);
  });

  test('a periodic refresh never overlaps a request in flight', async () => {
    const { calls, environment, controller } = harness(1000);
    controller.setKey('a');
    calls[0]!.resolve('first');
    await flush();
    environment.advance(1000);
    expect(calls).toHaveLength(2);
    // The server is slow: no timer is armed while the request runs, so no second request.
    environment.advance(5000);
    expect(calls).toHaveLength(2);
    controller.run(false);
    expect(calls).toHaveLength(2);
    calls[1]!.resolve('second');
    await flush();
    expect(controller.current.data).toBe('second');
    expect(environment.pendingTimers).toBe(1);
  });

  test('a hidden tab stops refreshing; a stale resource reloads when visible again', async () => {
    const { calls, environment, controller } = harness(1000);
    controller.setKey('a');
    calls[0]!.resolve('first');
    await flush();
    environment.isVisible = false;
    controller.visibilityChanged();
    environment.advance(10_000);
    expect(calls).toHaveLength(1);
    environment.isVisible = true;
    controller.visibilityChanged();
    expect(calls).toHaveLength(2);
  });

  test('an error keeps the last data and is reported', async () => {
    const { calls, controller } = harness();
    controller.setKey('a');
    calls[0]!.resolve('data');
    await flush();
    controller.run(true);
    calls[1]!.reject(new Error('boom'));
    await flush();
    expect(controller.current.data).toBe('data');
    expect((controller.current.error as Error).message).toBe('boom');
    expect(controller.current.busy).toBe(false);
  });

  test('a null key means nothing to load', () => {
    const { calls, controller } = harness(1000);
    controller.setKey(null);
    expect(calls).toHaveLength(0);
    expect(controller.current.loading).toBe(false);
  });
});

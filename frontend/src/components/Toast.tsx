// Short confirmations and failures of actions, announced to screen readers.
import { Store, useStore } from '../lib/store';

export interface Toast {
  id: number;
  text: string;
  tone: 'good' | 'bad';
}

const toasts = new Store<Toast[]>([]);
let next = 1;

export function toast(text: string, tone: Toast['tone'] = 'good'): void {
  const id = next++;
  toasts.set((list) => [...list.slice(-3), { id, text, tone }]);
  setTimeout(() => toasts.set((list) => list.filter((item) => item.id !== id)), tone === 'bad' ? 8000 : 4000);
}

export function Toasts() {
  const list = useStore(toasts);
  return (
    <div class="toasts" role="status" aria-live="polite">
      {list.map((item) => (
        <div class={`toast tone-${item.tone}`} key={item.id}>
          {item.text}
        </div>
      ))}
    </div>
  );
}

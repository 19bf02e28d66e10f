// Small building blocks shared by every page.
import { Component, type ComponentChildren, type TargetedKeyboardEvent } from 'preact';
import { useEffect, useId, useRef } from 'preact/hooks';

import { describeError } from '../lib/errors';
import { t } from '../lib/i18n';
import type { Resource } from '../lib/resource';
import { ApiError } from '../lib/api';

export function Spinner({ label }: { label?: string }) {
  return (
    <span class="spinner" role="status">
      <span class="visually-hidden">{label ?? t('common.loading')}</span>
    </span>
  );
}

export function ErrorNote({ error, context, onRetry }: { error: unknown; context?: 'setup' | 'login'; onRetry?: () => void }) {
  const described = describeError(error, context);
  return (
    <div class="error-note" role="alert">
      <strong>{described.title}</strong>
      {described.detail && described.detail !== described.title && <span class="error-detail">{described.detail}</span>}
      {onRetry && (
        <button type="button" class="link-button" onClick={onRetry}>
          {t('common.retry')}
        </button>
      )}
    </div>
  );
}

/** Shown where a server lacks an API this page needs. */
export function Unavailable({ what }: { what: string }) {
  return (
    <div class="unavailable" role="note" data-testid="unavailable">
      <strong>{t('common.unavailableTitle')}</strong>
      <span>{t('common.unavailableBody', { what })}</span>
    </div>
  );
}

export function Empty({ children }: { children?: ComponentChildren }) {
  return <div class="empty">{children ?? t('common.noData')}</div>;
}

interface CardProps {
  title: string;
  subtitle?: ComponentChildren;
  actions?: ComponentChildren;
  class?: string;
  id?: string;
  children?: ComponentChildren;
  /** The resource this card shows: loading and error states come from it. */
  resource?: Pick<Resource<unknown>, 'loading' | 'error' | 'busy' | 'reload' | 'data'>;
  unavailableWhat?: string;
}

/** A titled panel. Render errors stay inside it, so one broken card never blanks the page. */
export function Card(props: CardProps) {
  const headingId = useId();
  const { resource } = props;
  let body: ComponentChildren = props.children;
  if (resource) {
    if (resource.error && !resource.data) {
      body =
        resource.error instanceof ApiError && resource.error.unavailable && props.unavailableWhat ? (
          <Unavailable what={props.unavailableWhat} />
        ) : (
          <ErrorNote error={resource.error} onRetry={resource.reload} />
        );
    } else if (resource.loading && !resource.data) {
      body = (
        <div class="card-loading">
          <Spinner />
        </div>
      );
    }
  }
  return (
    <section
      class={`card ${props.class ?? ''}`}
      aria-labelledby={headingId}
      aria-busy={resource?.busy ? 'true' : 'false'}
      id={props.id}
      data-state={resource ? (resource.error && !resource.data ? 'error' : resource.data ? 'ready' : 'loading') : 'ready'}
    >
      <header class="card-header">
        <div>
          <h2 id={headingId}>{props.title}</h2>
          {props.subtitle && <div class="card-subtitle">{props.subtitle}</div>}
        </div>
        {props.actions && <div class="card-actions">{props.actions}</div>}
      </header>
      <Boundary>
        {resource?.error && resource.data ? <ErrorNote error={resource.error} onRetry={resource.reload} /> : null}
        {body}
      </Boundary>
    </section>
  );
}

/** Catches render errors of its children and shows them in place. */
export class Boundary extends Component<{ children?: ComponentChildren }, { error: unknown }> {
  override state = { error: undefined as unknown };

  static override getDerivedStateFromError(error: unknown) {
    return { error };
  }

  override render() {
    if (this.state.error) {
      return <ErrorNote error={this.state.error} onRetry={() => this.setState({ error: undefined })} />;
    }
    return this.props.children;
  }
}

export function Stat({
  label,
  value,
  hint,
  tone,
  testId,
}: {
  label: string;
  value: ComponentChildren;
  hint?: ComponentChildren;
  tone?: 'good' | 'warn' | 'bad';
  testId?: string;
}) {
  return (
    <div class={`stat ${tone ? `tone-${tone}` : ''}`} data-testid={testId}>
      <div class="stat-label">{label}</div>
      <div class="stat-value">{value}</div>
      {hint !== undefined && <div class="stat-hint">{hint}</div>}
    </div>
  );
}

export interface Choice<T extends string> {
  value: T;
  label: string;
}

/** A row of toggle buttons (one choice), keyboard-friendly like radio buttons. */
export function Segmented<T extends string>({
  label,
  value,
  choices,
  onChange,
  testId,
}: {
  label: string;
  value: T;
  choices: Choice<T>[];
  onChange: (value: T) => void;
  testId?: string;
}) {
  const onKey = (event: TargetedKeyboardEvent<HTMLDivElement>) => {
    const index = choices.findIndex((choice) => choice.value === value);
    let next = index;
    if (event.key === 'ArrowRight' || event.key === 'ArrowDown') next = (index + 1) % choices.length;
    else if (event.key === 'ArrowLeft' || event.key === 'ArrowUp') next = (index - 1 + choices.length) % choices.length;
    else return;
    event.preventDefault();
    onChange(choices[next]!.value);
    const buttons = event.currentTarget.querySelectorAll<HTMLButtonElement>('button');
    buttons[next]?.focus();
  };
  return (
    <div class="segmented" role="radiogroup" aria-label={label} onKeyDown={onKey} data-testid={testId}>
      {choices.map((choice) => (
        <button
          type="button"
          role="radio"
          aria-checked={choice.value === value}
          tabIndex={choice.value === value ? 0 : -1}
          class={choice.value === value ? 'active' : ''}
          onClick={() => onChange(choice.value)}
          key={choice.value}
        >
          {choice.label}
        </button>
      ))}
    </div>
  );
}

/** Tabs with arrow-key navigation; the panel content is rendered by the caller. */
export function Tabs<T extends string>({
  label,
  value,
  tabs,
  onChange,
}: {
  label: string;
  value: T;
  tabs: { value: T; label: string; badge?: ComponentChildren }[];
  onChange: (value: T) => void;
}) {
  const onKey = (event: TargetedKeyboardEvent<HTMLDivElement>) => {
    const index = tabs.findIndex((tab) => tab.value === value);
    let next = index;
    if (event.key === 'ArrowRight') next = (index + 1) % tabs.length;
    else if (event.key === 'ArrowLeft') next = (index - 1 + tabs.length) % tabs.length;
    else if (event.key === 'Home') next = 0;
    else if (event.key === 'End') next = tabs.length - 1;
    else return;
    event.preventDefault();
    onChange(tabs[next]!.value);
    event.currentTarget.querySelectorAll<HTMLButtonElement>('[role=tab]')[next]?.focus();
  };
  return (
    <div class="tabs" role="tablist" aria-label={label} onKeyDown={onKey}>
      {tabs.map((tab) => (
        <button
          type="button"
          role="tab"
          key={tab.value}
          aria-selected={tab.value === value}
          tabIndex={tab.value === value ? 0 : -1}
          class={tab.value === value ? 'active' : ''}
          onClick={() => onChange(tab.value)}
          data-tab={tab.value}
        >
          {tab.label}
          {tab.badge !== undefined && <span class="badge">{tab.badge}</span>}
        </button>
      ))}
    </div>
  );
}

export function SelectField({
  label,
  value,
  options,
  onChange,
  testId,
  allLabel,
}: {
  label: string;
  value: string;
  options: { value: string; label: string }[];
  onChange: (value: string) => void;
  testId?: string;
  /** When given, an empty first choice with this text. */
  allLabel?: string;
}) {
  const id = useId();
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <select id={id} value={value} onChange={(event) => onChange(event.currentTarget.value)} data-testid={testId}>
        {allLabel !== undefined && <option value="">{allLabel}</option>}
        {options.map((option) => (
          <option value={option.value} key={option.value}>
            {option.label}
          </option>
        ))}
      </select>
    </div>
  );
}

export function TextField({
  label,
  value,
  onInput,
  type = 'text',
  placeholder,
  hint,
  testId,
  autoComplete,
  required,
  inputMode,
  min,
  step,
  autoFocus,
}: {
  label: string;
  value: string;
  onInput: (value: string) => void;
  type?: string;
  placeholder?: string;
  hint?: ComponentChildren;
  testId?: string;
  autoComplete?: string;
  required?: boolean;
  inputMode?: 'numeric' | 'decimal' | 'text' | 'url';
  min?: number;
  step?: string;
  autoFocus?: boolean;
}) {
  const id = useId();
  const hintId = useId();
  const ref = useRef<HTMLInputElement>(null);
  useEffect(() => {
    if (autoFocus) ref.current?.focus();
  }, [autoFocus]);
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <input
        ref={ref}
        id={id}
        type={type as 'text'}
        value={value}
        placeholder={placeholder}
        onInput={(event) => onInput(event.currentTarget.value)}
        data-testid={testId}
        autoComplete={autoComplete}
        required={required}
        inputMode={inputMode}
        min={min}
        step={step}
        aria-describedby={hint ? hintId : undefined}
        spellcheck={false}
      />
      {hint && (
        <div class="field-hint" id={hintId}>
          {hint}
        </div>
      )}
    </div>
  );
}

export function Checkbox({
  label,
  checked,
  onChange,
  hint,
  testId,
}: {
  label: string;
  checked: boolean;
  onChange: (checked: boolean) => void;
  hint?: ComponentChildren;
  testId?: string;
}) {
  const id = useId();
  return (
    <div class="checkbox">
      <input id={id} type="checkbox" checked={checked} onChange={(event) => onChange(event.currentTarget.checked)} data-testid={testId} />
      <label for={id}>
        {label}
        {hint && <span class="field-hint">{hint}</span>}
      </label>
    </div>
  );
}

/** A dialog: focus moves in, Escape or the backdrop closes it, focus returns on close. */
export function Dialog({
  title,
  onClose,
  children,
  kind = 'modal',
  footer,
  testId,
}: {
  title: string;
  onClose: () => void;
  children?: ComponentChildren;
  kind?: 'modal' | 'drawer';
  footer?: ComponentChildren;
  testId?: string;
}) {
  const ref = useRef<HTMLDivElement>(null);
  const headingId = useId();
  useEffect(() => {
    const previous = document.activeElement as HTMLElement | null;
    ref.current?.focus();
    const onKey = (event: KeyboardEvent) => {
      if (event.key === 'Escape') {
        event.preventDefault();
        onClose();
      } else if (event.key === 'Tab' && ref.current) {
        const focusable = ref.current.querySelectorAll<HTMLElement>(
          'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])',
        );
        if (focusable.length === 0) return;
        const first = focusable[0]!;
        const last = focusable[focusable.length - 1]!;
        if (event.shiftKey && (document.activeElement === first || document.activeElement === ref.current)) {
          event.preventDefault();
          last.focus();
        } else if (!event.shiftKey && document.activeElement === last) {
          event.preventDefault();
          first.focus();
        }
      }
    };
    document.addEventListener('keydown', onKey);
    return () => {
      document.removeEventListener('keydown', onKey);
      previous?.focus?.();
    };
  }, [onClose]);
  return (
    <div class={`overlay overlay-${kind}`} onClick={(event) => event.target === event.currentTarget && onClose()}>
      <div class={`dialog dialog-${kind}`} role="dialog" aria-modal="true" aria-labelledby={headingId} tabIndex={-1} ref={ref} data-testid={testId}>
        <header class="dialog-header">
          <h2 id={headingId}>{title}</h2>
          <button type="button" class="icon-button" onClick={onClose} aria-label={t('common.close')}>
            ×
          </button>
        </header>
        <div class="dialog-body">{children}</div>
        {footer && <footer class="dialog-footer">{footer}</footer>}
      </div>
    </div>
  );
}

export function ShareBar({ share, tone }: { share: number; tone?: string }) {
  const width = `${Math.max(0, Math.min(1, share)) * 100}%`;
  return (
    <span class="share-bar" aria-hidden="true">
      <span class={`share-fill ${tone ?? ''}`} style={{ width }} />
    </span>
  );
}

export function Badge({ tone, children }: { tone?: string; children: ComponentChildren }) {
  return <span class={`pill ${tone ? `tone-${tone}` : ''}`}>{children}</span>;
}

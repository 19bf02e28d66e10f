// Login with the admin key, and the first-start setup wizard.
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';

import { ApiError, logIn, session, sessionEndReason, SESSION_REJECTED } from '../lib/api';
import { api } from '../lib/endpoints';
import { InputError } from '../lib/errors';
import { t } from '../lib/i18n';
import { useStore } from '../lib/store';
import { normalizeBaseUrl } from '../lib/url';
import type { ServiceInfo } from '../lib/types';
import { Checkbox, ErrorNote, SelectField, TextField } from '../components/ui';
import { DisplayControls } from '../components/DisplayControls';

/** The FAQ's key table: which key goes where. */
export function KeyTable() {
  const rows: [string, string][] = [
    [t('keys.placeLogin'), t('keys.adminKey')],
    [t('keys.placeSetup'), t('keys.managementKey')],
    [t('keys.placeModels'), t('keys.apiKey')],
  ];
  return (
    <table class="key-table">
      <caption>{t('keys.caption')}</caption>
      <thead>
        <tr>
          <th scope="col">{t('keys.place')}</th>
          <th scope="col">{t('keys.key')}</th>
        </tr>
      </thead>
      <tbody>
        {rows.map(([place, key]) => (
          <tr key={place}>
            <td>{place}</td>
            <td>{key}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function AuthFrame({ title, children, wide }: { title: string; children: ComponentChildren; wide?: boolean }) {
  return (
    <div class="auth-page">
      <div class="auth-toolbar">
        <DisplayControls />
      </div>
      <main class={`auth-card ${wide ? 'wide' : ''}`} id="main">
        <div class="brand auth-brand">
          <span class="brand-mark" aria-hidden="true">
            c
          </span>
          <span class="brand-name">cpamp</span>
        </div>
        <h1>{title}</h1>
        {children}
      </main>
    </div>
  );
}

export function LoginPage() {
  const [key, setKey] = useState('');
  const [remember, setRemember] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const endReason = useStore(sessionEndReason);

  const submit = async (event: Event) => {
    event.preventDefault();
    const trimmed = key.trim();
    if (!trimmed) {
      setError(new InputError(t('login.keyRequired')));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await api.checkKey(trimmed);
      logIn(trimmed, remember);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  return (
    <AuthFrame title={t('login.title')}>
      {endReason === SESSION_REJECTED && (
        <div class="banner warn" role="status">
          {t('login.sessionRejected')}
        </div>
      )}
      <form onSubmit={submit} class="form" data-testid="login-form">
        <TextField
          label={t('login.adminKey')}
          type="password"
          value={key}
          onInput={setKey}
          placeholder="cmp_admin_…"
          autoComplete="current-password"
          hint={t('login.adminKeyHint')}
          testId="login-key"
          autoFocus
        />
        <Checkbox label={t('login.remember')} checked={remember} onChange={setRemember} hint={t('login.rememberHint')} testId="login-remember" />
        {error !== null && <ErrorNote error={error} context="login" />}
        <button type="submit" class="button primary" disabled={busy} data-testid="login-submit">
          {busy ? t('common.checking') : t('login.submit')}
        </button>
      </form>
      <details class="help">
        <summary>{t('login.whichKey')}</summary>
        <KeyTable />
        <p>{t('login.lostKey')}</p>
      </details>
    </AuthFrame>
  );
}

type Step = 'adminKey' | 'cpaUrl' | 'managementKey' | 'monitoring' | 'collection' | 'review';

const MODES = ['auto', 'subscribe', 'http', 'resp'] as const;

/** Which step to go back to when the server rejects the setup with this code. */
function stepForCode(code: string): Step | null {
  switch (code) {
    case 'invalid_admin_key':
      return 'adminKey';
    case 'cpa_connection_required':
    case 'setup_env_managed':
    case 'request_failed':
      return 'cpaUrl';
    case 'invalid_existing_management_key':
    case 'management_api_validation_failed':
      return 'managementKey';
    case 'management_api_config_failed':
    case 'enable_cpa_usage_statistics_failed':
      return 'monitoring';
    case 'cpa_usage_retention_invalid':
    case 'poll_interval_exceeds_retention':
      return 'collection';
    default:
      return null;
  }
}

export function SetupWizard({ info, onDone }: { info: ServiceInfo; onDone: () => void }) {
  const existing = useStore(session);
  const [step, setStep] = useState<Step>(existing ? 'cpaUrl' : 'adminKey');
  const [adminKey, setAdminKey] = useState(existing?.key ?? '');
  const [url, setUrl] = useState('');
  const [managementKey, setManagementKey] = useState('');
  const [monitoring, setMonitoring] = useState(true);
  const [mode, setMode] = useState<string>('auto');
  const [poll, setPoll] = useState('500');
  const [remember, setRemember] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  const steps: Step[] = ['adminKey', 'cpaUrl', 'managementKey', 'monitoring', ...(monitoring ? (['collection'] as Step[]) : []), 'review'];
  const index = steps.indexOf(step);
  const go = (next: Step) => {
    setError(null);
    setStep(next);
  };
  const back = () => index > 0 && go(steps[index - 1]!);
  const forward = () => go(steps[index + 1]!);

  const localError = (message: string) => new InputError(message);

  const next = async (event: Event) => {
    event.preventDefault();
    setError(null);
    if (step === 'adminKey') {
      if (!adminKey.trim()) return setError(localError(t('setup.adminKeyRequired')));
      setBusy(true);
      try {
        await api.checkKey(adminKey.trim());
        forward();
      } catch (failure) {
        setError(failure);
      } finally {
        setBusy(false);
      }
      return;
    }
    if (step === 'cpaUrl') {
      if (!normalizeBaseUrl(url)) return setError(localError(t('setup.urlRequired')));
      try {
        new URL(normalizeBaseUrl(url));
      } catch {
        return setError(localError(t('setup.urlInvalid')));
      }
      return forward();
    }
    if (step === 'managementKey') {
      const trimmed = managementKey.trim();
      if (!trimmed) return setError(localError(t('setup.managementKeyRequired')));
      if (trimmed === adminKey.trim() || trimmed.startsWith('cmp_admin_')) {
        return setError(localError(t('setup.managementKeyIsAdmin')));
      }
      return forward();
    }
    if (step === 'collection') {
      const value = Number(poll);
      if (!Number.isInteger(value) || value < 50 || value > 3_600_000) return setError(localError(t('setup.pollInvalid')));
      return forward();
    }
    if (step === 'review') return submit();
    forward();
  };

  const submit = async () => {
    setBusy(true);
    try {
      await api.setup(adminKey.trim(), {
        cpaBaseUrl: normalizeBaseUrl(url),
        cpaManagementKey: managementKey.trim(),
        requestMonitoringEnabled: monitoring,
        ensureUsageStatisticsEnabled: monitoring,
        ...(monitoring ? { collectorMode: mode, pollIntervalMs: Number(poll) } : {}),
      });
      logIn(adminKey.trim(), remember);
      onDone();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  const failedStep = error instanceof ApiError && step === 'review' ? stepForCode(error.code) : null;
  const masked = (value: string) => (value.length <= 8 ? '••••' : `${value.slice(0, 4)}••••${value.slice(-2)}`);

  let body: ComponentChildren;
  switch (step) {
    case 'adminKey':
      body = (
        <>
          <p>{t('setup.adminKeyIntro')}</p>
          <pre class="log-line">CPA Manager Plus admin key generated: cmp_admin_…</pre>
          <TextField label={t('login.adminKey')} type="password" value={adminKey} onInput={setAdminKey} autoComplete="current-password" testId="setup-admin-key" autoFocus />
          <KeyTable />
        </>
      );
      break;
    case 'cpaUrl':
      body = (
        <>
          <p>{t('setup.urlIntro')}</p>
          <TextField
            label={t('setup.url')}
            value={url}
            onInput={setUrl}
            placeholder="http://127.0.0.1:8317"
            inputMode="url"
            testId="setup-url"
            hint={url.trim() ? t('setup.urlWillUse', { url: normalizeBaseUrl(url) }) : t('setup.urlHint')}
            autoFocus
          />
        </>
      );
      break;
    case 'managementKey':
      body = (
        <>
          <p>{t('setup.managementKeyIntro')}</p>
          <TextField label={t('setup.managementKey')} type="password" value={managementKey} onInput={setManagementKey} autoComplete="off" testId="setup-management-key" autoFocus />
          <KeyTable />
        </>
      );
      break;
    case 'monitoring':
      body = (
        <>
          <p>{t('setup.monitoringIntro')}</p>
          <Checkbox label={t('setup.monitoring')} checked={monitoring} onChange={setMonitoring} hint={t('setup.monitoringHint')} testId="setup-monitoring" />
        </>
      );
      break;
    case 'collection':
      body = (
        <>
          <p>{t('setup.collectionIntro')}</p>
          <SelectField
            label={t('setup.mode')}
            value={mode}
            onChange={setMode}
            options={MODES.map((value) => ({ value, label: t(`mode.${value}`) }))}
            testId="setup-mode"
          />
          <TextField label={t('setup.poll')} value={poll} onInput={setPoll} inputMode="numeric" hint={t('setup.pollHint')} testId="setup-poll" />
        </>
      );
      break;
    case 'review':
      body = (
        <>
          <dl class="review" data-testid="setup-review">
            <dt>{t('login.adminKey')}</dt>
            <dd>{masked(adminKey.trim())}</dd>
            <dt>{t('setup.url')}</dt>
            <dd>{normalizeBaseUrl(url)}</dd>
            <dt>{t('setup.managementKey')}</dt>
            <dd>{masked(managementKey.trim())}</dd>
            <dt>{t('setup.monitoring')}</dt>
            <dd>{monitoring ? t('common.on') : t('common.off')}</dd>
            {monitoring && (
              <>
                <dt>{t('setup.mode')}</dt>
                <dd>{t(`mode.${mode as (typeof MODES)[number]}`)}</dd>
                <dt>{t('setup.poll')}</dt>
                <dd>{poll} ms</dd>
              </>
            )}
          </dl>
          <Checkbox label={t('login.remember')} checked={remember} onChange={setRemember} hint={t('login.rememberHint')} />
        </>
      );
      break;
  }

  return (
    <AuthFrame title={t('setup.title')} wide>
      {info.setupReason && (
        <div class="banner warn" role="status">
          {info.setupReason}
        </div>
      )}
      <ol class="steps" aria-label={t('setup.progress')}>
        {steps.map((name, position) => (
          <li key={name} class={position === index ? 'current' : position < index ? 'done' : ''} aria-current={position === index ? 'step' : undefined}>
            <span class="step-number">{position + 1}</span>
            <span class="step-name">{t(`setup.step.${name}`)}</span>
          </li>
        ))}
      </ol>
      <form onSubmit={next} class="form" data-testid={`setup-step-${step}`}>
        <h2 class="step-title">{t(`setup.step.${step}`)}</h2>
        {body}
        {error !== null && <ErrorNote error={error} context={step === 'adminKey' ? 'login' : 'setup'} />}
        {failedStep && failedStep !== 'review' && (
          <button type="button" class="link-button" onClick={() => go(failedStep)}>
            {t('setup.fixStep', { step: t(`setup.step.${failedStep}`) })}
          </button>
        )}
        <div class="form-actions">
          {index > 0 && (
            <button type="button" class="button" onClick={back} disabled={busy}>
              {t('common.back')}
            </button>
          )}
          <button type="submit" class="button primary" disabled={busy} data-testid="setup-next">
            {busy ? t('common.checking') : step === 'review' ? t('setup.finish') : t('common.next')}
          </button>
        </div>
      </form>
    </AuthFrame>
  );
}

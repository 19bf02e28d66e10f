// Preset time ranges plus a custom range chosen in the panel's time zone.
import { useState } from 'preact/hooks';

import { InputError } from '../lib/errors';
import { t, tMaybe } from '../lib/i18n';
import { activeTimeZone } from '../lib/settings';
import { DAY_MS, fromLocalInput, toLocalInput, type TimeRange } from '../lib/time';
import { Dialog, ErrorNote, Segmented } from './ui';

export function RangePicker<T extends string>({
  value,
  custom,
  choices,
  onChange,
}: {
  value: T;
  custom?: TimeRange;
  choices: T[];
  onChange: (range: T, custom?: TimeRange) => void;
}) {
  const [editing, setEditing] = useState(false);
  const timeZone = activeTimeZone();
  const now = Date.now();
  const [from, setFrom] = useState(toLocalInput(custom?.fromMs ?? now - DAY_MS, timeZone));
  const [to, setTo] = useState(toLocalInput(custom?.toMs ?? now, timeZone));
  const [error, setError] = useState<unknown>(null);

  const apply = (event: Event) => {
    event.preventDefault();
    const fromMs = fromLocalInput(from, timeZone);
    const toMs = fromLocalInput(to, timeZone);
    if (!Number.isFinite(fromMs) || !Number.isFinite(toMs) || toMs <= fromMs) {
      setError(new InputError(t('range.invalid')));
      return;
    }
    onChange('custom' as T, { fromMs, toMs });
    setEditing(false);
  };

  return (
    <>
      <Segmented<T>
        label={t('range.label')}
        value={value}
        onChange={(next) => (next === 'custom' ? setEditing(true) : onChange(next))}
        choices={choices.map((choice) => ({ value: choice, label: tMaybe(`range.${choice}`) ?? choice }))}
        testId="range-picker"
      />
      {editing && (
        <Dialog
          title={t('range.customTitle')}
          onClose={() => setEditing(false)}
          footer={
            <>
              <button type="button" class="button" onClick={() => setEditing(false)}>
                {t('common.cancel')}
              </button>
              <button type="submit" form="custom-range" class="button primary">
                {t('common.apply')}
              </button>
            </>
          }
        >
          <form id="custom-range" class="form" onSubmit={apply}>
            <p class="muted small">{t('range.zoneHint', { zone: timeZone })}</p>
            <label class="field">
              <span>{t('range.from')}</span>
              <input type="datetime-local" value={from} onInput={(event) => setFrom(event.currentTarget.value)} />
            </label>
            <label class="field">
              <span>{t('range.to')}</span>
              <input type="datetime-local" value={to} onInput={(event) => setTo(event.currentTarget.value)} />
            </label>
            {error !== null && <ErrorNote error={error} />}
          </form>
        </Dialog>
      )}
    </>
  );
}

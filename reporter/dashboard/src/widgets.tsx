// Small shared pieces: range picker, refresh control, error and empty states, KPI tiles.
import { useState } from 'react';
import { ApiError } from './api';
import { PRESETS, Range, checkRange, dateInput, lastRange, parseDateInput } from './format';

export function RangePicker(props: { range: Range; onChange: (r: Range) => void }) {
  const [from, setFrom] = useState(dateInput(props.range.from));
  const [to, setTo] = useState(dateInput(props.range.to));
  const [err, setErr] = useState<string | null>(null);
  const apply = () => {
    const f = parseDateInput(from);
    const t = parseDateInput(to);
    if (f === null || t === null) return setErr('Pick both dates.');
    const r = { from: f, to: t + 86_400 };
    const e = checkRange(r);
    setErr(e);
    if (!e) props.onChange(r);
  };
  return (
    <div className="range" data-testid="range-picker">
      {PRESETS.map((p) => (
        <button
          key={p.label}
          type="button"
          onClick={() => {
            const r = lastRange(p.secs, Math.floor(Date.now() / 1000));
            setFrom(dateInput(r.from));
            setTo(dateInput(r.to));
            setErr(null);
            props.onChange(r);
          }}
        >
          Last {p.label}
        </button>
      ))}
      <label>
        From <input type="date" value={from} onChange={(e) => setFrom(e.target.value)} data-testid="range-from" />
      </label>
      <label>
        To <input type="date" value={to} onChange={(e) => setTo(e.target.value)} data-testid="range-to" />
      </label>
      <button type="button" onClick={apply} data-testid="range-apply">
        Apply
      </button>
      {err && <span className="field-error">{err}</span>}
    </div>
  );
}

export function Refresh(props: { everyMs: number; setEveryMs: (n: number) => void; updatedAt: number | null; loading: boolean; reload: () => void }) {
  return (
    <div className="refresh">
      <label>
        <input
          type="checkbox"
          checked={props.everyMs > 0}
          onChange={(e) => props.setEveryMs(e.target.checked ? 15_000 : 0)}
          data-testid="auto-refresh"
        />{' '}
        Auto-refresh (15 s)
      </label>
      <button type="button" onClick={props.reload} disabled={props.loading}>
        Refresh
      </button>
      <span className="muted" data-testid="updated-at">
        {props.loading ? 'Loading…' : props.updatedAt ? 'Updated ' + new Date(props.updatedAt).toLocaleTimeString() : ''}
      </span>
    </div>
  );
}

export function ErrorBox(props: { error: ApiError; retry?: () => void; onLogout?: () => void }) {
  const auth = props.error.status === 401;
  return (
    <div className="error" role="alert" data-testid="error">
      <strong>{auth ? 'Your session is no longer valid.' : props.error.status === 403 ? 'Not allowed.' : 'Something went wrong.'}</strong>{' '}
      {props.error.message}
      {props.retry && !auth && (
        <button type="button" onClick={props.retry}>
          Try again
        </button>
      )}
      {auth && props.onLogout && (
        <button type="button" onClick={props.onLogout}>
          Sign in again
        </button>
      )}
    </div>
  );
}

export function Empty(props: { children: React.ReactNode }) {
  return (
    <div className="empty" data-testid="empty">
      {props.children}
    </div>
  );
}

export function Kpi(props: { id: string; label: string; text: string; value: number | null }) {
  return (
    <div className="kpi">
      <div className="kpi-label">{props.label}</div>
      <div className="kpi-value" data-testid={'kpi-' + props.id} data-value={props.value ?? ''}>
        {props.text}
      </div>
    </div>
  );
}

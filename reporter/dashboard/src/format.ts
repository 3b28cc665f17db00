// Formatting and small pure helpers. Money arrives as integer micros and is formatted with
// integer arithmetic (no float rounding of amounts).

/** Integer micros → "1,234.56" (2 decimals, truncated toward zero like the API's integer math). */
export function money(micros: number, decimals = 2): string {
  const neg = micros < 0;
  const abs = Math.abs(Math.trunc(micros));
  const whole = Math.floor(abs / 1_000_000);
  const frac = abs % 1_000_000;
  const fracStr = String(frac).padStart(6, '0').slice(0, decimals);
  const s = integer(whole) + (decimals > 0 ? '.' + fracStr : '');
  return neg ? '-' + s : s;
}

/** 1234567 → "1,234,567". */
export function integer(n: number): string {
  const s = String(Math.trunc(Math.abs(n)));
  const out = s.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return n < 0 ? '-' + out : out;
}

/** 0.1234 → "12.34%"; null → "—". */
export function percent(r: number | null | undefined, decimals = 2): string {
  if (r === null || r === undefined || !Number.isFinite(r)) return '—';
  return (r * 100).toFixed(decimals) + '%';
}

/** Micros or null → money or "—". */
export function moneyOrDash(micros: number | null | undefined): string {
  return micros === null || micros === undefined ? '—' : money(micros);
}

/** Unix seconds → "2026-11-26 10:15" (UTC). */
export function utc(t: number): string {
  return new Date(t * 1000).toISOString().slice(0, 16).replace('T', ' ');
}

/** Unix seconds → "2026-11-26" (UTC), for <input type="date">. */
export function dateInput(t: number): string {
  return new Date(t * 1000).toISOString().slice(0, 10);
}

/** "2026-11-26" → Unix seconds at 00:00 UTC, or null. */
export function parseDateInput(s: string): number | null {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(s)) return null;
  const t = Date.parse(s + 'T00:00:00Z');
  return Number.isNaN(t) ? null : Math.floor(t / 1000);
}

export interface Range {
  from: number;
  to: number;
}

export const PRESETS: { label: string; secs: number }[] = [
  { label: '1h', secs: 3600 },
  { label: '24h', secs: 86_400 },
  { label: '7d', secs: 7 * 86_400 },
  { label: '30d', secs: 30 * 86_400 },
];

/** The last `secs` seconds up to `now` (seconds). */
export function lastRange(secs: number, now: number): Range {
  return { from: now - secs, to: now };
}

/** Validates a user-picked range: from < to, at most 400 days. */
export function checkRange(r: Range): string | null {
  if (!(r.from < r.to)) return 'The start must be before the end.';
  if (r.to - r.from > 400 * 86_400) return 'Pick at most 400 days.';
  return null;
}

/** The hours / days / minutes step the API will pick for a range (mirrors Granularity::auto). */
export function autoGranularity(span: number): 'minute' | 'hour' | 'day' {
  if (span <= 6 * 3600) return 'minute';
  if (span <= 31 * 86_400) return 'hour';
  return 'day';
}

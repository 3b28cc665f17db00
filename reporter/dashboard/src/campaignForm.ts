// Campaign form state ⇄ the API's campaign spec (docs/CAMPAIGNS.md), money as exact integer
// micros (never floats), and the API's field errors ({field, problem}) placed next to inputs.

export interface CreativeForm {
  id: string;
  type: 'banner' | 'video' | 'native';
  w: string;
  h: string;
  adm: string;
}

export interface CampaignForm {
  name: string;
  status: 'active' | 'paused';
  strategy: 'fixed' | 'segments';
  bid: string; // USD CPM
  maxBid: string;
  multipliers: string; // "segment:bp" per line
  total: string; // USD
  daily: string;
  pacing: 'even' | 'asap';
  capImpressions: string;
  capWindowS: string;
  countries: string;
  deviceTypes: string;
  os: string;
  domainsAllow: string;
  domainsDeny: string;
  creatives: CreativeForm[];
}

export interface FieldError {
  field: string;
  problem: string;
}

export const emptyForm = (): CampaignForm => ({
  name: '',
  status: 'active',
  strategy: 'fixed',
  bid: '',
  maxBid: '',
  multipliers: '',
  total: '',
  daily: '',
  pacing: 'even',
  capImpressions: '',
  capWindowS: '',
  countries: '',
  deviceTypes: '',
  os: '',
  domainsAllow: '',
  domainsDeny: '',
  creatives: [{ id: '1', type: 'banner', w: '300', h: '250', adm: '' }],
});

/** "2.5" → 2500000; "" → null; anything else → NaN (sent as is so the API names the field). */
export function toMicros(usd: string): number | null {
  const s = usd.trim().replace(/,/g, '');
  if (s === '') return null;
  const m = /^(-?)(\d+)(?:\.(\d{0,6}))?$/.exec(s);
  if (!m) return NaN;
  const frac = (m[3] ?? '').padEnd(6, '0');
  const v = Number(m[2]) * 1_000_000 + Number(frac);
  return m[1] ? -v : v;
}

export function fromMicros(micros: number | null | undefined): string {
  if (micros === null || micros === undefined) return '';
  const neg = micros < 0;
  const a = Math.abs(micros);
  const frac = String(a % 1_000_000).padStart(6, '0').replace(/0+$/, '');
  return (neg ? '-' : '') + Math.floor(a / 1_000_000) + (frac ? '.' + frac : '');
}

const list = (s: string) =>
  s
    .split(/[,\n]/)
    .map((x) => x.trim())
    .filter((x) => x !== '');
const num = (s: string) => (s.trim() === '' ? null : Number(s.trim()));
// A value that is not a number is sent as the text, so the API's error names the field.
const numOrText = (s: string) => {
  const n = num(s);
  return n !== null && Number.isNaN(n) ? s : n;
};
const moneyOrText = (s: string) => {
  const n = toMicros(s);
  return n !== null && Number.isNaN(n) ? s : n;
};

/** The spec sent to the API (unset optional fields left out). */
export function toSpec(f: CampaignForm): Record<string, unknown> {
  const spec: Record<string, unknown> = {
    name: f.name,
    status: f.status,
    bid_cpm_micros: moneyOrText(f.bid) ?? 0,
    total_budget_micros: moneyOrText(f.total) ?? 0,
    pacing: f.pacing,
    creatives: f.creatives.map((c) => ({
      id: numOrText(c.id),
      format: c.type === 'banner' ? { type: 'banner', w: numOrText(c.w), h: numOrText(c.h) } : { type: c.type },
      adm: c.adm,
    })),
  };
  const max = moneyOrText(f.maxBid);
  if (max !== null) spec.max_cpm_micros = max;
  if (f.strategy === 'segments') {
    spec.segment_multipliers = list(f.multipliers).map((l) => {
      const [seg, bp] = l.split(':').map((x) => x.trim());
      return { segment: numOrText(seg ?? ''), multiplier_bp: numOrText(bp ?? '') };
    });
  }
  const daily = moneyOrText(f.daily);
  if (daily !== null) spec.daily_budget_micros = daily;
  if (f.capImpressions.trim() !== '' || f.capWindowS.trim() !== '') {
    spec.frequency_cap = { impressions: numOrText(f.capImpressions) ?? 0, window_s: numOrText(f.capWindowS) ?? 0 };
  }
  const t: Record<string, unknown> = {};
  if (list(f.countries).length) t.countries = list(f.countries);
  if (list(f.deviceTypes).length) t.device_types = list(f.deviceTypes).map(numOrText);
  if (list(f.os).length) t.os = list(f.os);
  if (list(f.domainsAllow).length) t.domains_allow = list(f.domainsAllow);
  if (list(f.domainsDeny).length) t.domains_deny = list(f.domainsDeny);
  if (Object.keys(t).length) spec.targeting = t;
  return spec;
}

/** The form for a stored spec (fields the form does not edit are kept by the caller). */
export function fromSpec(s: Record<string, any>): CampaignForm {
  const t = s.targeting ?? {};
  const mult: { segment: number; multiplier_bp: number }[] = s.segment_multipliers ?? [];
  return {
    name: s.name ?? '',
    status: s.status === 'paused' ? 'paused' : 'active',
    strategy: mult.length ? 'segments' : 'fixed',
    bid: fromMicros(s.bid_cpm_micros),
    maxBid: fromMicros(s.max_cpm_micros),
    multipliers: mult.map((m) => `${m.segment}:${m.multiplier_bp}`).join('\n'),
    total: fromMicros(s.total_budget_micros),
    daily: fromMicros(s.daily_budget_micros),
    pacing: s.pacing === 'asap' ? 'asap' : 'even',
    capImpressions: s.frequency_cap ? String(s.frequency_cap.impressions) : '',
    capWindowS: s.frequency_cap ? String(s.frequency_cap.window_s) : '',
    countries: (t.countries ?? []).join(', '),
    deviceTypes: (t.device_types ?? []).join(', '),
    os: (t.os ?? []).join(', '),
    domainsAllow: (t.domains_allow ?? []).join(', '),
    domainsDeny: (t.domains_deny ?? []).join(', '),
    creatives: (s.creatives ?? []).map((c: any) => ({
      id: String(c.id),
      type: c.format?.type ?? 'banner',
      w: c.format?.w !== undefined ? String(c.format.w) : '',
      h: c.format?.h !== undefined ? String(c.format.h) : '',
      adm: c.adm ?? '',
    })),
  };
}

/** Which input an API field error belongs to (`creatives[0].adm` → `creatives`). */
export function errorKey(field: string): string {
  if (field.startsWith('creatives')) return 'creatives';
  if (field.startsWith('frequency_cap')) return 'frequency_cap';
  if (field.startsWith('segment_multipliers')) return 'segment_multipliers';
  return field;
}

/** Field errors grouped by input key. */
export function byKey(errors: FieldError[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const e of errors) (out[errorKey(e.field)] ??= []).push(`${e.field}: ${e.problem}`);
  return out;
}

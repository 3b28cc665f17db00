import { describe, expect, it } from 'vitest';
import { byKey, emptyForm, fromMicros, fromSpec, toMicros, toSpec } from './campaignForm';

describe('campaign form', () => {
  it('converts money exactly', () => {
    expect(toMicros('2.5')).toBe(2_500_000);
    expect(toMicros('1,000.000001')).toBe(1_000_000_001);
    expect(toMicros('')).toBeNull();
    expect(Number.isNaN(toMicros('abc'))).toBe(true);
    expect(fromMicros(2_500_000)).toBe('2.5');
    expect(fromMicros(5_000_000_000)).toBe('5000');
  });
  it('round-trips a spec', () => {
    const f = { ...emptyForm(), name: 'x', bid: '2', total: '100', countries: 'USA, CAN', capImpressions: '3', capWindowS: '3600' };
    f.creatives[0].adm = '<b>ad</b>';
    const s = toSpec(f);
    expect(s.bid_cpm_micros).toBe(2_000_000);
    expect(s.targeting).toEqual({ countries: ['USA', 'CAN'] });
    expect(s.frequency_cap).toEqual({ impressions: 3, window_s: 3600 });
    expect(fromSpec(s as any)).toEqual({ ...f, countries: 'USA, CAN' });
  });
  it('puts API errors next to their inputs', () => {
    const k = byKey([
      { field: 'bid_cpm_micros', problem: 'must be > 0' },
      { field: 'creatives[].format', problem: 'banner w and h must be 1..=10000' },
    ]);
    expect(Object.keys(k).sort()).toEqual(['bid_cpm_micros', 'creatives']);
  });
});

import { describe, expect, it } from 'vitest';
import { autoGranularity, checkRange, integer, money, parseDateInput, percent, dateInput } from './format';

describe('money', () => {
  it('formats integer micros without float rounding', () => {
    expect(money(0)).toBe('0.00');
    expect(money(1_234_567_891)).toBe('1,234.56');
    expect(money(999_999)).toBe('0.99');
    expect(money(-2_500_000)).toBe('-2.50');
    expect(money(12_345_678, 6)).toBe('12.345678');
    expect(money(9_007_199_254_740_991)).toBe('9,007,199,254.74');
  });
});

describe('integer and percent', () => {
  it('groups thousands', () => {
    expect(integer(0)).toBe('0');
    expect(integer(1234567)).toBe('1,234,567');
    expect(integer(-1000)).toBe('-1,000');
  });
  it('shows ratios', () => {
    expect(percent(0.25)).toBe('25.00%');
    expect(percent(null)).toBe('—');
  });
});

describe('ranges', () => {
  it('parses date inputs as UTC midnight', () => {
    expect(parseDateInput('1970-01-02')).toBe(86_400);
    expect(parseDateInput('nope')).toBeNull();
    expect(dateInput(86_400)).toBe('1970-01-02');
  });
  it('refuses inverted and huge ranges', () => {
    expect(checkRange({ from: 10, to: 5 })).not.toBeNull();
    expect(checkRange({ from: 0, to: 401 * 86_400 })).not.toBeNull();
    expect(checkRange({ from: 0, to: 86_400 })).toBeNull();
  });
  it('picks the granularity like the API', () => {
    expect(autoGranularity(3600)).toBe('minute');
    expect(autoGranularity(7 * 86_400)).toBe('hour');
    expect(autoGranularity(90 * 86_400)).toBe('day');
  });
});

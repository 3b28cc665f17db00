// The reporter API client: bearer token from the login, typed responses, errors carrying the
// API's JSON body ({error, message}).

export interface Figures {
  bids: number;
  nobids: number;
  wins: number;
  losses: number;
  impressions: number;
  clicks: number;
  spend_micros: number;
  win_rate: number | null;
  ecpm_micros: number | null;
  ctr: number | null;
  avg_bid_cpm_micros: number | null;
}

export interface Campaign {
  campaign_id: number;
  advertiser_id: number;
  name: string;
  status: 'active' | 'paused' | 'archived' | 'unknown';
  delivering: boolean;
  budget_micros: number | null;
  start_at: number | null;
  end_at: number | null;
  last_event_at: number | null;
  figures: Figures;
}

export interface Point extends Figures {
  t: number;
}

export interface Stats {
  from: number;
  to: number;
  step: number;
  granularity: 'minute' | 'hour' | 'day';
  series: { key: string; totals: Figures; points: Point[] }[];
}

export interface Pacing {
  campaign_id: number;
  budget_micros: number | null;
  start_at?: number;
  end_at?: number | null;
  spent_micros: number;
  expected_micros?: number | null;
  pace?: number | null;
  points: { t: number; spent_micros: number; target_micros: number | null }[];
}

export interface Me {
  sub: string;
  role: 'advertiser' | 'operator';
  advertiser_id: number | null;
  exp: number;
}

export interface TopSite {
  site_or_app: string;
  figures: Figures;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

const TOKEN_KEY = 'helios.token';

export function savedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(t: string | null): void {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export async function get<T>(token: string, path: string, params: Record<string, string | number | undefined> = {}): Promise<T> {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
  const url = '/api/v1' + path + (q.toString() ? '?' + q.toString() : '');
  let resp: Response;
  try {
    resp = await fetch(url, { headers: { Authorization: 'Bearer ' + token } });
  } catch (e) {
    throw new ApiError(0, 'network', 'The reporter cannot be reached: ' + String(e));
  }
  if (!resp.ok) {
    let code = 'error';
    let message = resp.statusText;
    try {
      const body = await resp.json();
      code = body.error ?? code;
      message = body.message ?? message;
    } catch {
      /* not JSON */
    }
    throw new ApiError(resp.status, code, message);
  }
  return (await resp.json()) as T;
}

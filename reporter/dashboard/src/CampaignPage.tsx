// One campaign: key figures, impressions & spend, win rate & eCPM, pacing against the target,
// top sites — over the picked range, refreshed on demand or automatically.
import { useMemo } from 'react';
import { Campaign, Pacing, Stats, TopSite, get } from './api';
import { integer, money, moneyOrDash, percent, Range, utc } from './format';
import { useLoad } from './hooks';
import { LineChart } from './LineChart';
import { Empty, ErrorBox, Kpi, RangePicker, Refresh } from './widgets';

interface Data {
  campaign: Campaign;
  stats: Stats;
  pacing: Pacing;
  sites: TopSite[];
}

export function CampaignPage(props: {
  token: string;
  id: number;
  range: Range;
  setRange: (r: Range) => void;
  refreshMs: number;
  setRefreshMs: (n: number) => void;
  onLogout: () => void;
}) {
  const { token, id, range } = props;
  const load = useLoad<Data>(
    async () => {
      const p = { from: range.from, to: range.to };
      const [c, stats, pacing, sites] = await Promise.all([
        get<{ campaign: Campaign }>(token, '/campaigns/' + id, p),
        get<Stats>(token, '/stats', { ...p, campaign_id: id }),
        get<Pacing>(token, '/campaigns/' + id + '/pacing'),
        get<{ items: TopSite[] }>(token, '/top-sites', { ...p, campaign_id: id, limit: 10 }),
      ]);
      return { campaign: c.campaign, stats, pacing, sites: sites.items };
    },
    [token, id, range.from, range.to],
    props.refreshMs,
  );

  const series = load.data?.stats.series[0];
  const charts = useMemo(() => {
    const pts = series?.points ?? [];
    return {
      labels: pts.map((p) => utc(p.t)),
      imps: pts.map((p) => p.impressions),
      spend: pts.map((p) => p.spend_micros / 1e6),
      winRate: pts.map((p) => (p.win_rate === null ? null : p.win_rate * 100)),
      ecpm: pts.map((p) => (p.ecpm_micros === null ? null : p.ecpm_micros / 1e6)),
    };
  }, [series]);
  const pacing = load.data?.pacing;
  const pace = useMemo(() => {
    const pts = pacing?.points ?? [];
    return {
      labels: pts.map((p) => utc(p.t)),
      spent: pts.map((p) => p.spent_micros / 1e6),
      target: pts.map((p) => (p.target_micros === null ? null : p.target_micros / 1e6)),
    };
  }, [pacing]);

  const c = load.data?.campaign;
  const f = c?.figures;
  return (
    <section>
      <p>
        <a href="#/">← All campaigns</a>
      </p>
      <div className="toolbar">
        <h2 data-testid="campaign-name">{c ? c.name : 'Campaign #' + id}</h2>
        {c && <span className={'status status-' + c.status}>{c.status}</span>}
        <RangePicker range={range} onChange={props.setRange} />
        <Refresh everyMs={props.refreshMs} setEveryMs={props.setRefreshMs} updatedAt={load.updatedAt} loading={load.loading} reload={load.reload} />
      </div>
      <p className="muted">
        {utc(range.from)} – {utc(range.to)} UTC
      </p>
      {load.error && <ErrorBox error={load.error} retry={load.reload} onLogout={props.onLogout} />}
      {c && f && (
        <>
          <div className="kpis">
            <Kpi id="impressions" label="Impressions" text={integer(f.impressions)} value={f.impressions} />
            <Kpi id="spend" label="Spend" text={money(f.spend_micros)} value={f.spend_micros} />
            <Kpi id="bids" label="Bids" text={integer(f.bids)} value={f.bids} />
            <Kpi id="wins" label="Wins" text={integer(f.wins)} value={f.wins} />
            <Kpi id="win-rate" label="Win rate" text={percent(f.win_rate)} value={f.win_rate} />
            <Kpi id="ecpm" label="eCPM" text={moneyOrDash(f.ecpm_micros)} value={f.ecpm_micros} />
            <Kpi id="clicks" label="Clicks" text={integer(f.clicks)} value={f.clicks} />
            <Kpi id="ctr" label="CTR" text={percent(f.ctr)} value={f.ctr} />
          </div>
          {f.bids === 0 && f.impressions === 0 && <Empty>No activity in this range. Pick a longer range or wait for traffic.</Empty>}
          <div className="grid">
            <div className="panel">
              <h3>Impressions and spend ({load.data?.stats.granularity})</h3>
              <LineChart
                id="chart-delivery"
                labels={charts.labels}
                lines={[
                  { label: 'Impressions', data: charts.imps, color: '#2563eb' },
                  { label: 'Spend', data: charts.spend, color: '#16a34a', axis: 'y1' },
                ]}
                yTitle="impressions"
                y1Title="spend"
              />
            </div>
            <div className="panel">
              <h3>Win rate and eCPM</h3>
              <LineChart
                id="chart-efficiency"
                labels={charts.labels}
                lines={[
                  { label: 'Win rate %', data: charts.winRate, color: '#9333ea' },
                  { label: 'eCPM', data: charts.ecpm, color: '#ea580c', axis: 'y1' },
                ]}
                yTitle="%"
                y1Title="eCPM"
              />
            </div>
            <div className="panel">
              <h3>Pacing</h3>
              <p className="muted small" data-testid="pacing-summary">
                Spent {money(pacing?.spent_micros ?? 0)}
                {pacing?.budget_micros != null ? ' of ' + money(pacing.budget_micros) : ' (no budget set)'}
                {pacing?.expected_micros != null ? ' · target now ' + money(pacing.expected_micros) : ''}
                {pacing?.pace != null ? ' · pace ' + percent(pacing.pace, 0) : ''}
              </p>
              <LineChart
                id="chart-pacing"
                labels={pace.labels}
                lines={[
                  { label: 'Spent', data: pace.spent, color: '#16a34a' },
                  { label: 'Target', data: pace.target, color: '#64748b', dashed: true },
                ]}
                yTitle="cumulative spend"
              />
            </div>
            <div className="panel">
              <h3>Top sites and apps</h3>
              {load.data && load.data.sites.length === 0 ? (
                <Empty>No impressions in this range.</Empty>
              ) : (
                <table data-testid="top-sites">
                  <thead>
                    <tr>
                      <th>Site / app</th>
                      <th className="num">Impressions</th>
                      <th className="num">Spend</th>
                      <th className="num">CTR</th>
                    </tr>
                  </thead>
                  <tbody>
                    {load.data?.sites.map((s) => (
                      <tr key={s.site_or_app}>
                        <td>{s.site_or_app || '(unknown)'}</td>
                        <td className="num">{integer(s.figures.impressions)}</td>
                        <td className="num">{money(s.figures.spend_micros)}</td>
                        <td className="num">{percent(s.figures.ctr)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </div>
          </div>
        </>
      )}
    </section>
  );
}

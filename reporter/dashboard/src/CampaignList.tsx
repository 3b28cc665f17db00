// Campaign list: status and key figures over the picked range.
import { Campaign, get } from './api';
import { integer, money, moneyOrDash, percent, Range, utc } from './format';
import { useLoad } from './hooks';
import { Empty, ErrorBox, RangePicker, Refresh } from './widgets';

export function CampaignList(props: {
  token: string;
  range: Range;
  setRange: (r: Range) => void;
  refreshMs: number;
  setRefreshMs: (n: number) => void;
  onLogout: () => void;
}) {
  const { token, range } = props;
  const list = useLoad(
    () => get<{ items: Campaign[] }>(token, '/campaigns', { from: range.from, to: range.to }),
    [token, range.from, range.to],
    props.refreshMs,
  );
  const items = list.data?.items ?? [];
  return (
    <section>
      <div className="toolbar">
        <h2>Campaigns</h2>
        <RangePicker range={range} onChange={props.setRange} />
        <Refresh everyMs={props.refreshMs} setEveryMs={props.setRefreshMs} updatedAt={list.updatedAt} loading={list.loading} reload={list.reload} />
      </div>
      <p className="muted">
        {utc(range.from)} – {utc(range.to)} UTC
      </p>
      {list.error && <ErrorBox error={list.error} retry={list.reload} onLogout={props.onLogout} />}
      {!list.error && list.data && items.length === 0 && (
        <Empty>No campaigns yet: nothing has been bid for this advertiser. Figures appear here within seconds of the first bid.</Empty>
      )}
      {items.length > 0 && (
        <table className="campaigns" data-testid="campaign-table">
          <thead>
            <tr>
              <th>Campaign</th>
              <th>Status</th>
              <th className="num">Impressions</th>
              <th className="num">Spend</th>
              <th className="num">Bids</th>
              <th className="num">Win rate</th>
              <th className="num">eCPM</th>
              <th className="num">CTR</th>
              <th className="num">Budget</th>
            </tr>
          </thead>
          <tbody>
            {items.map((c) => (
              <tr key={c.advertiser_id + ':' + c.campaign_id} data-testid={'campaign-row-' + c.campaign_id}>
                <td>
                  <a href={'#/campaigns/' + c.campaign_id} data-testid={'campaign-link-' + c.campaign_id}>
                    {c.name}
                  </a>
                  <div className="muted small">#{c.campaign_id}</div>
                </td>
                <td>
                  <span className={'status status-' + c.status}>{c.status}</span>{' '}
                  {c.delivering && <span className="status status-live">delivering</span>}
                </td>
                <td className="num" data-value={c.figures.impressions}>
                  {integer(c.figures.impressions)}
                </td>
                <td className="num" data-value={c.figures.spend_micros}>
                  {money(c.figures.spend_micros)}
                </td>
                <td className="num">{integer(c.figures.bids)}</td>
                <td className="num">{percent(c.figures.win_rate)}</td>
                <td className="num">{moneyOrDash(c.figures.ecpm_micros)}</td>
                <td className="num">{percent(c.figures.ctr)}</td>
                <td className="num">{moneyOrDash(c.budget_micros)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

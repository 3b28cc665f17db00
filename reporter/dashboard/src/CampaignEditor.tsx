// Create (#/campaigns/new) and edit (#/campaigns/<id>/edit) a campaign: targeting, bid strategy,
// budget, pacing, frequency cap, creatives with a sandboxed preview. The API validates with the
// bidder's own rules; its field errors ({field, problem}) are shown next to the inputs.
import { useEffect, useState } from 'react';
import { CampaignForm, CreativeForm, FieldError, byKey, emptyForm, fromSpec, toSpec } from './campaignForm';

interface Sent {
  status: number;
  body: any;
}

async function send(token: string, method: string, path: string, body?: unknown): Promise<Sent> {
  const resp = await fetch('/api/v1' + path, {
    method,
    headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let json: any = null;
  try {
    json = await resp.json();
  } catch {
    /* not JSON */
  }
  return { status: resp.status, body: json };
}

// The "saved" message of a create, carried over to the edit page the create navigates to.
let carried: string | null = null;

function Errors(props: { errs: Record<string, string[]>; k: string }) {
  const list = props.errs[props.k];
  if (!list) return null;
  return (
    <div className="field-error" role="alert" data-testid={'err-' + props.k}>
      {list.join('; ')}
    </div>
  );
}

export function CampaignEditor(props: { token: string; id: number | null }) {
  const [form, setForm] = useState<CampaignForm>(emptyForm());
  const [stored, setStored] = useState<Record<string, unknown>>({});
  const [errors, setErrors] = useState<FieldError[]>([]);
  const [message, setMessage] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(() => {
    const c = carried;
    carried = null;
    return c;
  });
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (props.id === null) return;
    send(props.token, 'GET', `/campaigns/${props.id}/spec`).then((r) => {
      if (r.status === 200) {
        setStored(r.body.spec);
        setForm(fromSpec(r.body.spec));
      } else setMessage(r.body?.message ?? 'HTTP ' + r.status);
    });
  }, [props.id, props.token]);

  const set = <K extends keyof CampaignForm>(k: K, v: CampaignForm[K]) => setForm({ ...form, [k]: v });
  const setCr = (i: number, c: Partial<CreativeForm>) =>
    set('creatives', form.creatives.map((x, j) => (j === i ? { ...x, ...c } : x)));
  const errs = byKey(errors);
  const shown = new Set(['name', 'status', 'bid_cpm_micros', 'max_cpm_micros', 'segment_multipliers', 'total_budget_micros',
    'daily_budget_micros', 'pacing', 'frequency_cap', 'targeting.countries', 'targeting.device_types', 'targeting.os',
    'targeting.domains_allow', 'targeting.domains_deny', 'creatives']);
  const other = Object.entries(errs).filter(([k]) => !shown.has(k));

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setSaved(null);
    setMessage(null);
    // Fields the form does not edit (e.g. flight dates, other targeting) are kept.
    const spec = { ...stored, ...toSpec(form) };
    if (form.strategy === 'fixed') delete (spec as any).segment_multipliers;
    const r =
      props.id === null
        ? await send(props.token, 'POST', '/campaigns', spec)
        : await send(props.token, 'PUT', `/campaigns/${props.id}/spec`, spec);
    setBusy(false);
    if (r.status === 200) {
      setErrors([]);
      const msg =
        `Saved: campaign ${r.body.campaign_id}, version ${r.body.result?.version}, campaign set ${r.body.set_version}` +
        (r.body.published ? ' (live)' : ' (publishing…)');
      setSaved(msg);
      carried = props.id === null ? msg : null;
      setStored(r.body.result?.spec ?? spec);
      if (props.id === null) window.location.hash = `#/campaigns/${r.body.campaign_id}/edit`;
    } else if (r.status === 422) {
      setErrors(r.body?.errors ?? []);
    } else {
      setErrors([]);
      setMessage(r.body?.message ?? 'HTTP ' + r.status);
    }
  };

  const status = async (s: string) => {
    if (props.id === null) return;
    const r = await send(props.token, 'PUT', `/campaigns/${props.id}/status`, { status: s });
    if (r.status === 200) {
      setStored(r.body.result.spec);
      setForm(fromSpec(r.body.result.spec));
      setSaved(`Status: ${s}, campaign set ${r.body.set_version}`);
    } else setMessage(r.body?.message ?? 'HTTP ' + r.status);
  };

  const input = (k: keyof CampaignForm, label: string, testid: string, errKey: string, placeholder = '') => (
    <label className="fld">
      <span>{label}</span>
      <input value={form[k] as string} onChange={(e) => set(k, e.target.value as any)} data-testid={testid} placeholder={placeholder} />
      <Errors errs={errs} k={errKey} />
    </label>
  );

  return (
    <form className="editor" onSubmit={submit} data-testid="campaign-editor">
      <div className="toolbar">
        <h2>{props.id === null ? 'New campaign' : `Edit campaign ${props.id}`}</h2>
        {props.id !== null && (
          <>
            <a href={`#/campaigns/${props.id}`}>Report</a>
            <button type="button" onClick={() => status('paused')} data-testid="pause">Pause</button>
            <button type="button" onClick={() => status('active')} data-testid="resume">Resume</button>
            <button type="button" onClick={() => confirm('Archive this campaign? It stops bidding for good.') && status('archived')} data-testid="archive">Archive</button>
          </>
        )}
      </div>
      {message && <div className="error" data-testid="editor-error">{message}</div>}
      {saved && <div className="saved" data-testid="saved">{saved}</div>}
      {other.map(([k, v]) => (
        <div className="field-error" key={k} data-testid={'err-' + k}>{v.join('; ')}</div>
      ))}
      <fieldset>
        <legend>Campaign</legend>
        {input('name', 'Name', 'f-name', 'name')}
        <label className="fld">
          <span>Status</span>
          <select value={form.status} onChange={(e) => set('status', e.target.value as any)} data-testid="f-status">
            <option value="active">active</option>
            <option value="paused">paused</option>
          </select>
        </label>
      </fieldset>
      <fieldset>
        <legend>Bid strategy</legend>
        <label className="fld">
          <span>Strategy</span>
          <select value={form.strategy} onChange={(e) => set('strategy', e.target.value as any)} data-testid="f-strategy">
            <option value="fixed">Fixed CPM</option>
            <option value="segments">Base CPM × segment multipliers</option>
          </select>
        </label>
        {input('bid', 'Bid CPM (USD)', 'f-bid', 'bid_cpm_micros', '2.50')}
        {input('maxBid', 'Max CPM (USD)', 'f-max-bid', 'max_cpm_micros')}
        {form.strategy === 'segments' && (
          <label className="fld">
            <span>Multipliers (segment:basis points, one a line)</span>
            <textarea value={form.multipliers} onChange={(e) => set('multipliers', e.target.value)} data-testid="f-multipliers" rows={3} />
            <Errors errs={errs} k="segment_multipliers" />
          </label>
        )}
      </fieldset>
      <fieldset>
        <legend>Budget and pacing</legend>
        {input('total', 'Total budget (USD)', 'f-total', 'total_budget_micros')}
        {input('daily', 'Daily budget (USD)', 'f-daily', 'daily_budget_micros')}
        <label className="fld">
          <span>Pacing</span>
          <select value={form.pacing} onChange={(e) => set('pacing', e.target.value as any)} data-testid="f-pacing">
            <option value="even">even over the day</option>
            <option value="asap">as fast as possible</option>
          </select>
        </label>
        <div className="fld">
          <span>Frequency cap</span>
          <span>
            <input value={form.capImpressions} onChange={(e) => set('capImpressions', e.target.value)} data-testid="f-cap-imps" placeholder="impressions" size={8} />
            {' per '}
            <input value={form.capWindowS} onChange={(e) => set('capWindowS', e.target.value)} data-testid="f-cap-window" placeholder="seconds" size={8} />
          </span>
          <Errors errs={errs} k="frequency_cap" />
        </div>
      </fieldset>
      <fieldset>
        <legend>Targeting</legend>
        {input('countries', 'Countries (ISO alpha-3)', 'f-countries', 'targeting.countries', 'USA, CAN')}
        {input('deviceTypes', 'Device types (OpenRTB 1–7)', 'f-devices', 'targeting.device_types')}
        {input('os', 'Operating systems', 'f-os', 'targeting.os', 'ios, android')}
        {input('domainsAllow', 'Only these sites', 'f-domains-allow', 'targeting.domains_allow')}
        {input('domainsDeny', 'Never these sites', 'f-domains-deny', 'targeting.domains_deny')}
      </fieldset>
      <fieldset>
        <legend>Creatives</legend>
        <Errors errs={errs} k="creatives" />
        {form.creatives.map((c, i) => (
          <div className="creative" key={i} data-testid={'creative-' + i}>
            <label className="fld">
              <span>Id</span>
              <input value={c.id} onChange={(e) => setCr(i, { id: e.target.value })} size={6} data-testid={`cr-${i}-id`} />
            </label>
            <label className="fld">
              <span>Format</span>
              <select value={c.type} onChange={(e) => setCr(i, { type: e.target.value as any })} data-testid={`cr-${i}-type`}>
                <option value="banner">banner</option>
                <option value="video">video</option>
                <option value="native">native</option>
              </select>
            </label>
            {c.type === 'banner' && (
              <span>
                <input value={c.w} onChange={(e) => setCr(i, { w: e.target.value })} size={5} data-testid={`cr-${i}-w`} aria-label="width" />
                {' × '}
                <input value={c.h} onChange={(e) => setCr(i, { h: e.target.value })} size={5} data-testid={`cr-${i}-h`} aria-label="height" />
              </span>
            )}
            <label className="fld">
              <span>Markup</span>
              <textarea value={c.adm} onChange={(e) => setCr(i, { adm: e.target.value })} rows={3} data-testid={`cr-${i}-adm`} />
            </label>
            <div className="preview">
              <span className="muted small">Preview</span>
              {/* Sandboxed: no scripts, no same-origin access to the dashboard. */}
              <iframe
                title={'preview ' + c.id}
                sandbox=""
                srcDoc={c.adm}
                width={c.type === 'banner' ? Number(c.w) || 300 : 300}
                height={c.type === 'banner' ? Number(c.h) || 250 : 250}
                data-testid={`cr-${i}-preview`}
              />
            </div>
            <button type="button" onClick={() => set('creatives', form.creatives.filter((_, j) => j !== i))} data-testid={`cr-${i}-remove`}>
              Remove
            </button>
          </div>
        ))}
        <button
          type="button"
          onClick={() =>
            set('creatives', [...form.creatives, { id: String(Math.max(0, ...form.creatives.map((c) => Number(c.id) || 0)) + 1), type: 'banner', w: '300', h: '250', adm: '' }])
          }
          data-testid="add-creative"
        >
          Add creative
        </button>
      </fieldset>
      <button type="submit" disabled={busy} data-testid="save">
        {busy ? 'Saving…' : props.id === null ? 'Create campaign' : 'Save changes'}
      </button>
    </form>
  );
}

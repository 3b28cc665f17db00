// The shell: login state, hash routes (#/ list, #/campaigns/<id>), shared range and refresh.
import { useEffect, useState } from 'react';
import { Me, get, saveToken, savedToken } from './api';
import { CampaignList } from './CampaignList';
import { CampaignEditor } from './CampaignEditor';
import { CampaignPage } from './CampaignPage';
import { Range, lastRange } from './format';
import { Login } from './Login';

function route(): { page: 'list' } | { page: 'campaign'; id: number } | { page: 'edit'; id: number | null } {
  if (window.location.hash === '#/campaigns/new') return { page: 'edit', id: null };
  const e = /^#\/campaigns\/(\d+)\/edit/.exec(window.location.hash);
  if (e) return { page: 'edit', id: Number(e[1]) };
  const m = /^#\/campaigns\/(\d+)/.exec(window.location.hash);
  return m ? { page: 'campaign', id: Number(m[1]) } : { page: 'list' };
}

export function App() {
  const [token, setToken] = useState<string | null>(savedToken());
  const [me, setMe] = useState<Me | null>(null);
  const [notice, setNotice] = useState<string | undefined>();
  const [r, setR] = useState(route());
  const [range, setRange] = useState<Range>(() => lastRange(7 * 86_400, Math.floor(Date.now() / 1000)));
  const [refreshMs, setRefreshMs] = useState(15_000);

  useEffect(() => {
    const on = () => setR(route());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);

  // A saved token is checked once on load.
  useEffect(() => {
    if (token && !me) {
      get<Me>(token, '/me').then(setMe, (e) => {
        saveToken(null);
        setToken(null);
        setNotice(String(e.message ?? e));
      });
    }
  }, [token, me]);

  const logout = () => {
    saveToken(null);
    setToken(null);
    setMe(null);
  };

  if (!token) {
    return (
      <main className="center">
        <Login
          notice={notice}
          onLogin={(t, m) => {
            saveToken(t);
            setToken(t);
            setMe(m);
          }}
        />
      </main>
    );
  }
  return (
    <>
      <header>
        <a href="#/" className="brand">
          Helios
        </a>
        <span className="muted" data-testid="who">
          {me ? (me.role === 'operator' ? 'Operator' : 'Advertiser #' + me.advertiser_id) : ''}
        </span>
        <a href="#/campaigns/new" className="muted" data-testid="new-campaign">
          New campaign
        </a>
        {r.page === 'campaign' && (
          <a href={`#/campaigns/${r.id}/edit`} className="muted" data-testid="edit-campaign">
            Edit campaign
          </a>
        )}
        <button type="button" onClick={logout} data-testid="logout">
          Sign out
        </button>
      </header>
      <main>
        {r.page === 'edit' ? (
          <CampaignEditor key={String(r.id)} token={token} id={r.id} />
        ) : r.page === 'list' ? (
          <CampaignList token={token} range={range} setRange={setRange} refreshMs={refreshMs} setRefreshMs={setRefreshMs} onLogout={logout} />
        ) : (
          <CampaignPage token={token} id={r.id} range={range} setRange={setRange} refreshMs={refreshMs} setRefreshMs={setRefreshMs} onLogout={logout} />
        )}
      </main>
    </>
  );
}

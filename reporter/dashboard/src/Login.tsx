// Login: paste a token (minted by `helios-reporter token`), checked against /api/v1/me.
import { useState } from 'react';
import { ApiError, Me, get } from './api';

export function Login(props: { onLogin: (token: string, me: Me) => void; notice?: string }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(props.notice ?? null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    const t = token.trim();
    if (!t) return setError('Paste your access token.');
    setBusy(true);
    try {
      const me = await get<Me>(t, '/me');
      props.onLogin(t, me);
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="login" onSubmit={submit} data-testid="login">
      <h1>Helios</h1>
      <p>Sign in with the access token you were given.</p>
      <textarea
        value={token}
        onChange={(e) => setToken(e.target.value)}
        placeholder="eyJhbGciOiJIUzI1NiJ9…"
        rows={4}
        data-testid="token-input"
        aria-label="Access token"
      />
      {error && (
        <div className="field-error" role="alert" data-testid="login-error">
          {error}
        </div>
      )}
      <button type="submit" disabled={busy} data-testid="login-submit">
        {busy ? 'Checking…' : 'Sign in'}
      </button>
    </form>
  );
}

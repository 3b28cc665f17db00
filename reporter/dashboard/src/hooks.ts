// Data loading with loading / error states and optional auto-refresh.
import { useCallback, useEffect, useRef, useState } from 'react';
import { ApiError } from './api';

export interface Loaded<T> {
  data: T | null;
  error: ApiError | null;
  loading: boolean;
  updatedAt: number | null;
  reload: () => void;
}

/** Runs `load` now, when `deps` change, and every `refreshMs` (0 = never). Keeps the last data
 * while reloading so the page does not flash. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[], refreshMs: number): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [loading, setLoading] = useState(true);
  const [updatedAt, setUpdatedAt] = useState<number | null>(null);
  const seq = useRef(0);
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const run = useCallback(load, deps);

  const reload = useCallback(() => {
    const mine = ++seq.current;
    setLoading(true);
    run().then(
      (d) => {
        if (mine !== seq.current) return;
        setData(d);
        setError(null);
        setLoading(false);
        setUpdatedAt(Date.now());
      },
      (e: unknown) => {
        if (mine !== seq.current) return;
        setError(e instanceof ApiError ? e : new ApiError(0, 'error', String(e)));
        setLoading(false);
      },
    );
  }, [run]);

  useEffect(() => {
    reload();
    if (refreshMs <= 0) return;
    const id = setInterval(reload, refreshMs);
    return () => clearInterval(id);
  }, [reload, refreshMs]);

  return { data, error, loading, updatedAt, reload };
}

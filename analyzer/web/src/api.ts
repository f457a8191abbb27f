// A typed client of the analyzer's public API (/api/v1, described by /api/v1/openapi.json).

import { useContext, useEffect, useRef, useState } from "preact/hooks";
import { createContext } from "preact";

export interface Metrics {
  events: number;
  attempts: number;
  failures: number;
  failure_rate: number;
  affected_devices: number;
  affected_users: number;
  devices: number;
  users: number;
}
export interface CategoryCount {
  category: string;
  failures: number;
  affected_devices: number;
  affected_users: number;
}
export interface SummaryResp {
  from: string;
  to: string;
  summary: Metrics & { top_categories: CategoryCount[] };
}
export interface BreakdownRow extends Metrics {
  key: string | null;
}
export interface BreakdownResp {
  dimension: string;
  rows: BreakdownRow[];
}
export interface Point extends Metrics {
  t: string;
}
export interface TimeseriesResp {
  bucket: string;
  points: Point[];
}
export interface TopCode {
  code: string | null;
  symbol: string;
  /** Every symbol reported with this code and category: named ones first, by failures; "" last. */
  symbols: string[];
  category: string;
  failures: number;
  affected_devices: number;
  affected_users: number;
  failure_reason: string;
  cause: string;
  remediation: string;
  source_doc: string;
}
export interface TopCodesResp {
  codes: TopCode[];
}
export interface FunnelStage {
  stage: string;
  reached: number;
  succeeded: number;
  failed: number;
  dropped: number;
}
export interface FunnelGroup {
  enrollment_method: string;
  platform: string;
  devices: number;
  enrolled: number;
  time_to_enroll_seconds: { p50: number | null; p90: number | null; p95: number | null };
  stages: FunnelStage[];
}
export interface FunnelResp {
  /** `rollups`: counts from device-set rollups (time-to-enroll null); `raw`: one exact pass. */
  plan: "raw" | "rollups";
  estimated: boolean;
  groups: FunnelGroup[];
}
export interface SignalInfo {
  category: string;
  code: string | null;
  failure_reason: string;
  cause: string;
  remediation: string;
  source_doc: string;
}
export interface DeviceEvent {
  tenant: string;
  event_id: string;
  occurred_at: string;
  platform: string;
  os_edition: string;
  os_version: string;
  enrollment_method: string;
  stage: string;
  outcome: string;
  error_code: string | null;
  error_symbol: string;
  error_message: string;
  source_kind: string;
  source_channel: string;
  source_event_id: number;
  user_principal_name: string;
  classification: SignalInfo | null;
}
export interface EventPage {
  events: DeviceEvent[];
  next_cursor: string | null;
}
export interface DeviceState {
  tenant: string;
  device_id: string;
  captured_at: string;
  platform: string;
  os_edition: string;
  os_version: string;
  join_state: string;
  mdm_enrolled: boolean;
  mdm_url: string;
  tpm_present: boolean;
  tpm_spec_version: string;
  tpm_ready: boolean;
  primary_user_upn: string;
  last_attempt_at: string | null;
  last_outcome: string;
  last_error_code: string | null;
  last_error_symbol: string;
  last_error_message: string;
  last_error_classification: SignalInfo | null;
  license_state: string;
  enrollment_method: string;
  device_name: string;
}
export interface Affected {
  tenant: string;
  subject: string;
  detail: string;
}
export interface Insight {
  id: string;
  title: string;
  subject: "user" | "device";
  count: number;
  cause: string;
  remediation: string;
  sample: Affected[];
}
export interface InsightsResp {
  insights: Insight[];
}
export interface AffectedPage {
  id: string;
  count: number;
  items: Affected[];
  next_cursor: string | null;
}
export interface AffectedDevice {
  tenant: string;
  device_id: string;
  user_principal_name: string;
  failures: number;
  first_failure: string;
  last_failure: string;
  last_code: string | null;
  last_symbol: string;
  last_category: string;
  last_stage: string;
  platform: string;
  os_version: string;
  enrollment_method: string;
}
export interface AffectedDevicesResp {
  total: number;
  /** True when `total` is a HyperLogLog estimate (within ~2.1%; exact up to 1,024 devices). */
  total_estimated: boolean;
  devices: AffectedDevice[];
  next_cursor: string | null;
}
export interface WhoAmI {
  key_id: string;
  tenant: string | null;
}

/** An answer other than 2xx, with the API's reason (and field for a 400). */
export class ApiError extends Error {
  constructor(
    public status: number,
    public reason: string,
    public field?: string,
  ) {
    super(field ? `${field}: ${reason}` : reason);
  }
}

export type Fetcher = <T>(path: string, init?: RequestInit) => Promise<T>;

export function makeFetcher(key: string, onUnauthorized: (reason: string) => void): Fetcher {
  return async <T,>(path: string, init?: RequestInit): Promise<T> => {
    let resp: Response;
    try {
      resp = await fetch(path, {
        ...init,
        headers: { ...(init?.headers ?? {}), Authorization: `Bearer ${key}`, Accept: "application/json" },
      });
    } catch (e) {
      throw new ApiError(0, `the analyzer did not answer (${(e as Error).message})`);
    }
    if (resp.ok) {
      const text = await resp.text();
      return (text ? JSON.parse(text) : undefined) as T;
    }
    let reason = `${resp.status} ${resp.statusText}`;
    let field: string | undefined;
    try {
      const body = await resp.json();
      reason = body?.error?.reason ?? reason;
      field = body?.error?.field;
    } catch {
      /* not JSON: keep the status line */
    }
    if (resp.status === 401) onUnauthorized(reason);
    throw new ApiError(resp.status, reason, field);
  };
}

export interface ApiCtx {
  get: Fetcher;
  /** Increments on every auto-refresh tick and on manual refresh: hooks refetch on change. */
  tick: number;
  /** Refetches everything on screen (after a change made from the page). */
  refresh: () => void;
  features: Features;
}

export interface Features {
  alerts: boolean;
}

export const ApiContext = createContext<ApiCtx | null>(null);

export function useApiCtx(): ApiCtx {
  const ctx = useContext(ApiContext);
  if (!ctx) throw new Error("ApiContext missing");
  return ctx;
}

export interface Loaded<T> {
  data: T | undefined;
  error: ApiError | undefined;
  loading: boolean;
}

/** Fetches `path` (null: nothing to fetch) and refetches when it or the refresh tick changes.
 *  Keeps the previous answer on screen while the next one loads. */
export function useApi<T>(path: string | null): Loaded<T> {
  const { get, tick } = useApiCtx();
  const [state, setState] = useState<Loaded<T>>({ data: undefined, error: undefined, loading: path != null });
  const last = useRef<string | null>(null);
  useEffect(() => {
    if (path == null) {
      setState({ data: undefined, error: undefined, loading: false });
      return;
    }
    let live = true;
    const samePath = last.current === path;
    last.current = path;
    setState((s) => ({ data: samePath ? s.data : undefined, error: undefined, loading: true }));
    get<T>(path).then(
      (data) => live && setState({ data, error: undefined, loading: false }),
      (error: ApiError) => live && setState((s) => ({ data: samePath ? s.data : undefined, error, loading: false })),
    );
    return () => {
      live = false;
    };
  }, [path, tick]);
  return state;
}

export function qs(params: Record<string, string | number | null | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== "") p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : "";
}

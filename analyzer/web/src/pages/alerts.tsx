// Alerts on enrollment-failure spikes (the analyzer's alerting API: /api/v1/alerts and
// /api/v1/silences). Shown only when the analyzer's OpenAPI document lists those routes.

import { useState } from "preact/hooks";
import { qs, useApi, useApiCtx, type ApiError } from "../api";
import { label, n, pct, when } from "../format";
import { carry, href, type Route } from "../route";
import { Async, ErrorBox, Panel, Pill } from "../ui";
import type { View } from "../view";

export interface Alert {
  alert_id: string;
  status: "pending" | "firing" | "resolved" | "no_data";
  tenant: string;
  category: string;
  dimension: string;
  dimension_value: string;
  window_start: string;
  window_end: string;
  observed_rate: number;
  expected_rate: number;
  observed_count: number;
  expected_count: number;
  affected_devices: number;
  affected_users: number;
  concentration: { dimension: string; value: string; share: number }[];
  top_codes: { code: string | null; symbol: string; count: number; cause: string; remediation: string }[];
  remediation: string;
  started_at: string;
  resolved_at: string | null;
  acknowledged_by: string | null;
  dashboard_url: string;
}

type Silence = Record<string, unknown> & { silence_id?: string; id?: string };

function asList<T>(body: unknown, key: string): T[] {
  if (Array.isArray(body)) return body as T[];
  const v = (body as Record<string, unknown> | null)?.[key];
  return Array.isArray(v) ? (v as T[]) : [];
}

const TONE: Record<string, string> = { firing: "bad", pending: "warn", no_data: "neutral", resolved: "ok" };

function NotEnabled() {
  return <p class="empty">Alerting is not part of this analyzer (its API has no /api/v1/alerts).</p>;
}

/** The overview's "open alerts" panel. */
export function OpenAlerts(props: { v: View }) {
  const { features } = useApiCtx();
  const tenant = props.v.params.get("tenant");
  const q = useApi<unknown>(features.alerts ? `/api/v1/alerts${qs({ status: "open", tenant })}` : null);
  return (
    <Panel title="Open alerts" id="open-alerts" wide actions={features.alerts ? <a href={href("alerts", null, carry(props.v.params))}>All alerts</a> : undefined}>
      {!features.alerts ? (
        <NotEnabled />
      ) : (
        <Async q={q} empty={(d) => asList<Alert>(d, "alerts").length === 0} emptyText="No open alerts: enrollment failure rates are within their baselines.">
          {(d) => <AlertList alerts={asList<Alert>(d, "alerts")} params={props.v.params} />}
        </Async>
      )}
    </Panel>
  );
}

export function Alerts(props: { route: Route }) {
  const { features } = useApiCtx();
  const [status, setStatus] = useState(props.route.params.get("status") ?? "all");
  const tenant = props.route.params.get("tenant");
  const q = useApi<unknown>(features.alerts ? `/api/v1/alerts${qs({ status, tenant })}` : null);
  return (
    <>
      <h1 class="page-title">Alerts</h1>
      {!features.alerts ? (
        <NotEnabled />
      ) : (
        <>
          <Panel
            title="Alerts"
            id="alerts"
            wide
            actions={
              <label class="inline">
                Show{" "}
                <select value={status} onChange={(e) => setStatus((e.target as HTMLSelectElement).value)}>
                  <option value="open">open</option>
                  <option value="resolved">resolved</option>
                  <option value="all">all</option>
                </select>
              </label>
            }
          >
            <Async q={q} empty={(d) => asList<Alert>(d, "alerts").length === 0} emptyText="No alerts.">
              {(d) => <AlertList alerts={asList<Alert>(d, "alerts")} params={props.route.params} />}
            </Async>
          </Panel>
          <Silences tenant={tenant} />
        </>
      )}
    </>
  );
}

function AlertList(props: { alerts: Alert[]; params: URLSearchParams }) {
  const { get } = useApiCtx();
  const [acked, setAcked] = useState<Record<string, boolean>>({});
  const [error, setError] = useState<ApiError>();
  return (
    <>
      {error && <ErrorBox error={error} />}
      <ul class="alerts" data-testid="alert-list">
        {props.alerts.map((a) => (
          <li key={a.alert_id} class={`alert alert-${a.status}`}>
            <div class="alert-head">
              <Pill tone={TONE[a.status] ?? "neutral"}>{label(a.status)}</Pill>{" "}
              <a href={href("category", a.category, carry(props.params, { tenant: a.tenant, from: a.window_start, to: a.window_end, range: null }))}>
                <strong>{label(a.category)}</strong>
              </a>{" "}
              {a.dimension && a.dimension_value && (
                <span class="muted">
                  {label(a.dimension)} = {label(a.dimension_value)}
                </span>
              )}{" "}
              <span class="muted">· {a.tenant} · since {when(a.started_at)}</span>
            </div>
            <div class="alert-figures">
              <span>
                failure rate <strong class="bad-text">{pct(a.observed_rate)}</strong> against {pct(a.expected_rate)} expected
              </span>
              <span>
                {n(a.observed_count)} failures ({n(Math.round(a.expected_count))} expected)
              </span>
              <span>
                {n(a.affected_devices)} devices · {n(a.affected_users)} users
              </span>
            </div>
            {a.concentration?.length > 0 && (
              <div class="small">
                Concentrated in:{" "}
                {a.concentration
                  .slice(0, 3)
                  .map((c) => `${label(c.dimension)} ${label(c.value)} (${pct(c.share)})`)
                  .join(", ")}
              </div>
            )}
            {a.top_codes?.[0] && (
              <div class="small">
                Top code <span class="mono">{a.top_codes[0].code ?? a.top_codes[0].symbol}</span>: {a.top_codes[0].cause}
              </div>
            )}
            {a.remediation && (
              <p class="remedy small">
                <span class="remedy-tag">Fix</span> {a.remediation}
              </p>
            )}
            {a.status !== "resolved" && !a.acknowledged_by && !acked[a.alert_id] ? (
              <button
                type="button"
                onClick={() =>
                  get(`/api/v1/alerts/${encodeURIComponent(a.alert_id)}/ack`, { method: "POST" }).then(
                    () => setAcked({ ...acked, [a.alert_id]: true }),
                    setError,
                  )
                }
              >
                Acknowledge
              </button>
            ) : (
              (a.acknowledged_by || acked[a.alert_id]) && <span class="muted small">acknowledged{a.acknowledged_by ? ` by ${a.acknowledged_by}` : ""}</span>
            )}
          </li>
        ))}
      </ul>
    </>
  );
}

function Silences(props: { tenant: string | null }) {
  const { get } = useApiCtx();
  const q = useApi<unknown>(`/api/v1/silences${qs({ tenant: props.tenant })}`);
  const [gone, setGone] = useState<Record<string, boolean>>({});
  const [error, setError] = useState<ApiError>();
  return (
    <Panel title="Silences" id="silences" wide>
      {error && <ErrorBox error={error} />}
      <Async q={q} empty={(d) => asList<Silence>(d, "silences").length === 0} emptyText="No silences.">
        {(d) => (
          <ul class="silences" data-testid="silence-list">
            {asList<Silence>(d, "silences")
              .filter((s) => !gone[String(s.silence_id ?? s.id)])
              .map((s) => {
                const id = String(s.silence_id ?? s.id);
                return (
                  <li key={id}>
                    <span class="small">
                      {Object.entries(s)
                        .filter(([k, v]) => k !== "silence_id" && k !== "id" && v != null && typeof v !== "object")
                        .map(([k, v]) => `${label(k)}: ${String(v)}`)
                        .join(" · ")}
                    </span>{" "}
                    <button
                      type="button"
                      onClick={() =>
                        get(`/api/v1/silences/${encodeURIComponent(id)}`, { method: "DELETE" }).then(
                          () => setGone({ ...gone, [id]: true }),
                          setError,
                        )
                      }
                    >
                      Remove
                    </button>
                  </li>
                );
              })}
          </ul>
        )}
      </Async>
    </Panel>
  );
}

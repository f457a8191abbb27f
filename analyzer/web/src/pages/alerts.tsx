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
  rule: string;
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
  summary?: string;
}

interface Matcher {
  name: "tenant" | "category" | "dimension" | "dimension_value" | "rule";
  value: string;
}
interface Silence {
  id: string;
  matchers: Matcher[];
  starts_at: string;
  ends_at: string;
  active: boolean;
  created_by: string;
  comment: string;
  created_at: string;
}

/** The dashboard view an alert links to (its `dashboard_url`'s fragment, contract 4). */
function viewOf(a: Alert, params: URLSearchParams): string {
  const hash = a.dashboard_url?.split("#")[1];
  return hash ? `#${hash}` : href("overview", null, carry(params, { tenant: a.tenant }));
}

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
  const { get, refresh } = useApiCtx();
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
              <a href={viewOf(a, props.params)}>
                <strong>{a.category === "all" ? label(a.rule) : label(a.category)}</strong>
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
            <div class="alert-actions">
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
              {a.status !== "resolved" && (
                <button
                  type="button"
                  class="ghost"
                  onClick={() =>
                    get("/api/v1/silences", {
                      method: "POST",
                      headers: { "Content-Type": "application/json" },
                      body: JSON.stringify({
                        matchers: [
                          { name: "tenant", value: a.tenant },
                          { name: "dimension", value: a.dimension },
                          { name: "dimension_value", value: a.dimension_value },
                        ],
                        duration: "2h",
                        comment: `silenced from the dashboard: ${a.summary ?? a.category}`,
                      }),
                    }).then(refresh, setError)
                  }
                >
                  Silence 2 h
                </button>
              )}
            </div>
          </li>
        ))}
      </ul>
    </>
  );
}

function Silences(props: { tenant: string | null }) {
  const { get, refresh } = useApiCtx();
  const q = useApi<{ silences: Silence[] }>(`/api/v1/silences${qs({ tenant: props.tenant })}`);
  const [error, setError] = useState<ApiError>();
  const [tenant, setTenant] = useState(props.tenant ?? "");
  const [category, setCategory] = useState("");
  const [duration, setDuration] = useState("2h");
  const [comment, setComment] = useState("");
  const create = (e: Event) => {
    e.preventDefault();
    const matchers: Matcher[] = [];
    if (tenant.trim()) matchers.push({ name: "tenant", value: tenant.trim() });
    if (category.trim()) matchers.push({ name: "category", value: category.trim() });
    get("/api/v1/silences", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ matchers, duration, comment }),
    }).then(() => {
      setError(undefined);
      setComment("");
      refresh();
    }, setError);
  };
  return (
    <Panel title="Silences" id="silences" wide note="A silence mutes notifications of matching alerts; the alerts are still evaluated and listed.">
      {error && <ErrorBox error={error} />}
      <Async q={q} empty={(d) => d.silences.length === 0} emptyText="No silences.">
        {(d) => (
          <ul class="silences" data-testid="silence-list">
            {d.silences.map((s) => (
              <li key={s.id} data-id={s.id}>
                <Pill tone={s.active ? "warn" : "neutral"}>{s.active ? "active" : "expired"}</Pill>{" "}
                {s.matchers.map((m) => (
                  <span key={m.name} class="pill pill-info">
                    {m.name}={m.value}
                  </span>
                ))}{" "}
                <span class="muted small">
                  until {when(s.ends_at)}
                  {s.created_by ? ` · by ${s.created_by}` : ""}
                  {s.comment ? ` · ${s.comment}` : ""}
                </span>{" "}
                <button type="button" class="ghost small" onClick={() => get(`/api/v1/silences/${encodeURIComponent(s.id)}`, { method: "DELETE" }).then(refresh, setError)} aria-label={`Remove silence ${s.matchers.map((m) => `${m.name}=${m.value}`).join(", ")}`}>
                  Remove
                </button>
              </li>
            ))}
          </ul>
        )}
      </Async>
      <form class="silence-form" onSubmit={create} aria-label="New silence">
        <label class="inline">
          Tenant <input type="text" value={tenant} onInput={(e) => setTenant((e.target as HTMLInputElement).value)} placeholder="any" size={12} />
        </label>
        <label class="inline">
          Category <input type="text" value={category} onInput={(e) => setCategory((e.target as HTMLInputElement).value)} placeholder="any" size={14} />
        </label>
        <label class="inline">
          For{" "}
          <select value={duration} onChange={(e) => setDuration((e.target as HTMLSelectElement).value)}>
            {["1h", "2h", "8h", "24h", "7d"].map((d) => (
              <option key={d} value={d}>
                {d}
              </option>
            ))}
          </select>
        </label>
        <label class="inline">
          Comment <input type="text" value={comment} onInput={(e) => setComment((e.target as HTMLInputElement).value)} size={24} />
        </label>
        <button type="submit">Add silence</button>
      </form>
    </Panel>
  );
}

import { useMemo, useState } from "preact/hooks";
import {
  useApi,
  useApiCtx,
  type BreakdownResp,
  type FunnelGroup,
  type FunnelResp,
  type SummaryResp,
  type TimeseriesResp,
  type TopCodesResp,
} from "../api";
import { TrendChart } from "../chart";
import { dur, label, n, pct, symbolsLabel } from "../format";
import { carry, href, navigate, type Route } from "../route";
import { Async, BarList, ErrorBox, Kpi, Panel, toneOfRate } from "../ui";
import { makeView, type View } from "../view";
import { OpenAlerts } from "./alerts";

/** Enrollment stages in flow order (the API's `STAGES`). */
export const STAGE_ORDER = [
  "discovery",
  "authentication",
  "authorization",
  "certificate_request",
  "dm_client_provisioning",
  "profile_install",
  "enrollment_status_page",
  "device_registration",
  "first_sync",
  "complete",
];

export function Overview(props: { route: Route; theme: string }) {
  const { tick } = useApiCtx();
  const v = useMemo(() => makeView(props.route.params, tick), [props.route.params.toString(), tick]);
  return (
    <>
      <Kpis v={v} />
      <Trend v={v} theme={props.theme} />
      <div class="grid">
        <Categories v={v} />
        <Dimension v={v} dim="platform" param="platform" title="Failures by platform" />
        <Dimension v={v} dim="os_version" param="os_version" title="Failures by OS version" />
        <Dimension v={v} dim="enrollment_method" param="method" title="Failures by enrollment method" />
      </div>
      <TopCodes v={v} />
      <Funnel v={v} />
      <OpenAlerts v={v} />
    </>
  );
}

export function Kpis(props: { v: View; extra?: Record<string, string>; testid?: string }) {
  const q = useApi<SummaryResp>(`/api/v1/summary${props.v.q(props.extra)}`);
  return (
    <section class="kpis" aria-label="Totals for the selected window" data-testid={props.testid ?? "kpis"}>
      <Async q={q}>
        {(d) => {
          const s = d.summary;
          return (
            <>
              <Kpi id="attempts" label="Enrollment attempts" value={n(s.attempts)} sub={`${n(s.devices)} devices`} />
              <Kpi id="failure-rate" label="Failure rate" value={pct(s.failure_rate)} tone={s.attempts ? toneOfRate(s.failure_rate) : "neutral"} />
              <Kpi id="failures" label="Failures" value={n(s.failures)} tone={s.failures ? "bad" : "ok"} />
              <Kpi id="affected-devices" label="Affected devices" value={n(s.affected_devices)} sub={s.devices ? `${pct(s.affected_devices / s.devices)} of devices` : undefined} />
              <Kpi id="affected-users" label="Affected users" value={n(s.affected_users)} sub={s.users ? `of ${n(s.users)} users` : undefined} />
            </>
          );
        }}
      </Async>
    </section>
  );
}

export function Trend(props: { v: View; theme: string; extra?: Record<string, string>; title?: string }) {
  const { v } = props;
  const q = useApi<TimeseriesResp>(`/api/v1/timeseries${v.q({ ...props.extra, bucket: v.win.bucket })}`);
  const title = props.title ?? "Attempts and failure rate";
  return (
    <Panel title={title} id="trend" wide note={`${v.win.bucket} buckets, UTC`}>
      <Async q={q} empty={(d) => d.points.every((p) => p.events === 0)} emptyText="No enrollment events in this window.">
        {(d) => <TrendChart points={d.points} label={title} theme={props.theme} testid="trend-chart" />}
      </Async>
    </Panel>
  );
}

function Categories(props: { v: View }) {
  const { v } = props;
  const q = useApi<BreakdownResp>(`/api/v1/breakdown/category${v.q({ limit: 12 })}`);
  return (
    <Panel title="Failures by category" id="by-category">
      <Async q={q} empty={(d) => d.rows.every((r) => r.failures === 0)} emptyText="No failures in this window.">
        {(d) => (
          <BarList
            testid="bars-category"
            unit="failures"
            bars={d.rows
              .filter((r) => r.failures > 0)
              .map((r) => ({
                key: r.key ?? "",
                label: label(r.key),
                value: r.failures,
                sub: `· ${n(r.affected_devices)} devices`,
                href: href("category", r.key ?? "unknown", carry(v.params)),
                title: "Open this category",
              }))}
          />
        )}
      </Async>
    </Panel>
  );
}

/** Failures by a dimension; clicking a row filters the whole view by it. */
export function Dimension(props: { v: View; dim: string; param?: string; title: string; extra?: Record<string, string> }) {
  const { v, param } = props;
  const q = useApi<BreakdownResp>(`/api/v1/breakdown/${props.dim}${v.q({ ...props.extra, limit: 8 })}`);
  const active = param ? v.params.get(param) : null;
  return (
    <Panel title={props.title} id={`by-${props.dim}`}>
      <Async q={q} empty={(d) => d.rows.every((r) => r.failures === 0)} emptyText="No failures in this window.">
        {(d) => (
          <BarList
            testid={`bars-${props.dim}`}
            unit="failures"
            bars={d.rows
              .filter((r) => r.failures > 0)
              .map((r) => ({
                key: r.key ?? "",
                label: label(r.key),
                value: r.failures,
                // Within a category or code every event is a failure: the rate says nothing.
                sub: props.extra ? `· ${n(r.affected_devices)} devices` : `· ${pct(r.failure_rate)} failed`,
                title: active ? undefined : `Show only ${label(r.key)}`,
                onClick:
                  param && !active && r.key
                    ? () => {
                        const p = new URLSearchParams(v.params);
                        p.set(param, r.key!);
                        navigate(href(currentPage(), currentArg(), p));
                      }
                    : undefined,
              }))}
          />
        )}
      </Async>
    </Panel>
  );
}

function currentPage() {
  const m = /^#\/(\w+)/.exec(window.location.hash);
  return (m?.[1] ?? "overview") as "overview";
}
function currentArg(): string | null {
  const m = /^#\/\w+\/([^?]+)/.exec(window.location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

export function TopCodes(props: { v: View; extra?: Record<string, string>; title?: string; limit?: number }) {
  const { v } = props;
  const q = useApi<TopCodesResp>(`/api/v1/top-codes${v.q({ ...props.extra, limit: props.limit ?? 10 })}`);
  return (
    <Panel title={props.title ?? "Top failing codes: cause and fix"} id="top-codes" wide>
      <Async q={q} empty={(d) => d.codes.length === 0} emptyText="No failures in this window.">
        {(d) => (
          <div class="table-wrap">
            <table class="codes" data-testid="top-codes-table">
              <thead>
                <tr>
                  <th scope="col">Code</th>
                  <th scope="col">Category</th>
                  <th scope="col" class="num">Failures</th>
                  <th scope="col" class="num">Devices</th>
                  <th scope="col" class="num">Users</th>
                  <th scope="col">Cause and remediation</th>
                </tr>
              </thead>
              <tbody>
                {d.codes.map((c) => (
                  <tr key={`${c.code}-${c.symbols.join("/")}-${c.category}`}>
                    <td>
                      {c.code ? (
                        <a href={href("code", c.code, carry(v.params))} class="mono">
                          {c.code}
                        </a>
                      ) : (
                        <span class="mono">(no code)</span>
                      )}
                      {symbolsLabel(c.symbols) && <div class="symbol mono">{symbolsLabel(c.symbols)}</div>}
                    </td>
                    <td>
                      <a href={href("category", c.category, carry(v.params))}>{label(c.category)}</a>
                    </td>
                    <td class="num" data-col="failures">{n(c.failures)}</td>
                    <td class="num">{n(c.affected_devices)}</td>
                    <td class="num">{n(c.affected_users)}</td>
                    <td class="fix">
                      <div class="cause">{c.cause || c.failure_reason || "No catalog entry for this signal yet."}</div>
                      {c.remediation && (
                        <div class="remedy">
                          <span class="remedy-tag">Fix</span> {c.remediation}
                        </div>
                      )}
                      {c.source_doc && /^https:\/\//.test(c.source_doc) && (
                        <a class="doc" href={c.source_doc} target="_blank" rel="noreferrer noopener">
                          Microsoft documentation
                        </a>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </Async>
    </Panel>
  );
}

function Funnel(props: { v: View }) {
  const { v } = props;
  const q = useApi<FunnelResp>(`/api/v1/funnel${v.q()}`);
  // Time to enroll is per device: a rollup answer has none, so it is computed from raw events
  // on request (one pass over the window's events: seconds at millions of events).
  const [exact, setExact] = useState(false);
  const raw = useApi<FunnelResp>(exact && q.data?.plan === "rollups" ? `/api/v1/funnel${v.q({ source: "raw" })}` : null);
  const timesOf = (d: FunnelResp, g: FunnelGroup) =>
    d.plan === "raw"
      ? g.time_to_enroll_seconds
      : raw.data?.groups.find((r) => r.enrollment_method === g.enrollment_method && r.platform === g.platform)?.time_to_enroll_seconds;
  return (
    <Panel title="Enrollment funnel and time to enroll" id="funnel" wide>
      <Async q={q} empty={(d) => d.groups.length === 0} emptyText="No enrollments in this window.">
        {(d) => {
          const stages = new Map<string, { reached: number; succeeded: number; failed: number; dropped: number }>();
          for (const g of d.groups)
            for (const s of g.stages) {
              const a = stages.get(s.stage) ?? { reached: 0, succeeded: 0, failed: 0, dropped: 0 };
              a.reached += s.reached;
              a.succeeded += s.succeeded;
              a.failed += s.failed;
              a.dropped += s.dropped;
              stages.set(s.stage, a);
            }
          const rows = [...stages.entries()].sort((a, b) => STAGE_ORDER.indexOf(a[0]) - STAGE_ORDER.indexOf(b[0]));
          const top = Math.max(1, ...rows.map(([, s]) => s.reached));
          const groups = [...d.groups].sort((a, b) => b.devices - a.devices).slice(0, 10);
          return (
            <div class="funnel-wrap">
              <ol class="funnel" data-testid="funnel-stages" aria-label="Devices reaching each stage">
                {rows.map(([stage, s]) => (
                  <li key={stage}>
                    <span class="f-label">{label(stage)}</span>
                    <span class="f-track">
                      <span class="f-ok" style={{ width: `${(s.succeeded / top) * 100}%` }} />
                      <span class="f-bad" style={{ width: `${(s.failed / top) * 100}%` }} />
                    </span>
                    <span class="f-num" data-stage={stage} data-reached={s.reached}>
                      {n(s.reached)} <span class="muted">reached</span>
                      {s.failed > 0 && <span class="bad-text"> · {n(s.failed)} failed</span>}
                    </span>
                  </li>
                ))}
              </ol>
              <div class="table-wrap">
                <table data-testid="funnel-groups">
                  <caption class="sr-only">Time to enroll by enrollment method and platform</caption>
                  <thead>
                    <tr>
                      <th scope="col">Method</th>
                      <th scope="col">Platform</th>
                      <th scope="col" class="num">Devices</th>
                      <th scope="col" class="num">Enrolled</th>
                      <th scope="col" class="num">p50</th>
                      <th scope="col" class="num">p90</th>
                    </tr>
                  </thead>
                  <tbody>
                    {groups.map((g) => (
                      <tr key={`${g.enrollment_method}/${g.platform}`}>
                        <td>{label(g.enrollment_method)}</td>
                        <td>{label(g.platform)}</td>
                        <td class="num">{n(g.devices)}</td>
                        <td class="num">{g.devices ? pct(g.enrolled / g.devices) : "–"}</td>
                        <td class="num" data-col="p50">{dur(timesOf(d, g)?.p50)}</td>
                        <td class="num" data-col="p90">{dur(timesOf(d, g)?.p90)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
                {d.plan === "rollups" && !raw.data && (
                  <p class="muted small">
                    Device counts{d.estimated ? " are estimates (within 2%) and" : ""} come from rollups; time to enroll is
                    per device, from raw events.{" "}
                    <button type="button" class="more" data-testid="funnel-exact" disabled={exact} onClick={() => setExact(true)}>
                      {exact ? "Computing…" : "Compute time to enroll"}
                    </button>
                  </p>
                )}
                {raw.error && <ErrorBox error={raw.error} />}
              </div>
            </div>
          );
        }}
      </Async>
    </Panel>
  );
}

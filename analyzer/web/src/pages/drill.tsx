// Drill-down into a category or an error code: trend, where it concentrates, the stages it
// breaks, its codes with cause and fix, and the devices and users it hits.

import { useMemo, useState } from "preact/hooks";
import { useApi, useApiCtx, type AffectedDevicesResp, type BreakdownResp, type TopCodesResp } from "../api";
import { label, n, symbolsLabel, when } from "../format";
import { carry, href, type Route } from "../route";
import { Async, BarList, Panel } from "../ui";
import { makeView, type View } from "../view";
import { Dimension, Kpis, STAGE_ORDER, TopCodes, Trend } from "./overview";


export function Drill(props: { route: Route; theme: string; kind: "category" | "code" }) {
  const { tick } = useApiCtx();
  const { route, kind } = props;
  const v = useMemo(() => makeView(route.params, tick), [route.params.toString(), tick]);
  const extra = { [kind]: route.arg };
  return (
    <>
      <div class="crumbs">
        <a href={href("overview", null, carry(route.params))}>Overview</a> <span aria-hidden="true">›</span>{" "}
        <span>{kind === "category" ? "Category" : "Error code"}</span>
      </div>
      <h1 class="page-title" data-testid="drill-title">
        {kind === "category" ? label(route.arg) : <span class="mono">{route.arg}</span>}
      </h1>
      {kind === "code" && <CodeInfo v={v} code={route.arg} />}
      <Kpis v={v} extra={extra} testid="drill-kpis" />
      <Trend v={v} theme={props.theme} extra={extra} title="Trend" />
      <div class="grid">
        <Stages v={v} extra={extra} />
        <Dimension v={v} dim="platform" title="By platform" extra={extra} />
        <Dimension v={v} dim="os_version" title="By OS version" extra={extra} />
        <Dimension v={v} dim="enrollment_method" title="By enrollment method" extra={extra} />
      </div>
      {kind === "category" && <TopCodes v={v} extra={extra} title="Codes in this category" />}
      <Devices v={v} extra={extra} />
    </>
  );
}

function CodeInfo(props: { v: View; code: string }) {
  const q = useApi<TopCodesResp>(`/api/v1/top-codes${props.v.q({ code: props.code, limit: 5 })}`);
  return (
    <Async q={q} empty={(d) => d.codes.length === 0} emptyText="This code caused no failures in this window.">
      {(d) => (
        <div class="code-info">
          {d.codes.map((c) => (
            <div class="callout" key={`${c.symbol}-${c.category}`}>
              <div>
                <a href={href("category", c.category, carry(props.v.params))} class="pill pill-info">
                  {label(c.category)}
                </a>{" "}
                {symbolsLabel(c.symbols) && <span class="mono">{symbolsLabel(c.symbols)}</span>}
              </div>
              <p class="cause">{c.cause || c.failure_reason || "No catalog entry for this code yet."}</p>
              {c.remediation && (
                <p class="remedy">
                  <span class="remedy-tag">Fix</span> {c.remediation}
                </p>
              )}
            </div>
          ))}
        </div>
      )}
    </Async>
  );
}

/** Failures per enrollment stage, in flow order: where in the enrollment it breaks. */
function Stages(props: { v: View; extra: Record<string, string> }) {
  const q = useApi<BreakdownResp>(`/api/v1/breakdown/stage${props.v.q({ ...props.extra, limit: 20 })}`);
  return (
    <Panel title="Where in the enrollment it fails" id="by-stage">
      <Async q={q} empty={(d) => d.rows.every((r) => r.failures === 0)} emptyText="No failures in this window.">
        {(d) => (
          <BarList
            testid="bars-stage"
            unit="failures"
            bars={[...d.rows]
              .filter((r) => r.failures > 0)
              .sort((a, b) => STAGE_ORDER.indexOf(a.key ?? "") - STAGE_ORDER.indexOf(b.key ?? ""))
              .map((r) => ({ key: r.key ?? "", label: label(r.key), value: r.failures, sub: `· ${n(r.affected_devices)} devices` }))}
          />
        )}
      </Async>
    </Panel>
  );
}

const PAGE = 25;

/** Affected devices, searchable and paginated with the API's cursors. */
function Devices(props: { v: View; extra: Record<string, string> }) {
  const { v } = props;
  const [search, setSearch] = useState("");
  const [typed, setTyped] = useState("");
  const [cursors, setCursors] = useState<string[]>([]);
  const cursor = cursors[cursors.length - 1] ?? null;
  const q = useApi<AffectedDevicesResp>(`/api/v1/affected-devices${v.q({ ...props.extra, q: search || null, limit: PAGE, cursor })}`);
  const start = cursors.length * PAGE;
  return (
    <Panel
      title="Affected devices and users"
      id="affected"
      wide
      actions={
        <form
          class="search"
          role="search"
          onSubmit={(e) => {
            e.preventDefault();
            setCursors([]);
            setSearch(typed.trim());
          }}
        >
          <label for="device-search" class="sr-only">
            Search devices or users
          </label>
          <input id="device-search" type="search" placeholder="Device id or user…" value={typed} onInput={(e) => setTyped((e.target as HTMLInputElement).value)} />
          <button type="submit">Search</button>
        </form>
      }
    >
      <Async q={q} empty={(d) => d.devices.length === 0} emptyText={search ? `No affected device matches “${search}”.` : "No affected devices in this window."}>
        {(d) => (
          <>
            <div class="table-wrap">
              <table data-testid="affected-table">
                <caption class="sr-only">Devices with failures, most failures first</caption>
                <thead>
                  <tr>
                    <th scope="col">Device</th>
                    <th scope="col">User</th>
                    <th scope="col" class="num">Failures</th>
                    <th scope="col">Last failure</th>
                    <th scope="col">Last error</th>
                    <th scope="col">Platform</th>
                    <th scope="col">Tenant</th>
                  </tr>
                </thead>
                <tbody>
                  {d.devices.map((x) => (
                    <tr key={`${x.tenant}/${x.device_id}`}>
                      <td>
                        <a class="mono" href={href("device", x.device_id, carry(v.params, { tenant: x.tenant }))}>
                          {x.device_id}
                        </a>
                      </td>
                      <td>{x.user_principal_name || <span class="muted">–</span>}</td>
                      <td class="num">{n(x.failures)}</td>
                      <td>{when(x.last_failure)}</td>
                      <td>
                        <span class="mono">{x.last_code ?? x.last_symbol ?? "–"}</span> <span class="muted">{label(x.last_category)}</span>
                      </td>
                      <td>
                        {label(x.platform)} <span class="muted">{x.os_version}</span>
                      </td>
                      <td>{x.tenant}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
            <nav class="pager" aria-label="Pages of affected devices">
              <span data-testid="affected-range">
                {n(start + 1)}–{n(start + d.devices.length)} of {d.total_estimated ? "about " : ""}
                {n(d.total)}
              </span>
              <button type="button" disabled={cursors.length === 0} onClick={() => setCursors(cursors.slice(0, -1))}>
                Previous
              </button>
              <button type="button" disabled={!d.next_cursor} onClick={() => d.next_cursor && setCursors([...cursors, d.next_cursor])}>
                Next
              </button>
            </nav>
          </>
        )}
      </Async>
    </Panel>
  );
}

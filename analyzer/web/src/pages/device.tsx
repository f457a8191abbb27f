// One device: its latest state (join, MDM, TPM, licence, last error with cause and fix) and
// its event timeline, newest first, paginated.

import { useEffect, useState } from "preact/hooks";
import { qs, useApi, useApiCtx, type ApiError, type DeviceEvent, type DeviceState, type EventPage } from "../api";
import { label, when } from "../format";
import { carry, href, type Route } from "../route";
import { Async, ErrorBox, Panel, Pill } from "../ui";

export function Device(props: { route: Route }) {
  const { route } = props;
  const id = route.arg;
  const tenant = route.params.get("tenant");
  const state = useApi<DeviceState>(`/api/v1/devices/${encodeURIComponent(id)}/state${qs({ tenant })}`);
  return (
    <>
      <div class="crumbs">
        <a href={href("overview", null, carry(route.params))}>Overview</a> <span aria-hidden="true">›</span> <span>Device</span>
      </div>
      <h1 class="page-title mono" data-testid="device-title">
        {id}
      </h1>
      <Panel title="Latest state" id="device-state" wide>
        {state.error?.status === 404 ? (
          <p class="empty">This device has sent no state snapshot yet; its events are below.</p>
        ) : (
          <Async q={state}>{(s) => <StateCard s={s} />}</Async>
        )}
      </Panel>
      <Timeline id={id} tenant={tenant} />
    </>
  );
}

function yesNo(v: boolean, good = true) {
  return <Pill tone={v === good ? "ok" : "bad"}>{v ? "yes" : "no"}</Pill>;
}

function StateCard(props: { s: DeviceState }) {
  const s = props.s;
  const c = s.last_error_classification;
  return (
    <div class="state">
      <dl class="facts" data-testid="device-facts">
        <div>
          <dt>Device name</dt>
          <dd>{s.device_name || "–"}</dd>
        </div>
        <div>
          <dt>Tenant</dt>
          <dd>{s.tenant}</dd>
        </div>
        <div>
          <dt>Primary user</dt>
          <dd>{s.primary_user_upn || "–"}</dd>
        </div>
        <div>
          <dt>Platform</dt>
          <dd>
            {label(s.platform)} {s.os_edition} {s.os_version}
          </dd>
        </div>
        <div>
          <dt>Join state</dt>
          <dd data-testid="join-state">{label(s.join_state)}</dd>
        </div>
        <div>
          <dt>MDM enrolled</dt>
          <dd data-testid="mdm-enrolled">{yesNo(s.mdm_enrolled)}</dd>
        </div>
        <div>
          <dt>TPM</dt>
          <dd data-testid="tpm">
            {s.tpm_present ? (
              <>
                {yesNo(s.tpm_ready)} <span class="muted">ready · spec {s.tpm_spec_version || "?"}</span>
              </>
            ) : (
              <Pill tone="bad">no TPM</Pill>
            )}
          </dd>
        </div>
        <div>
          <dt>Licence</dt>
          <dd>{label(s.license_state)}</dd>
        </div>
        <div>
          <dt>Enrollment method</dt>
          <dd>{label(s.enrollment_method)}</dd>
        </div>
        <div>
          <dt>Last attempt</dt>
          <dd>
            {when(s.last_attempt_at)} <Pill tone={s.last_outcome === "failed" ? "bad" : s.last_outcome === "succeeded" ? "ok" : "neutral"}>{label(s.last_outcome)}</Pill>
          </dd>
        </div>
        <div>
          <dt>Snapshot taken</dt>
          <dd>{when(s.captured_at)}</dd>
        </div>
      </dl>
      {c && (
        <div class="callout bad">
          <div>
            <strong>Last error</strong> <span class="mono">{s.last_error_code ?? s.last_error_symbol}</span> <Pill tone="info">{label(c.category)}</Pill>
          </div>
          {s.last_error_message && <p class="mono small">{s.last_error_message}</p>}
          <p class="cause">{c.cause || c.failure_reason}</p>
          {c.remediation && (
            <p class="remedy">
              <span class="remedy-tag">Fix</span> {c.remediation}
            </p>
          )}
        </div>
      )}
    </div>
  );
}

function Timeline(props: { id: string; tenant: string | null }) {
  const { get, tick } = useApiCtx();
  const [events, setEvents] = useState<DeviceEvent[]>([]);
  const [next, setNext] = useState<string | null>(null);
  const [error, setError] = useState<ApiError | undefined>();
  const [loading, setLoading] = useState(true);
  const base = `/api/v1/devices/${encodeURIComponent(props.id)}/events`;
  const load = (cursor: string | null, append: boolean) => {
    setLoading(true);
    get<EventPage>(`${base}${qs({ tenant: props.tenant, limit: 50, cursor })}`).then(
      (p) => {
        setEvents((prev) => (append ? [...prev, ...p.events] : p.events));
        setNext(p.next_cursor);
        setError(undefined);
        setLoading(false);
      },
      (e: ApiError) => {
        setError(e);
        setLoading(false);
      },
    );
  };
  useEffect(() => load(null, false), [props.id, props.tenant, tick]);
  return (
    <Panel title="Event timeline" id="timeline" wide note="Newest first; failures carry their classification.">
      {error && <ErrorBox error={error} />}
      {!loading && events.length === 0 && !error && <p class="empty">No events stored for this device.</p>}
      <ol class="timeline" data-testid="timeline">
        {events.map((e) => (
          <li key={e.event_id} class={`ev ev-${e.outcome}`}>
            <time dateTime={e.occurred_at}>{when(e.occurred_at)}</time>
            <div class="ev-body">
              <div>
                <Pill tone={e.outcome === "failed" ? "bad" : e.outcome === "succeeded" ? "ok" : "neutral"}>{label(e.outcome)}</Pill> <strong>{label(e.stage)}</strong>{" "}
                <span class="muted">
                  {label(e.enrollment_method)} · {label(e.platform)} {e.os_version} · {e.source_kind}
                  {e.user_principal_name ? ` · ${e.user_principal_name}` : ""}
                </span>
              </div>
              {e.outcome === "failed" && (
                <div class="ev-error">
                  {e.error_code && <span class="mono">{e.error_code}</span>} {e.error_symbol && <span class="mono">{e.error_symbol}</span>}
                  {e.classification && (
                    <>
                      {" "}
                      <a class="pill pill-info" href={href("category", e.classification.category, { tenant: props.tenant })}>
                        {label(e.classification.category)}
                      </a>
                    </>
                  )}
                  {e.error_message && <div class="small">{e.error_message}</div>}
                  {e.classification?.remediation && (
                    <div class="remedy small">
                      <span class="remedy-tag">Fix</span> {e.classification.remediation}
                    </div>
                  )}
                </div>
              )}
            </div>
          </li>
        ))}
      </ol>
      {loading && <div class="loading" role="status">Loading…</div>}
      {next && !loading && (
        <button type="button" class="more" onClick={() => load(next, true)}>
          Load older events
        </button>
      )}
    </Panel>
  );
}

// Proactive insights: problems that will fail enrollments, each with cause, fix and the
// users or devices concerned (paginated).

import { useState } from "preact/hooks";
import { qs, useApi, useApiCtx, type Affected, type AffectedPage, type ApiError, type Insight, type InsightsResp } from "../api";
import { n } from "../format";
import { href, type Route } from "../route";
import { Async, ErrorBox, Panel } from "../ui";

export function Insights(props: { route: Route }) {
  const tenant = props.route.params.get("tenant");
  const q = useApi<InsightsResp>(`/api/v1/insights${qs({ tenant })}`);
  return (
    <>
      <h1 class="page-title">Insights</h1>
      <p class="lede">Conditions that make enrollments fail, found before users call the help desk.</p>
      <Async q={q} empty={(d) => d.insights.length === 0} emptyText="No insights for this scope.">
        {(d) => (
          <div class="insights" data-testid="insights">
            {d.insights.map((i) => (
              <InsightCard key={i.id} i={i} tenant={tenant} />
            ))}
          </div>
        )}
      </Async>
    </>
  );
}

function InsightCard(props: { i: Insight; tenant: string | null }) {
  const { i } = props;
  const [open, setOpen] = useState(false);
  return (
    <Panel
      title={i.title}
      id={`insight-${i.id}`}
      wide
      actions={
        <span class={`count ${i.count > 0 ? "bad-text" : "ok-text"}`} data-testid={`insight-count-${i.id}`} data-value={i.count}>
          {n(i.count)} {i.subject === "user" ? (i.count === 1 ? "user" : "users") : i.count === 1 ? "device" : "devices"}
        </span>
      }
    >
      <p class="cause">{i.cause}</p>
      <p class="remedy">
        <span class="remedy-tag">Fix</span> {i.remediation}
      </p>
      {i.count > 0 && (
        <button type="button" class="more" aria-expanded={open} onClick={() => setOpen(!open)}>
          {open ? "Hide" : "Show"} the {i.subject === "user" ? "users" : "devices"}
        </button>
      )}
      {open && <AffectedList id={i.id} subject={i.subject} tenant={props.tenant} />}
    </Panel>
  );
}

function AffectedList(props: { id: string; subject: string; tenant: string | null }) {
  const { get } = useApiCtx();
  const first = useApi<AffectedPage>(`/api/v1/insights/${props.id}/devices${qs({ tenant: props.tenant, limit: 50 })}`);
  const [more, setMore] = useState<Affected[]>([]);
  const [next, setNext] = useState<string | null | undefined>(undefined);
  const [error, setError] = useState<ApiError>();
  const cursor = next === undefined ? first.data?.next_cursor : next;
  return (
    <Async q={first}>
      {(d) => (
        <>
          <div class="table-wrap">
            <table data-testid={`insight-items-${props.id}`}>
              <thead>
                <tr>
                  <th scope="col">{props.subject === "user" ? "User" : "Device"}</th>
                  <th scope="col">Detail</th>
                  <th scope="col">Tenant</th>
                </tr>
              </thead>
              <tbody>
                {[...d.items, ...more].map((a) => (
                  <tr key={`${a.tenant}/${a.subject}`}>
                    <td>
                      {props.subject === "device" ? (
                        <a class="mono" href={href("device", a.subject, { tenant: a.tenant })}>
                          {a.subject}
                        </a>
                      ) : (
                        a.subject
                      )}
                    </td>
                    <td>{a.detail}</td>
                    <td>{a.tenant}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {error && <ErrorBox error={error} />}
          {cursor && (
            <button
              type="button"
              class="more"
              onClick={() =>
                get<AffectedPage>(`/api/v1/insights/${props.id}/devices${qs({ tenant: props.tenant, limit: 50, cursor })}`).then(
                  (p) => {
                    setMore((m) => [...m, ...p.items]);
                    setNext(p.next_cursor);
                  },
                  setError,
                )
              }
            >
              Load more
            </button>
          )}
        </>
      )}
    </Async>
  );
}

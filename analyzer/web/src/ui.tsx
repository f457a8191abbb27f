// Small shared building blocks: panels, KPI tiles, bar lists, states (loading, error, empty).

import type { ComponentChildren } from "preact";
import type { ApiError, Loaded } from "./api";
import { n } from "./format";

export function Panel(props: { title: string; id?: string; wide?: boolean; actions?: ComponentChildren; children: ComponentChildren; note?: string }) {
  const hid = props.id ? `${props.id}-title` : undefined;
  return (
    <section class={`panel${props.wide ? " wide" : ""}`} aria-labelledby={hid} data-testid={props.id}>
      <header class="panel-head">
        <h2 id={hid}>{props.title}</h2>
        {props.actions}
      </header>
      {props.note && <p class="panel-note">{props.note}</p>}
      {props.children}
    </section>
  );
}

/** Renders the states of a fetch around its content. */
export function Async<T>(props: { q: Loaded<T>; empty?: (d: T) => boolean; emptyText?: string; children: (d: T) => ComponentChildren }) {
  const { q } = props;
  if (q.error && !q.data) return <ErrorBox error={q.error} />;
  if (!q.data) return <div class="loading" role="status" aria-live="polite">Loading…</div>;
  if (props.empty?.(q.data)) return <p class="empty">{props.emptyText ?? "Nothing in this window."}</p>;
  return (
    <>
      {q.error && <ErrorBox error={q.error} stale />}
      {props.children(q.data)}
    </>
  );
}

export function ErrorBox(props: { error: ApiError; stale?: boolean }) {
  const e = props.error;
  return (
    <div class="error" role="alert">
      <strong>{e.status === 0 ? "Cannot reach the analyzer" : e.status >= 500 ? "The analyzer could not answer" : "Request refused"}</strong>
      {": "}
      {e.field ? `${e.field}: ${e.reason}` : e.reason}
      {props.stale ? " (showing the previous answer)" : ""}
    </div>
  );
}

export type Tone = "ok" | "warn" | "bad" | "neutral";

export function toneOfRate(rate: number): Tone {
  return rate >= 0.15 ? "bad" : rate >= 0.05 ? "warn" : "ok";
}

export function Kpi(props: { label: string; value: string; id: string; tone?: Tone; sub?: string }) {
  return (
    <div class={`kpi tone-${props.tone ?? "neutral"}`} data-testid={`kpi-${props.id}`}>
      <div class="kpi-label">{props.label}</div>
      <div class="kpi-value" data-value>
        {props.value}
      </div>
      {props.sub && <div class="kpi-sub">{props.sub}</div>}
    </div>
  );
}

export interface Bar {
  key: string;
  label: string;
  value: number;
  sub?: string;
  href?: string;
  onClick?: () => void;
  title?: string;
}

/** A ranked list of horizontal bars: each row a link (drill-down) or a button (filter). */
export function BarList(props: { bars: Bar[]; unit: string; testid?: string; tone?: "fail" | "info" }) {
  const max = Math.max(1, ...props.bars.map((b) => b.value));
  return (
    <ol class={`bars ${props.tone ?? "fail"}`} data-testid={props.testid}>
      {props.bars.map((b) => {
        const inner = (
          <>
            <span class="bar-fill" style={{ width: `${(b.value / max) * 100}%` }} aria-hidden="true" />
            <span class="bar-label">{b.label}</span>
            <span class="bar-value" data-key={b.key} data-value={b.value}>
              {n(b.value)}
              {b.sub && <span class="bar-sub"> {b.sub}</span>}
            </span>
          </>
        );
        const aria = `${b.label}: ${n(b.value)} ${props.unit}${b.sub ? `, ${b.sub}` : ""}`;
        return (
          <li key={b.key}>
            {b.href ? (
              <a class="bar" href={b.href} aria-label={aria} title={b.title}>
                {inner}
              </a>
            ) : b.onClick ? (
              <button type="button" class="bar" onClick={b.onClick} aria-label={aria} title={b.title}>
                {inner}
              </button>
            ) : (
              <div class="bar" aria-label={aria}>
                {inner}
              </div>
            )}
          </li>
        );
      })}
    </ol>
  );
}

export function Pill(props: { tone: string; children: ComponentChildren }) {
  return <span class={`pill pill-${props.tone}`}>{props.children}</span>;
}

export function Logo() {
  return (
    <svg width="22" height="22" viewBox="0 0 32 32" aria-hidden="true">
      <rect width="32" height="32" rx="7" fill="var(--accent)" />
      <path d="M4 18h6l3-8 5 14 3-6h7" fill="none" stroke="white" stroke-width="3" stroke-linecap="round" stroke-linejoin="round" />
    </svg>
  );
}

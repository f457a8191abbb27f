// Time-series chart (uPlot: ~50 kB, canvas, fast with thousands of points): attempts as
// area, failures as bars, failure rate as a line on its own axis.

import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { Point } from "./api";
import { n, pct } from "./format";

function cssVar(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

export function TrendChart(props: { points: Point[]; label: string; theme: string; testid?: string }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const xs = props.points.map((p) => Date.parse(p.t) / 1000);
    const attempts = props.points.map((p) => p.attempts);
    const failures = props.points.map((p) => p.failures);
    const rate = props.points.map((p) => (p.attempts > 0 ? p.failure_rate * 100 : null));
    const axis = cssVar("--muted");
    const grid = cssVar("--grid");
    const accent = cssVar("--accent");
    const bad = cssVar("--bad");
    const warn = cssVar("--warn");
    const bars = uPlot.paths.bars!({ size: [0.7, 40] });
    const opts: uPlot.Options = {
      width: el.clientWidth || 800,
      height: 260,
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true }, rate: { range: (_u, _min, max) => [0, Math.max(5, Math.ceil((max ?? 0) * 1.15))] } },
      axes: [
        { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } },
        { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, size: 60, values: (_u, v) => v.map((x) => n(x)) },
        { scale: "rate", side: 1, stroke: axis, grid: { show: false }, size: 50, values: (_u, v) => v.map((x) => `${x}%`) },
      ],
      series: [
        { value: (_u, v) => (v == null ? "–" : new Date(v * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC") },
        { label: "Attempts", stroke: accent, fill: accent + "22", width: 2, points: { show: false }, value: (_u, v) => n(v) },
        { label: "Failures", stroke: bad, fill: bad + "aa", paths: bars, points: { show: false }, value: (_u, v) => n(v) },
        { label: "Failure rate", scale: "rate", stroke: warn, width: 2, dash: [6, 3], spanGaps: false, points: { show: false }, value: (_u, v) => (v == null ? "–" : pct(v / 100)) },
      ],
    };
    const plot = new uPlot(opts, [xs, attempts, failures, rate], el);
    const ro = new ResizeObserver(() => plot.setSize({ width: el.clientWidth, height: 260 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.destroy();
    };
  }, [props.points, props.theme]);
  const total = props.points.reduce((a, p) => a + p.attempts, 0);
  const failed = props.points.reduce((a, p) => a + p.failures, 0);
  return (
    <figure class="chart" data-testid={props.testid}>
      <div ref={box} role="img" aria-label={`${props.label}: ${n(total)} attempts and ${n(failed)} failures over ${props.points.length} buckets`} />
    </figure>
  );
}

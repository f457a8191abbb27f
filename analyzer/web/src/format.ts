// Number, time and label formatting shared by every page (one place, so the browser tests can
// read numbers back the same way).

const int = new Intl.NumberFormat("en-US");

export function n(v: number | null | undefined): string {
  return v == null ? "–" : int.format(v);
}

/** A failure rate (0..1) as a percentage with one decimal. */
export function pct(v: number | null | undefined): string {
  return v == null ? "–" : `${(v * 100).toFixed(1)}%`;
}

export function dur(seconds: number | null | undefined): string {
  if (seconds == null) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

export function when(iso: string | null | undefined): string {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, " UTC");
}

const LABELS: Record<string, string> = {
  windows: "Windows",
  ios: "iOS",
  ipados: "iPadOS",
  macos: "macOS",
  android: "Android",
  linux: "Linux",
  unspecified: "Unspecified",
  user_driven_byod: "BYOD (user-driven)",
  entra_join: "Entra join",
  gpo_auto_enroll: "GPO auto-enroll",
  hybrid_join: "Hybrid join",
  autopilot_user_driven: "Autopilot user-driven",
  autopilot_self_deploying: "Autopilot self-deploying",
  autopilot_pre_provisioned: "Autopilot pre-provisioned",
  bulk_provisioning: "Bulk provisioning",
  apple_ade: "Apple ADE",
  apple_user_enrollment: "Apple User Enrollment",
  device_enrollment_manager: "Device enrollment manager",
  android_work_profile: "Android work profile",
  android_fully_managed: "Android fully managed",
  android_dedicated: "Android dedicated",
  co_management: "Co-management",
  dm_client_provisioning: "DM client provisioning",
  tpm: "TPM",
  os_version: "OS version",
  enrollment_method: "Enrollment method",
  mdm: "MDM",
  enrollment_status_page: "Enrollment Status Page",
};

/** A top code's named symbols as one label ("UserLicense / MENROLL_E_USERLICENSE"); "" when none. */
export function symbolsLabel(symbols: string[]): string {
  return symbols.filter((s) => s).join(" / ");
}

/** A readable label for an API value (`autopilot_user_driven` → "Autopilot user-driven"). */
export function label(v: string | null | undefined): string {
  if (v == null || v === "") return "(none)";
  if (LABELS[v]) return LABELS[v];
  const s = v.replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

export const RANGES: { id: string; label: string; seconds: number; bucket: string }[] = [
  { id: "6h", label: "Last 6 hours", seconds: 6 * 3600, bucket: "5m" },
  { id: "24h", label: "Last 24 hours", seconds: 86400, bucket: "15m" },
  { id: "7d", label: "Last 7 days", seconds: 7 * 86400, bucket: "1h" },
  { id: "30d", label: "Last 30 days", seconds: 30 * 86400, bucket: "1d" },
  { id: "90d", label: "Last 90 days", seconds: 90 * 86400, bucket: "1d" },
];

export const BUCKETS = ["5m", "15m", "1h", "1d"];
const BUCKET_SECS: Record<string, number> = { "5m": 300, "15m": 900, "1h": 3600, "1d": 86400 };

export interface Window {
  from: string;
  to: string;
  bucket: string;
  /** True when from/to came from the URL (a fixed window: no point refreshing). */
  fixed: boolean;
}

/** The time window of a view: explicit `from`/`to`, or a rolling `range` (default 7 days)
 *  of whole buckets ending with the current one: "last 30 days" by day is today and the 29
 *  days before it, "last 7 days" by hour ends at the next whole hour. Why whole buckets:
 *  - the chart's first bar is a whole bucket, not a partial one that looks like a dip;
 *  - the analyzer answers a range of whole days from day and week rollups alone, and one of
 *    whole hours from hourly ones and, for the last 9 days, day spans (one state per edge
 *    day), but reads raw events for a range's partial hours (BENCHMARKS.md, issue 7,
 *    eighteenth session: at 10M events a 30-day question by day is 1.5-11x faster than one
 *    ending at a minute; twentieth session: the 7-day view's breakdowns 2-3x faster with
 *    day spans than over hourly edges);
 *  - refreshes inside one bucket ask the rollups the same question.
 *  The window ends in the future by less than one bucket, which holds no events. */
export function resolveWindow(params: URLSearchParams, now = Date.now()): Window {
  const from = params.get("from");
  const to = params.get("to");
  const explicit = params.get("bucket");
  if (from && to) {
    const span = (Date.parse(to) - Date.parse(from)) / 1000;
    const auto = span <= 6 * 3600 ? "5m" : span <= 86400 ? "15m" : span <= 14 * 86400 ? "1h" : "1d";
    return { from, to, bucket: validBucket(explicit, span) ?? auto, fixed: true };
  }
  const r = RANGES.find((x) => x.id === params.get("range")) ?? RANGES[2];
  const bucket = validBucket(explicit, r.seconds) ?? r.bucket;
  const step = alignment(bucket, r.seconds) * 1000;
  const end = Math.ceil(now / step) * step;
  return {
    from: new Date(end - r.seconds * 1000).toISOString().replace(".000Z", "Z"),
    to: new Date(end).toISOString().replace(".000Z", "Z"),
    bucket,
    fixed: false,
  };
}

/** The step a rolling window's end is rounded up to: its bucket, unless that is over a
 *  quarter of the range (a 6-hour window by day would otherwise end at midnight and miss the
 *  last hours), then the next finer of day, hour, 15 and 5 minutes, minute. */
function alignment(bucket: string, rangeSeconds: number): number {
  const limit = Math.min(BUCKET_SECS[bucket] ?? 60, rangeSeconds / 4);
  return [86400, 3600, 900, 300, 60].find((s) => s <= limit) ?? 60;
}

/** The bucket if the API accepts it for this span (at most 5000 points). */
function validBucket(b: string | null, span: number): string | null {
  if (!b || !BUCKET_SECS[b]) return null;
  return span / BUCKET_SECS[b] <= 4000 ? b : null;
}

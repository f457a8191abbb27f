//! What an alert, a notification and a silence look like, stored and served.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::detect::Concentration;
use super::lifecycle::{Kind, Status};
use crate::query::filters::rfc3339;

/// A code behind an alert's failures, with cause and remediation from the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AlertTopCode)]
pub struct TopCode {
    pub code: Option<String>,
    pub symbol: String,
    pub count: u64,
    pub cause: String,
    pub remediation: String,
}

/// What the latest evaluation measured for an alert (stored as JSON with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Detail {
    pub window_start: i64,
    pub window_end: i64,
    pub observed_rate: f64,
    pub expected_rate: f64,
    pub observed_count: u64,
    pub expected_count: f64,
    pub attempts: u64,
    pub affected_devices: u64,
    pub affected_users: u64,
    /// `seasonal` (same hour of week), `rolling` or `threshold`.
    pub baseline: String,
    pub concentration: Vec<Concentration>,
    pub top_codes: Vec<TopCode>,
    pub remediation: String,
    /// The threshold rule's expression, for rule alerts.
    pub expr: Option<String>,
    /// The overdispersion the spike test used (1 = plain Poisson; 0 in alerts stored before
    /// it was recorded).
    #[serde(default)]
    pub dispersion: f64,
    /// The newest part of the window, when the spike test fired on it rather than on the
    /// whole window (`[alerts.spike] onset_intervals`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onset: Option<Onset>,
}

/// The newest part of an alert's window and what it held, when the spike fired on it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Onset {
    /// Unix seconds; the part ends with the window.
    pub start: i64,
    pub observed_count: u64,
    pub attempts: u64,
}

/// An alert as the API serves it and notifications carry it: one alert episode of one key
/// (tenant x category, tenant x dimension value, or a threshold rule x tenant). Ids are stable:
/// the same on every analyzer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Alert)]
pub struct AlertView {
    /// A UUID.
    pub alert_id: String,
    /// no_data: the tenant sent no attempts in the window; never taken for resolved.
    pub status: Status,
    /// `spike` (baseline-aware test) or the threshold rule's name.
    pub rule: String,
    pub tenant: String,
    /// Failure category; `all` for keys not tied to one.
    pub category: String,
    /// category, code, platform, os_version, enrollment_method, or rule.
    pub dimension: String,
    pub dimension_value: String,
    #[schema(format = DateTime)]
    pub window_start: String,
    #[schema(format = DateTime)]
    pub window_end: String,
    /// Failures / terminal attempts in the window.
    pub observed_rate: f64,
    /// Baseline rate (spike) or the threshold (rules).
    pub expected_rate: f64,
    pub observed_count: u64,
    pub expected_count: f64,
    pub attempts: u64,
    pub affected_devices: u64,
    pub affected_users: u64,
    /// seasonal, rolling, threshold (or empty).
    pub baseline: String,
    /// The threshold rule's expression.
    pub expr: Option<String>,
    /// Set when the spike test fired on the newest part of the window
    /// (`[alerts.spike] onset_intervals`) rather than on the whole window, whose figures the
    /// fields above keep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onset: Option<OnsetView>,
    pub concentration: Vec<Concentration>,
    pub top_codes: Vec<TopCode>,
    pub remediation: String,
    #[schema(format = DateTime)]
    pub started_at: String,
    #[schema(format = DateTime)]
    pub firing_at: Option<String>,
    #[schema(format = DateTime)]
    pub resolved_at: Option<String>,
    pub acknowledged_by: Option<String>,
    #[schema(format = DateTime)]
    pub acknowledged_at: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub summary: String,
    /// Absolute link to the dashboard view (hash route; no key inside).
    pub dashboard_url: String,
    /// Only on GET /alerts/{id}.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Vec<NotificationView>>,
}

/// The newest part of an alert's window, when the spike test fired on it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = AlertOnset)]
pub struct OnsetView {
    #[schema(format = DateTime)]
    pub window_start: String,
    pub observed_count: u64,
    pub attempts: u64,
}

/// A notification of an alert (`GET /api/v1/alerts/{id}`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NotificationView {
    pub notification_id: String,
    /// firing, renotify or resolved.
    pub kind: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub silenced_by: Option<String>,
}

/// One alert episode of one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub alert_id: String,
    pub alert_key: String,
    pub episode: i64,
    /// `spike` or the threshold rule's name.
    pub rule: String,
    pub tenant: String,
    /// The failure category (`all` for keys not tied to one, e.g. a platform's rate).
    pub category: String,
    pub dimension: String,
    pub dimension_value: String,
    pub status: Status,
    pub version: i64,
    pub started_at: i64,
    pub firing_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub recovering_since: Option<i64>,
    pub last_notified_at: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<i64>,
    pub updated_at: i64,
    pub detail: Detail,
}

fn opt_time(t: Option<i64>) -> Option<String> {
    t.map(|t| rfc3339(clamp(t)))
}

fn clamp(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

/// Percent-encodes a URL fragment's query value (RFC 3986 unreserved characters kept).
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Alert {
    /// The dashboard view of this alert (contract 4: hash routes, the key never in the URL).
    pub fn dashboard_url(&self, public_url: &str) -> String {
        let base = public_url.trim_end_matches('/');
        // An hour of context before the window, up to its end (or now for open alerts).
        let from = rfc3339(clamp(self.detail.window_start - 3600));
        let to = rfc3339(clamp(
            self.resolved_at
                .unwrap_or(self.detail.window_end)
                .max(self.detail.window_end),
        ));
        // A fleet-wide alert (tenant `*`) links to the all-tenant view.
        let q = if self.tenant == super::evaluator::ALL_TENANTS {
            format!("from={}&to={}", enc(&from), enc(&to))
        } else {
            format!(
                "tenant={}&from={}&to={}",
                enc(&self.tenant),
                enc(&from),
                enc(&to)
            )
        };
        match self.dimension.as_str() {
            "category" => format!("{base}/#/category/{}?{q}", enc(&self.dimension_value)),
            "code" => format!("{base}/#/code/{}?{q}", enc(&self.dimension_value)),
            _ => format!("{base}/#/overview?{q}"),
        }
    }

    /// The alert as served by `/api/v1/alerts` and carried in notifications (contract 3).
    pub fn view(&self, public_url: &str) -> AlertView {
        let d = &self.detail;
        AlertView {
            alert_id: self.alert_id.clone(),
            status: self.status,
            rule: self.rule.clone(),
            tenant: self.tenant.clone(),
            category: self.category.clone(),
            dimension: self.dimension.clone(),
            dimension_value: self.dimension_value.clone(),
            window_start: rfc3339(clamp(d.window_start)),
            window_end: rfc3339(clamp(d.window_end)),
            observed_rate: d.observed_rate,
            expected_rate: d.expected_rate,
            observed_count: d.observed_count,
            expected_count: d.expected_count,
            attempts: d.attempts,
            affected_devices: d.affected_devices,
            affected_users: d.affected_users,
            baseline: d.baseline.clone(),
            expr: d.expr.clone(),
            onset: d.onset.map(|o| OnsetView {
                window_start: rfc3339(clamp(o.start)),
                observed_count: o.observed_count,
                attempts: o.attempts,
            }),
            concentration: d.concentration.clone(),
            top_codes: d.top_codes.clone(),
            remediation: d.remediation.clone(),
            started_at: rfc3339(clamp(self.started_at)),
            firing_at: opt_time(self.firing_at),
            resolved_at: opt_time(self.resolved_at),
            acknowledged_by: self.acknowledged_by.clone(),
            acknowledged_at: opt_time(self.acknowledged_at),
            updated_at: rfc3339(clamp(self.updated_at)),
            summary: self.summary(),
            dashboard_url: self.dashboard_url(public_url),
            notifications: None,
        }
    }

    /// [`Alert::view`] as a JSON value (the CLI and notification bodies).
    pub fn to_json(&self, public_url: &str) -> Value {
        serde_json::to_value(self.view(public_url)).unwrap_or(Value::Null)
    }

    /// One line a human reads first (chat messages, syslog `msg`).
    pub fn summary(&self) -> String {
        let d = &self.detail;
        let what = if self.dimension == "category" {
            format!("{} failures", self.category)
        } else {
            format!("failures with {} {}", self.dimension, self.dimension_value)
        };
        let scope = if self.tenant == super::evaluator::ALL_TENANTS {
            "across all tenants".to_owned()
        } else {
            format!("in tenant {}", self.tenant)
        };
        let mut s = format!(
            "{}: {what} {scope} at {:.1}% of attempts (expected {:.1}%): {} failures on {} devices",
            self.status.as_str().to_uppercase(),
            d.observed_rate * 100.0,
            d.expected_rate * 100.0,
            d.observed_count,
            d.affected_devices,
        );
        if let Some(c) = d.concentration.first() {
            s.push_str(&format!(
                "; concentrated on {} {} ({:.0}% of the excess)",
                c.dimension,
                c.value,
                c.share * 100.0
            ));
        }
        s
    }
}

/// A notification body (the webhook's JSON and the source of every other format).
pub fn notification_json(
    alert: &Alert,
    kind: Kind,
    notification_id: &str,
    at: i64,
    public_url: &str,
) -> Value {
    let mut v = alert.to_json(public_url);
    if let Value::Object(m) = &mut v {
        m.insert("notification_id".into(), json!(notification_id));
        m.insert("kind".into(), json!(kind.as_str()));
        m.insert("sent_at".into(), json!(rfc3339(clamp(at))));
        m.insert(
            "observed".into(),
            json!({"rate": alert.detail.observed_rate, "count": alert.detail.observed_count}),
        );
        m.insert(
            "expected".into(),
            json!({"rate": alert.detail.expected_rate, "count": alert.detail.expected_count}),
        );
    }
    v
}

/// A silence: notifications of alerts matching every matcher are suppressed until `ends_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_by: String,
    pub comment: String,
    pub created_at: i64,
}

/// A silence as the API serves it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Silence)]
pub struct SilenceView {
    pub id: String,
    pub matchers: Vec<Matcher>,
    #[schema(format = DateTime)]
    pub starts_at: String,
    #[schema(format = DateTime)]
    pub ends_at: String,
    pub active: bool,
    pub created_by: String,
    pub comment: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// Equality on one alert field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    /// One of tenant, category, dimension, dimension_value, rule.
    #[schema(schema_with = matcher_names)]
    pub name: String,
    pub value: String,
}

/// Fields a matcher may name.
pub const MATCHER_NAMES: &[&str] = &["tenant", "category", "dimension", "dimension_value", "rule"];

fn matcher_names() -> utoipa::openapi::schema::Object {
    crate::api::doc::one_of(MATCHER_NAMES)
}

impl Silence {
    pub fn active(&self, now: i64) -> bool {
        self.starts_at <= now && now < self.ends_at
    }
    pub fn matches(&self, a: &Alert) -> bool {
        self.matchers.iter().all(|m| {
            let v = match m.name.as_str() {
                "tenant" => &a.tenant,
                "category" => &a.category,
                "dimension" => &a.dimension,
                "dimension_value" => &a.dimension_value,
                "rule" => &a.rule,
                _ => return false,
            };
            *v == m.value
        })
    }
    /// The tenant this silence is restricted to, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.matchers
            .iter()
            .find(|m| m.name == "tenant")
            .map(|m| m.value.as_str())
    }
    /// The silence as the API serves it.
    pub fn view(&self, now: i64) -> SilenceView {
        SilenceView {
            id: self.id.clone(),
            matchers: self.matchers.clone(),
            starts_at: rfc3339(clamp(self.starts_at)),
            ends_at: rfc3339(clamp(self.ends_at)),
            active: self.active(now),
            created_by: self.created_by.clone(),
            comment: self.comment.clone(),
            created_at: rfc3339(clamp(self.created_at)),
        }
    }

    /// [`Silence::view`] as a JSON value (the CLI).
    pub fn to_json(&self, now: i64) -> Value {
        serde_json::to_value(self.view(now)).unwrap_or(Value::Null)
    }
}

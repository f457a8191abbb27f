//! Prometheus metrics of the alert evaluator, registered into the analyzer's registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub struct AlertMetrics {
    pub evaluations: Counter,
    pub evaluation_failures: Counter,
    pub evaluation_seconds: Histogram,
    pub notifications: Counter,
    pub silenced: Counter,
}

impl AlertMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            evaluations: Counter::default(),
            evaluation_failures: Counter::default(),
            evaluation_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            notifications: Counter::default(),
            silenced: Counter::default(),
        };
        registry.register(
            "fleetpulse_alert_evaluations",
            "Completed alert evaluations",
            m.evaluations.clone(),
        );
        registry.register(
            "fleetpulse_alert_evaluation_failures",
            "Alert evaluations that failed (state left unchanged)",
            m.evaluation_failures.clone(),
        );
        registry.register(
            "fleetpulse_alert_evaluation_duration_seconds",
            "Duration of one alert evaluation",
            m.evaluation_seconds.clone(),
        );
        registry.register(
            "fleetpulse_alert_notifications",
            "Alert notifications recorded by this analyzer (each once across analyzers)",
            m.notifications.clone(),
        );
        registry.register(
            "fleetpulse_alert_notifications_silenced",
            "Alert notifications suppressed by a silence",
            m.silenced.clone(),
        );
        m
    }
}

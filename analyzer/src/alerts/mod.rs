//! Alerts on enrollment-failure spikes and threshold rules.
//!
//! - [`config`]: the `[alerts]` section, every knob with its documented default.
//! - [`detect`]: the baseline-aware spike test and the concentration analysis (pure).
//! - [`rules`]: plain threshold rules (`count(category=tpm) > 50 over 1h`), parsed purely.
//! - [`lifecycle`]: pending -> firing -> resolved (+ `no_data`), hysteresis, one notification
//!   per episode, re-notify (pure state machine).
//! - [`store`]: state, history, silences and the notification outbox through sqlx, with the
//!   compare-and-set that makes each notification happen once across analyzers.
//! - [`evaluator`]: the loop in `serve`, asking the query engine (never its own SQL).
//! - [`model`]: the alert object served by `/api/v1/alerts` and carried in notifications.
//! - [`backtest`]: the evaluator replayed over past windows with a private store (nothing sent).

pub mod backtest;
pub mod config;
pub mod detect;
pub mod evaluator;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod rules;
pub mod store;

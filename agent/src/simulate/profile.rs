//! The fleet model's parameters (`--model FILE`, TOML; every key optional): how often a new
//! enrollment session fails and why, how tenants differ, how traffic follows the working week,
//! and how failed devices retry. Defaults and the published figures behind them are in
//! docs/simulator.md; keep the two in step.
//!
//! ```toml
//! failure_rate = 0.08            # first attempts failing in a typical tenant
//! tenants = ["healthy", "misconfigured"]   # profiles in token order; others "typical"
//! utc_offsets_hours = [-5, 1]    # tenants' time zones (business hours are local)
//! monthly_growth = 0.03          # the fleet grows 3 % a month
//! seasonality = true             # time of day and day of week
//! waves = true                   # refresh projects: a few hours at 2.5-5x some weekday
//! [mix]                          # relative weights of failure categories
//! network = 30
//! license = 14
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::model::Category;

/// A tenant's character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TenantProfile {
    /// Well run: licences assigned before devices ship, scopes and restrictions right.
    Healthy,
    /// The base rate.
    Typical,
    /// Badly configured: licences, MDM user scope and restrictions out of step with the fleet.
    Misconfigured,
}

impl TenantProfile {
    /// Multiplier of the base failure rate.
    pub fn failure_multiplier(self) -> f64 {
        match self {
            TenantProfile::Healthy => 0.4,
            TenantProfile::Typical => 1.0,
            TenantProfile::Misconfigured => 1.6,
        }
    }

    /// Extra weight of a category in this tenant's failures (configuration-caused ones).
    pub fn category_multiplier(self, category: Category) -> f64 {
        match (self, category) {
            (TenantProfile::Misconfigured, Category::License) => 3.0,
            (TenantProfile::Misconfigured, Category::TenantConfig) => 4.0,
            (TenantProfile::Misconfigured, Category::PlatformRestricted) => 2.0,
            (TenantProfile::Misconfigured, Category::DeviceLimit) => 1.5,
            _ => 1.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TenantProfile::Healthy => "healthy",
            TenantProfile::Typical => "typical",
            TenantProfile::Misconfigured => "misconfigured",
        }
    }
}

/// The model's parameters, as read from TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Share of new sessions whose first attempt fails in a typical tenant. Default 0.08.
    pub failure_rate: f64,
    /// Relative weights of the failure categories (any positive numbers; missing categories
    /// keep their default weight, 0 removes one).
    pub mix: BTreeMap<String, f64>,
    /// Profiles of the tenants, in the order of their tokens; later tenants are `typical`.
    /// Default: the first tenant healthy, the second misconfigured.
    pub tenants: Vec<TenantProfile>,
    /// UTC offsets of the tenants' business hours, in token order (whole hours); later
    /// tenants repeat the list. Default [-5, 1, 9, -8].
    pub utc_offsets_hours: Vec<i8>,
    /// Monthly growth of the fleet (devices enrolled and traffic). Default 0.03.
    pub monthly_growth: f64,
    /// Traffic follows time of day and day of week. Default true.
    pub seasonality: bool,
    /// Enrollment waves (refresh projects) on some weekdays. Default true.
    pub waves: bool,
}

/// Default relative weights of the failure categories (docs/simulator.md says why).
pub const DEFAULT_MIX: [(Category, f64); 10] = [
    (Category::Network, 30.0),
    (Category::License, 14.0),
    (Category::DeviceLimit, 12.0),
    (Category::TenantConfig, 8.0),
    (Category::PlatformRestricted, 8.0),
    (Category::UnsupportedDevice, 7.0),
    (Category::AlreadyEnrolled, 6.0),
    (Category::Certificate, 5.0),
    (Category::TpmAttestation, 5.0),
    (Category::Autopilot, 5.0),
];

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            failure_rate: 0.08,
            mix: BTreeMap::new(),
            tenants: vec![TenantProfile::Healthy, TenantProfile::Misconfigured],
            utc_offsets_hours: vec![-5, 1, 9, -8],
            monthly_growth: 0.03,
            seasonality: true,
            waves: true,
        }
    }
}

/// A model file or value that cannot be used; names the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ProfileError {
    ProfileError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl ModelConfig {
    /// Reads a model file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|source| ProfileError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if !(0.0..=0.95).contains(&self.failure_rate) {
            return Err(invalid(
                "failure_rate",
                format!("{} is outside 0..=0.95", self.failure_rate),
            ));
        }
        for (key, weight) in &self.mix {
            key.parse::<Category>()
                .map_err(|reason| invalid(format!("mix.{key}"), reason))?;
            if !(weight.is_finite() && *weight >= 0.0) {
                return Err(invalid(
                    format!("mix.{key}"),
                    format!("{weight} is not a weight >= 0"),
                ));
            }
        }
        if self.weights().iter().all(|(_, w)| *w == 0.0) && self.failure_rate > 0.0 {
            return Err(invalid("mix", "every category has weight 0"));
        }
        if let Some(offset) = self
            .utc_offsets_hours
            .iter()
            .find(|o| !(-12..=14).contains(*o))
        {
            return Err(invalid(
                "utc_offsets_hours",
                format!("{offset} is outside -12..=14"),
            ));
        }
        if !(0.0..=1.0).contains(&self.monthly_growth) {
            return Err(invalid(
                "monthly_growth",
                format!("{} is outside 0..=1", self.monthly_growth),
            ));
        }
        Ok(())
    }

    /// Category weights, normalised to sum 1 (defaults where the file says nothing).
    pub fn weights(&self) -> Vec<(Category, f64)> {
        let mut weights: Vec<(Category, f64)> = DEFAULT_MIX
            .iter()
            .map(|(category, default)| {
                let set = self
                    .mix
                    .iter()
                    .find(|(k, _)| k.parse::<Category>().ok() == Some(*category))
                    .map(|(_, w)| *w);
                (*category, set.unwrap_or(*default))
            })
            .collect();
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        if total > 0.0 {
            for (_, w) in &mut weights {
                *w /= total;
            }
        }
        weights
    }

    /// The profile of tenant `index`.
    pub fn tenant_profile(&self, index: usize) -> TenantProfile {
        self.tenants
            .get(index)
            .copied()
            .unwrap_or(TenantProfile::Typical)
    }

    /// The UTC offset (hours) of tenant `index`.
    pub fn utc_offset(&self, index: usize) -> i8 {
        if self.utc_offsets_hours.is_empty() {
            0
        } else {
            self.utc_offsets_hours[index % self.utc_offsets_hours.len()]
        }
    }

    /// Per-category failure probability of a first attempt in tenant `index` (no spike).
    pub fn category_rates(&self, index: usize) -> Vec<(Category, f64)> {
        let profile = self.tenant_profile(index);
        self.weights()
            .into_iter()
            .map(|(category, weight)| {
                (
                    category,
                    self.failure_rate
                        * profile.failure_multiplier()
                        * weight
                        * profile.category_multiplier(category),
                )
            })
            .collect()
    }
}

/// How a failure of a category gets resolved, and how people retry meanwhile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolution {
    /// Chance that the cause is ever fixed (otherwise the device gives up).
    pub fixed: f64,
    /// Median time until the fix, in hours (log-normal spread).
    pub median_hours: f64,
    /// The fix is an administrator's action, done in the tenant's business hours.
    pub by_admin: bool,
}

/// The resolution model of each category (docs/simulator.md).
pub fn resolution(category: Category) -> Resolution {
    let (fixed, median_hours, by_admin) = match category {
        // Transient: proxy, Wi-Fi, service hiccup; gone within the scheduled retries.
        Category::Network => (0.97, 0.3, false),
        Category::License => (0.85, 3.0, true),
        Category::DeviceLimit => (0.6, 6.0, true),
        Category::TenantConfig => (0.9, 4.0, true),
        Category::AlreadyEnrolled => (0.8, 2.0, true),
        // The user fixes the clock once told to.
        Category::Certificate => (0.9, 1.0, false),
        // Needs a Windows edition upgrade: mostly given up.
        Category::UnsupportedDevice => (0.3, 48.0, true),
        // Blocked by design; an exception is rare.
        Category::PlatformRestricted => (0.2, 24.0, true),
        // Firmware update or hardware swap.
        Category::TpmAttestation => (0.4, 72.0, true),
        // The device record is deleted and re-registered.
        Category::Autopilot => (0.9, 5.0, true),
    };
    Resolution {
        fixed,
        median_hours,
        by_admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_a_healthy_a_typical_and_a_misconfigured_tenant() {
        let config = ModelConfig::default();
        config.validate().unwrap();
        let total = |i| config.category_rates(i).iter().map(|(_, r)| r).sum::<f64>();
        let (healthy, misconfigured, typical) = (total(0), total(1), total(2));
        assert!((typical - 0.08).abs() < 1e-9, "{typical}");
        assert!((healthy - 0.032).abs() < 1e-9, "{healthy}");
        assert!((0.2..0.3).contains(&misconfigured), "{misconfigured}");
        let weights: f64 = config.weights().iter().map(|(_, w)| w).sum();
        assert!((weights - 1.0).abs() < 1e-9);
    }

    #[test]
    fn model_files_are_checked_key_by_key() {
        let config: ModelConfig =
            toml::from_str("failure_rate = 0.1\n[mix]\nlicence = 50\nnetwork = 0\n").unwrap();
        config.validate().unwrap();
        let weights = config.weights();
        let get = |c| weights.iter().find(|(k, _)| *k == c).unwrap().1;
        assert_eq!(get(Category::Network), 0.0);
        assert!(get(Category::License) > 0.4);
        let bad: ModelConfig = toml::from_str("[mix]\nnope = 1\n").unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .starts_with("mix.nope: unknown category")
        );
        let bad: ModelConfig = toml::from_str("failure_rate = 1.5\n").unwrap();
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "failure_rate: 1.5 is outside 0..=0.95"
        );
        assert!(toml::from_str::<ModelConfig>("failure_rat = 0.1\n").is_err());
        let tenants: ModelConfig = toml::from_str("tenants = [\"misconfigured\"]\n").unwrap();
        assert_eq!(tenants.tenant_profile(0), TenantProfile::Misconfigured);
        assert_eq!(tenants.tenant_profile(1), TenantProfile::Typical);
    }
}

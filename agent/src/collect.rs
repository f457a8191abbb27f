//! Which OS tools the agent runs, chosen at run time: the running OS by default, or
//! `collect.platform = "windows" | "macos" | "none"` (tests run the Windows and macOS
//! collection on Linux with stand-in tools), with configurable tool paths and event log
//! channels.
//!
//! ```toml
//! [collect]
//! platform = "auto"                 # or "windows", "macos", "none"
//! dsregcmd = "dsregcmd"             # program names are looked up on PATH
//! wevtutil = "wevtutil"
//! reg = "reg"
//! tpmtool = "tpmtool"
//! mdmdiagnosticstool = "MdmDiagnosticsTool.exe"
//! mdm_report_interval_secs = 3600  # MDMDiagReport.xml at most this often (default 1 h)
//! profiles = "/usr/bin/profiles"
//! channels = ["Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin",
//!             "Microsoft-Windows-User Device Registration/Admin",
//!             "Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot"]
//! ```

use serde::Deserialize;

use crate::sources::event_xml::{AUTOPILOT_CHANNEL, DEVICE_REGISTRATION_CHANNEL, DM_ADMIN_CHANNEL};

/// `collect.platform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformChoice {
    /// The running OS: Windows tools on Windows, `profiles` on macOS, nothing elsewhere.
    #[default]
    Auto,
    Windows,
    Macos,
    None,
}

/// The `[collect]` section of the config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CollectFile {
    pub platform: Option<PlatformChoice>,
    pub dsregcmd: Option<String>,
    pub wevtutil: Option<String>,
    pub reg: Option<String>,
    pub tpmtool: Option<String>,
    pub mdmdiagnosticstool: Option<String>,
    pub profiles: Option<String>,
    /// Seconds between two MDM diagnostics reports (default 3600).
    pub mdm_report_interval_secs: Option<u64>,
    pub channels: Option<Vec<String>>,
}

/// The tool set in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectPlatform {
    Windows,
    Macos,
    None,
}

/// Programs the shims run (names looked up on PATH, or paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub dsregcmd: String,
    pub wevtutil: String,
    pub reg: String,
    pub tpmtool: String,
    /// Writes the MDM diagnostics report (`-out <folder>`), read for its `MDMDiagReport.xml`.
    pub mdmdiagnosticstool: String,
    pub profiles: String,
}

impl Default for Tools {
    fn default() -> Self {
        Self {
            dsregcmd: "dsregcmd".into(),
            wevtutil: "wevtutil".into(),
            reg: "reg".into(),
            tpmtool: "tpmtool".into(),
            mdmdiagnosticstool: "MdmDiagnosticsTool.exe".into(),
            profiles: "/usr/bin/profiles".into(),
        }
    }
}

/// Every enrollment-relevant channel the event parser understands (the pre-1903 Autopilot
/// channel only exists on Windows 10 1803/1809: add it in `collect.channels` there).
pub fn default_channels() -> Vec<String> {
    [
        DM_ADMIN_CHANNEL,
        DEVICE_REGISTRATION_CHANNEL,
        AUTOPILOT_CHANNEL,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Resolved `[collect]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectSettings {
    pub platform: CollectPlatform,
    pub tools: Tools,
    pub channels: Vec<String>,
    /// How often the MDM diagnostics report is written and read.
    pub mdm_report_interval: std::time::Duration,
}

impl CollectSettings {
    /// Applies the file's choices over the defaults for the running OS.
    pub fn from_file(file: &CollectFile) -> Self {
        let defaults = Tools::default();
        let platform = match file.platform.unwrap_or_default() {
            PlatformChoice::Auto if cfg!(windows) => CollectPlatform::Windows,
            PlatformChoice::Auto if cfg!(target_os = "macos") => CollectPlatform::Macos,
            PlatformChoice::Auto | PlatformChoice::None => CollectPlatform::None,
            PlatformChoice::Windows => CollectPlatform::Windows,
            PlatformChoice::Macos => CollectPlatform::Macos,
        };
        Self {
            platform,
            tools: Tools {
                dsregcmd: file.dsregcmd.clone().unwrap_or(defaults.dsregcmd),
                wevtutil: file.wevtutil.clone().unwrap_or(defaults.wevtutil),
                reg: file.reg.clone().unwrap_or(defaults.reg),
                tpmtool: file.tpmtool.clone().unwrap_or(defaults.tpmtool),
                mdmdiagnosticstool: file
                    .mdmdiagnosticstool
                    .clone()
                    .unwrap_or(defaults.mdmdiagnosticstool),
                profiles: file.profiles.clone().unwrap_or(defaults.profiles),
            },
            channels: file.channels.clone().unwrap_or_else(default_channels),
            mdm_report_interval: std::time::Duration::from_secs(
                file.mdm_report_interval_secs.unwrap_or(3600),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_and_tools_are_chosen_by_the_file() {
        let file: CollectFile =
            toml::from_str("platform = \"windows\"\nwevtutil = \"/opt/standin/wevtutil\"\n")
                .unwrap();
        let settings = CollectSettings::from_file(&file);
        assert_eq!(settings.platform, CollectPlatform::Windows);
        assert_eq!(settings.tools.wevtutil, "/opt/standin/wevtutil");
        assert_eq!(settings.tools.dsregcmd, "dsregcmd");
        assert_eq!(settings.channels.len(), 3);
        assert!(settings.channels.iter().any(|c| c.ends_with("/Autopilot")));
        let auto = CollectSettings::from_file(&CollectFile::default());
        #[cfg(target_os = "linux")]
        assert_eq!(auto.platform, CollectPlatform::None);
        assert!(toml::from_str::<CollectFile>("platfrom = \"macos\"\n").is_err());
        assert!(toml::from_str::<CollectFile>("platform = \"beos\"\n").is_err());
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent/agent.toml");
        let file = crate::config::FileConfig::load(&path).unwrap();
        assert_eq!(
            CollectSettings::from_file(&file.collect).channels,
            default_channels()
        );
    }
}

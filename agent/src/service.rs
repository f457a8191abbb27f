//! `fleetpulse-agent service`: the Windows Service Control Manager entry point, on the
//! `windows-service` crate, so the agent installs as a native service:
//!
//! ```text
//! sc.exe create FleetpulseAgent start= auto binPath= "C:\Program Files\Fleetpulse\fleetpulse-agent.exe service --config C:\ProgramData\Fleetpulse\Agent\agent.toml"
//! ```
//!
//! Stop and Shutdown controls stop the agent gracefully (the same path as SIGTERM elsewhere).
//! The Windows part is compiled only on Windows (this project's Linux CI cannot build it; see
//! ARCHITECTURE.md), so it stays minimal: everything else is `runner::run`.

use crate::config::ConfigArgs;

/// The service name the entry point registers under (as given to `sc.exe create`).
pub const SERVICE_NAME: &str = "FleetpulseAgent";

/// Hands the process to the Service Control Manager and runs the agent until the service is
/// stopped. Blocks; call it before any async runtime exists.
pub fn run(config: ConfigArgs) -> anyhow::Result<()> {
    #[cfg(windows)]
    {
        scm::start(config)
    }
    #[cfg(not(windows))]
    {
        let _ = config;
        anyhow::bail!(
            "`service` is the Windows Service Control Manager entry point; elsewhere run \
             `fleetpulse-agent run` under systemd or launchd (deploy/agent/)"
        )
    }
}

#[cfg(windows)]
mod scm {
    use std::ffi::OsString;
    use std::sync::OnceLock;
    use std::time::Duration;

    use windows_service::service::{
        ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus,
        ServiceType,
    };
    use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
    use windows_service::{define_windows_service, service_dispatcher};

    use super::SERVICE_NAME;
    use crate::config::{ConfigArgs, Settings};

    /// The service main function only receives the SCM's start arguments: the command line's
    /// settings reach it through here.
    static CONFIG: OnceLock<ConfigArgs> = OnceLock::new();

    define_windows_service!(ffi_service_main, service_main);

    pub fn start(config: ConfigArgs) -> anyhow::Result<()> {
        let _ = CONFIG.set(config);
        service_dispatcher::start(SERVICE_NAME, ffi_service_main)?;
        Ok(())
    }

    fn service_main(_arguments: Vec<OsString>) {
        if let Err(err) = run_service() {
            tracing::error!(error = %format!("{err:#}"), "the agent service stopped with an error");
        }
    }

    fn status(state: ServiceState, exit_code: u32) -> ServiceStatus {
        ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
            } else {
                ServiceControlAccept::empty()
            },
            exit_code: ServiceExitCode::Win32(exit_code),
            checkpoint: 0,
            wait_hint: Duration::from_secs(10),
            process_id: None,
        }
    }

    fn run_service() -> anyhow::Result<()> {
        let config = CONFIG.get().cloned().unwrap_or_default();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let handle =
            service_control_handler::register(SERVICE_NAME, move |control| match control {
                ServiceControl::Stop | ServiceControl::Shutdown => {
                    let _ = stop_tx.send(true);
                    ServiceControlHandlerResult::NoError
                }
                ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
                _ => ServiceControlHandlerResult::NotImplemented,
            })?;
        let result = (|| -> anyhow::Result<()> {
            let settings = Settings::resolve(&config)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .max_blocking_threads(4)
                .enable_all()
                .build()?;
            handle.set_service_status(status(ServiceState::Running, 0))?;
            runtime.block_on(crate::runner::run(settings, stop_rx))
        })();
        handle.set_service_status(status(ServiceState::Stopped, u32::from(result.is_err())))?;
        result
    }
}

//! Offline Redfish conformance tooling: DMTF's service and interop validators and Ironic's
//! client library `sushy`, installed on first use into `target/redfish-tools/`, run against a
//! Redfish service on loopback, their results read back as counts and lines
//! (`cargo xtask redfish-check`, docs/fleet.md "Checking conformance").
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use xtask::redfish_tools::{self, Scenario, Service, Step};
//! let ws = xtask::workspace::Workspace::locate()?;
//! let tools = redfish_tools::ensure(&ws)?;
//! let service = Service { url: "https://127.0.0.1:8443".into(), user: "admin".into(), password: "pw".into() };
//! let logs = ws.target_dir.join("test-logs/redfish");
//! let schema = redfish_tools::service_validator(&tools, &service, &logs.join("service"))?;
//! let ironic = redfish_tools::interop_validator(&tools, &service, &logs.join("interop"))?;
//! assert!(schema.passed() && ironic.passed(), "{}\n{}", schema.render(20), ironic.render(20));
//! let run = redfish_tools::sushy_scenario(&tools, &service,
//!     &Scenario::new("web").steps(&[Step::AuthSession, Step::Inventory]), &logs)?;
//! assert_eq!(run.step(Step::Inventory).and_then(|s| s.field("arch")), Some("aarch64"));
//! # Ok(()) }
//! ```

pub mod emulator;
pub mod process;
pub mod serve;
pub mod setup;
pub mod sushy;
pub mod validate;

use std::path::Path;

use anyhow::Result;

pub use emulator::Emulator;
pub use serve::FileServer;
pub use setup::{Tools, ensure};
pub use sushy::{Report, Scenario, Step, StepResult};
pub use validate::{Counts, Service, Summary, Validator};

/// DMTF's Redfish-Service-Validator over the whole tree (CSDL from `nv-redfish-schema`, Basic
/// auth, nothing fetched from outside); reports in `log_dir`.
pub fn service_validator(tools: &Tools, service: &Service, log_dir: &Path) -> Result<Summary> {
    validate::service_validator(tools, service, log_dir)
}

/// DMTF's Redfish-Interop-Validator with Ironic's `OpenStackIronicProfile.v1_2_0.json`
/// (Basic auth); reports in `log_dir`.
pub fn interop_validator(tools: &Tools, service: &Service, log_dir: &Path) -> Result<Summary> {
    validate::interop_validator(tools, service, log_dir)
}

/// The sushy scenario's chosen steps against one system; `log_dir/sushy.log`.
pub fn sushy_scenario(
    tools: &Tools,
    service: &Service,
    scenario: &Scenario,
    log_dir: &Path,
) -> Result<Report> {
    sushy::run(tools, service, scenario, log_dir)
}

/// Everything `cargo xtask redfish-check` runs.
#[derive(Debug)]
pub struct Check {
    pub service: Summary,
    pub interop: Summary,
    /// When a system was named.
    pub sushy: Option<Report>,
}

impl Check {
    /// Both validators without failures and every sushy step passed.
    pub fn passed(&self) -> bool {
        self.service.passed()
            && self.interop.passed()
            && self.sushy.as_ref().is_none_or(|r| r.passed)
    }

    /// The summaries, up to `max` failure lines each, and the sushy steps.
    pub fn render(&self, max: usize) -> String {
        let mut text = format!("{}\n{}", self.service.render(max), self.interop.render(max));
        if let Some(report) = &self.sushy {
            text.push_str("\nsushy scenario:");
            for line in report.render().lines() {
                text.push_str("\n  ");
                text.push_str(line);
            }
        }
        text
    }
}

/// Both validators, then the sushy scenario when one is given; logs under `log_dir`
/// (`service/`, `interop/`, `sushy.log`).
pub fn check(
    tools: &Tools,
    service: &Service,
    scenario: Option<&Scenario>,
    log_dir: &Path,
) -> Result<Check> {
    let schema = service_validator(tools, service, &log_dir.join("service"))?;
    let ironic = interop_validator(tools, service, &log_dir.join("interop"))?;
    let sushy = scenario
        .map(|s| sushy_scenario(tools, service, s, log_dir))
        .transpose()?;
    Ok(Check {
        service: schema,
        interop: ironic,
        sushy,
    })
}

//! Running `sushy_scenario.py` (what Ironic's conductor does to one system, through Ironic's
//! own client library) and reading its `SUSHY <step> ok|FAIL <details>` lines.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};

use super::process;
use super::setup::Tools;
use super::validate::Service;

/// One step of the scenario, in the script's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// POST a session (X-Auth-Token, Location), use it, DELETE it.
    AuthSession,
    /// Read the systems with HTTP Basic authentication.
    AuthBasic,
    /// Ironic's out-of-band inspection: memory, CPUs and architecture, local disk, NIC MACs.
    Inventory,
    /// `ForceOff` (unless already off), then wait for `PowerState` Off.
    PowerOff,
    /// Boot override target `Cd`, enabled `Once`.
    BootCd,
    /// Eject whatever is in, then `InsertMedia` of the `media` URL on the first CD/DVD device.
    InsertMedia,
    /// `On` (unless already on), then wait for `PowerState` On.
    PowerOn,
    /// `EjectMedia` on every inserted CD/DVD device.
    EjectMedia,
    /// Ironic's reboot: `ForceOff` and wait, `On` and wait; reports the boot override after.
    PowerCycle,
}

impl Step {
    /// Every step, in the order Ironic's deploy goes through them.
    pub const ALL: [Step; 9] = [
        Step::AuthSession,
        Step::AuthBasic,
        Step::Inventory,
        Step::PowerOff,
        Step::BootCd,
        Step::InsertMedia,
        Step::PowerOn,
        Step::EjectMedia,
        Step::PowerCycle,
    ];

    /// The script's name for the step.
    pub fn name(self) -> &'static str {
        match self {
            Step::AuthSession => "auth-session",
            Step::AuthBasic => "auth-basic",
            Step::Inventory => "inventory",
            Step::PowerOff => "power-off",
            Step::BootCd => "boot-cd",
            Step::InsertMedia => "insert-media",
            Step::PowerOn => "power-on",
            Step::EjectMedia => "eject-media",
            Step::PowerCycle => "power-cycle",
        }
    }

    /// The step named `name`.
    pub fn parse(name: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One run of the script: which system, which steps.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The system's `Id` or its `/redfish/v1/Systems/...` path.
    pub system: String,
    /// Steps to run, in order; empty means all.
    pub steps: Vec<Step>,
    /// Image URL for [`Step::InsertMedia`].
    pub media: Option<String>,
    /// Do not verify the service's TLS certificate (it is self-signed).
    pub insecure: bool,
    /// The longest wait for a power state after a reset.
    pub power_timeout: Duration,
}

impl Scenario {
    /// Every step against `system`, no media, TLS not verified, 120 s per power change.
    pub fn new(system: &str) -> Self {
        Self {
            system: system.to_string(),
            steps: Vec::new(),
            media: None,
            insecure: true,
            power_timeout: Duration::from_secs(120),
        }
    }

    /// Only these steps.
    pub fn steps(mut self, steps: &[Step]) -> Self {
        self.steps = steps.to_vec();
        self
    }

    /// The image URL for insert-media.
    pub fn media(mut self, url: &str) -> Self {
        self.media = Some(url.to_string());
        self
    }

    /// The hard limit for the whole run: a minute, plus per step a power wait and two
    /// minutes of HTTP.
    pub fn limit(&self) -> Duration {
        let steps = if self.steps.is_empty() {
            Step::ALL.len()
        } else {
            self.steps.len()
        } as u32;
        Duration::from_secs(60) + (self.power_timeout + Duration::from_secs(120)) * steps
    }
}

/// The result of one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepResult {
    /// The script's step name (`inventory`, ...).
    pub step: String,
    pub ok: bool,
    /// `key=value ...` when ok, the reason when not.
    pub detail: String,
}

impl StepResult {
    /// The value of `key=value` in the details (`memory_gib`, `arch`, `macs`, ...).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.detail
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// The line as the script printed it.
    pub fn line(&self) -> String {
        let word = if self.ok { "ok" } else { "FAIL" };
        format!("SUSHY {} {word} {}", self.step, self.detail)
            .trim_end()
            .to_string()
    }
}

/// What a run of the script reported.
#[derive(Clone, Debug)]
pub struct Report {
    /// Every step that ran, in order (the last one failed if any did).
    pub steps: Vec<StepResult>,
    /// The script exited 0 (every step passed).
    pub passed: bool,
    /// `sushy.log`: the command, stdout and stderr (sushy's warnings).
    pub log: PathBuf,
}

impl Report {
    /// The result of `step`, if it ran.
    pub fn step(&self, step: Step) -> Option<&StepResult> {
        self.steps.iter().find(|s| s.step == step.name())
    }

    /// The step lines, one per line.
    pub fn render(&self) -> String {
        self.steps
            .iter()
            .map(StepResult::line)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs the scenario against `service`; the log goes to `log_dir/sushy.log`. Fails only when
/// the script could not run at all (a usage error, a timeout, no step line); a step that
/// failed is in the report.
pub fn run(
    tools: &Tools,
    service: &Service,
    scenario: &Scenario,
    log_dir: &Path,
) -> Result<Report> {
    let mut cmd = Command::new(tools.python());
    cmd.arg(&tools.sushy_scenario)
        .args(["--url", &service.url, "--user", &service.user])
        .args([
            "--password",
            &service.password,
            "--system",
            &scenario.system,
        ])
        .args([
            "--power-timeout",
            &scenario.power_timeout.as_secs().to_string(),
        ]);
    if let Some(media) = &scenario.media {
        cmd.args(["--media", media]);
    }
    if scenario.insecure {
        cmd.arg("--insecure");
    }
    cmd.args(scenario.steps.iter().map(|s| s.name()));
    service.isolate(&mut cmd)?;
    let log = log_dir.join("sushy.log");
    let limit = scenario.limit();
    let done = process::run(&mut cmd, limit, Some(&log), &service.password)?;
    let steps = parse_lines(&done.stdout);
    let code = done.status.and_then(|s| s.code());
    if done.status.is_none() || code == Some(2) || (steps.is_empty() && !done.success()) {
        bail!(
            "the sushy scenario did not run ({}; log {}):\n{}",
            done.describe(limit),
            log.display(),
            done.tail(10)
        );
    }
    Ok(Report {
        passed: done.success() && steps.iter().all(|s| s.ok),
        steps,
        log,
    })
}

/// The `SUSHY <step> ok|FAIL [details]` lines of the script's output (others are ignored).
pub fn parse_lines(stdout: &str) -> Vec<StepResult> {
    stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("SUSHY ")?;
            let mut parts = rest.splitn(3, ' ');
            let step = parts.next()?.to_string();
            let ok = match parts.next()? {
                "ok" => true,
                "FAIL" => false,
                _ => return None,
            };
            let detail = parts.next().unwrap_or("").to_string();
            Some(StepResult { step, ok, detail })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_round_trip_and_match_the_script() {
        // The script's STEPS list has the same names, in the same order.
        let script = super::super::setup::SUSHY_SCENARIO;
        let mut last = 0;
        for step in Step::ALL {
            assert_eq!(Step::parse(step.name()), Some(step));
            let at = script.find(&format!("    \"{}\",\n", step.name()));
            assert!(at.is_some_and(|at| at > last), "{}", step.name());
            last = at.unwrap_or(0);
        }
        assert_eq!(Step::parse("reboot"), None);
    }

    #[test]
    fn parses_step_lines() {
        let out = "noise\n\
            SUSHY auth-basic ok systems=4\n\
            SUSHY inventory ok system=web memory_gib=1 cpus=2 arch=aarch64 disk_bytes=4294967296 local_gb=3 macs=52:54:00:6d:76:00,52:54:00:6d:76:01 boot_mode=UEFI\n\
            SUSHY power-off ok state=Off already=yes\n\
            SUSHY boot-cd FAIL BootSourceOverrideEnabled reads Continuous after the PATCH\n\
            SUSHY bogus maybe\n";
        let steps = parse_lines(out);
        assert_eq!(steps.len(), 4);
        assert_eq!(
            steps[0],
            StepResult {
                step: "auth-basic".into(),
                ok: true,
                detail: "systems=4".into()
            }
        );
        assert_eq!(steps[1].field("arch"), Some("aarch64"));
        assert_eq!(steps[1].field("memory_gib"), Some("1"));
        assert_eq!(
            steps[1].field("macs"),
            Some("52:54:00:6d:76:00,52:54:00:6d:76:01")
        );
        assert_eq!(steps[1].field("mac"), None);
        assert!(!steps[3].ok);
        assert_eq!(
            steps[3].line(),
            "SUSHY boot-cd FAIL BootSourceOverrideEnabled reads Continuous after the PATCH"
        );
        let bare = parse_lines("SUSHY power-on ok\n");
        assert_eq!(bare[0].detail, "");
        assert_eq!(bare[0].line(), "SUSHY power-on ok");
    }

    #[test]
    fn the_limit_grows_with_the_steps() {
        let all = Scenario::new("1");
        let two = Scenario::new("1").steps(&[Step::PowerOff, Step::PowerOn]);
        assert_eq!(two.limit(), Duration::from_secs(60 + 2 * 240));
        assert_eq!(all.limit(), Duration::from_secs(60 + 9 * 240));
        assert_eq!(
            Scenario::new("1").media("http://x/i.iso").media.as_deref(),
            Some("http://x/i.iso")
        );
    }
}

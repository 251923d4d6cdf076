//! `cargo xtask redfish-check`: DMTF's two validators and the sushy scenario against a Redfish
//! service (or sushy-tools' emulator, to prove the tools), offline.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::redfish_tools::emulator::REFERENCE;
use crate::redfish_tools::{self, Emulator, FileServer, Scenario, Service, Step};
use crate::workspace::Workspace;

/// Check a Redfish service with DMTF's service and interop validators (Ironic's profile) and,
/// with --system, drive one system through Ironic's steps with sushy. Exit 0 when nothing failed.
#[derive(clap::Args)]
pub struct Args {
    /// The service's base URL, e.g. https://127.0.0.1:8443 (loopback only: nothing else is reachable).
    #[arg(long, required_unless_present = "emulator")]
    pub url: Option<String>,
    /// User name (HTTP Basic authentication; sushy also tries a session).
    #[arg(long, required_unless_present = "emulator")]
    pub user: Option<String>,
    /// Password.
    #[arg(long, required_unless_present = "emulator")]
    pub password: Option<String>,
    /// Run the sushy scenario against this system (Id or /redfish/v1/Systems/... path).
    #[arg(long)]
    pub system: Option<String>,
    /// Image URL for the scenario's insert-media step.
    #[arg(long)]
    pub media: Option<String>,
    /// Scenario steps, comma-separated (default: all): auth-session, auth-basic, inventory,
    /// power-off, boot-cd, insert-media, power-on, eject-media, power-cycle.
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<String>,
    /// Do not verify the service's TLS certificate in the scenario (the validators never do).
    #[arg(long)]
    pub insecure: bool,
    /// At most this many failure lines per validator.
    #[arg(long, default_value_t = 40)]
    pub max_lines: usize,
    /// Check sushy-tools' emulator (started on 127.0.0.1, every scenario step tried on its own
    /// against its fake system) and compare the scores with the reference.
    #[arg(long, conflicts_with_all = ["url", "user", "password", "system", "media", "steps"])]
    pub emulator: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let ws = Workspace::locate()?;
    let tools = redfish_tools::ensure(&ws)?;
    let log_dir = ws.target_dir.join("redfish-check");
    println!("tools: {}", redfish_tools::Tools::versions());
    if args.emulator {
        return emulator(&ws, &tools, &log_dir.join("emulator"), args.max_lines);
    }
    let steps = args
        .steps
        .iter()
        .map(|s| Step::parse(s.trim()).with_context(|| format!("unknown scenario step {s:?}")))
        .collect::<Result<Vec<_>>>()?;
    if (!steps.is_empty() || args.media.is_some()) && args.system.is_none() {
        bail!("--steps and --media need --system (the scenario's system)");
    }
    let service = Service {
        url: args.url.context("--url")?,
        user: args.user.context("--user")?,
        password: args.password.context("--password")?,
    };
    let scenario = args.system.as_deref().map(|system| Scenario {
        steps,
        media: args.media.clone(),
        insecure: args.insecure,
        ..Scenario::new(system)
    });
    let check = redfish_tools::check(&tools, &service, scenario.as_ref(), &log_dir)?;
    println!("{}", check.render(args.max_lines));
    println!("logs: {}", ws.display(&log_dir));
    Ok(if check.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The emulator run: scores against [`REFERENCE`] (exit 0 when they match) and every step
/// of the scenario on its own.
fn emulator(
    ws: &Workspace,
    tools: &redfish_tools::Tools,
    log_dir: &std::path::Path,
    max_lines: usize,
) -> Result<ExitCode> {
    let emulator = Emulator::start(tools, log_dir, Duration::from_secs(1800))?;
    let service = emulator.service();
    let system = emulator.first_system()?;
    println!("sushy-emulator --fake at {} (system {system})", service.url);
    let check = redfish_tools::check(tools, &service, None, log_dir)?;
    println!("{}", check.render(max_lines));
    let media = FileServer::start("boot.iso", vec![0u8; 1 << 20])?;
    println!("sushy scenario, one step at a time:");
    for step in Step::ALL {
        let scenario = Scenario::new(&system).steps(&[step]).media(&media.url());
        let report = redfish_tools::sushy_scenario(
            tools,
            &service,
            &scenario,
            &log_dir.join(format!("sushy-{}", step.name())),
        )?;
        println!("  {}", report.render());
    }
    let (service_ref, interop_ref) = REFERENCE;
    let same = check.service.counts == service_ref && check.interop.counts == interop_ref;
    println!(
        "reference: service {} pass / {} fail, interop {} pass / {} fail: {}",
        service_ref.pass,
        service_ref.fail,
        interop_ref.pass,
        interop_ref.fail,
        if same { "matched" } else { "DIFFERENT" }
    );
    println!("logs: {}", ws.display(log_dir));
    Ok(if same {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

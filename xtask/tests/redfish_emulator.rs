//! The Redfish conformance tooling against sushy-tools' emulator (`sushy-emulator --fake` on
//! 127.0.0.1): the validators reproduce the emulator's known scores and the sushy scenario
//! passes every step the emulator implements.
//!
//! Ignored by default: the first run installs the tools from the package registries (about a
//! minute), and a run takes about 30 s even when they are cached, too slow for the host unit
//! tests of `cargo xtask test`. Run it with
//! `cargo test -p xtask --test redfish_emulator -- --ignored` (or `cargo xtask redfish-check
//! --emulator`, which prints the same numbers).

use std::time::Duration;

use xtask::redfish_tools::emulator::REFERENCE;
use xtask::redfish_tools::{self, Emulator, FileServer, Scenario, Step};
use xtask::workspace::Workspace;

#[test]
#[ignore = "installs the Redfish tools from the package registries on first use; ~30 s"]
fn the_tools_score_the_emulator_as_the_reference_says() {
    let ws = Workspace::locate().unwrap();
    let tools = redfish_tools::ensure(&ws).unwrap();
    let logs = ws.target_dir.join("test-logs/redfish-emulator");
    let emulator = Emulator::start(&tools, &logs, Duration::from_secs(600)).unwrap();
    let service = emulator.service();

    let check = redfish_tools::check(&tools, &service, None, &logs).unwrap();
    let (service_ref, interop_ref) = REFERENCE;
    assert_eq!(
        check.service.counts,
        service_ref,
        "{}",
        check.service.render(50)
    );
    assert_eq!(
        check.interop.counts,
        interop_ref,
        "{}",
        check.interop.render(50)
    );
    // Every counted failure is listed, with what the emulator is known to get wrong.
    assert_eq!(check.service.failures.len() as u64, service_ref.fail);
    let has = |lines: &[String], text: &str| lines.iter().any(|l| l.contains(text));
    assert!(has(&check.service.failures, "Copyright Annotation Error"));
    assert!(has(
        &check.service.failures,
        "'HealthRollUp' is not defined"
    ));
    assert!(has(
        &check.service.failures,
        "The property 'Links' is mandatory"
    ));
    assert_eq!(check.interop.failures.len() as u64, interop_ref.fail);
    assert!(has(
        &check.interop.failures,
        "'TotalSystemMemoryGiB' is not present"
    ));
    assert!(has(&check.interop.failures, "\"StorageCollection\""));
    // The Boot override's Mandatory write requirements cannot be tested on it.
    assert_eq!(
        check.interop.mandatory_not_tested.len(),
        3,
        "{:?}",
        check.interop.mandatory_not_tested
    );
    assert!(!check.passed());

    // The scenario, a step at a time: what the emulator implements passes.
    let system = emulator.first_system().unwrap();
    let media = FileServer::start("boot.iso", vec![0x5a; 64 << 10]).unwrap();
    let run = |step: Step| {
        let scenario = Scenario::new(&system).steps(&[step]).media(&media.url());
        let report =
            redfish_tools::sushy_scenario(&tools, &service, &scenario, &logs.join(step.name()))
                .unwrap();
        assert_eq!(report.steps.len(), 1, "{}", report.render());
        report.steps[0].clone()
    };
    for step in [
        Step::AuthBasic,
        Step::PowerOff,
        Step::InsertMedia,
        Step::PowerOn,
        Step::EjectMedia,
        Step::PowerCycle,
    ] {
        let result = run(step);
        assert!(result.ok, "{}", result.line());
    }
    assert_eq!(media.served(), 1, "the emulator fetched the image once");
    // What it lacks fails, with the reason.
    let session = run(Step::AuthSession);
    assert!(
        !session.ok && session.detail.contains("SessionService"),
        "{}",
        session.line()
    );
    let inventory = run(Step::Inventory);
    assert!(
        !inventory.ok
            && inventory
                .detail
                .contains("no MemorySummary.TotalSystemMemoryGiB"),
        "{}",
        inventory.line()
    );
    assert!(
        inventory.detail.contains("macs=00:5c:52:31:3a:9c"),
        "{}",
        inventory.line()
    );
    let boot = run(Step::BootCd);
    assert!(
        !boot.ok && boot.detail.contains("reads Continuous"),
        "{}",
        boot.line()
    );
}

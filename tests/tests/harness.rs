//! The harness itself, against the probe booted natively (no microvisor, no EL2): the probe
//! reports the whole QEMU machine as slice `native`, and a wrong expectation must fail.

use microvisor_tests::{BootPath, Expect, NATIVE_SLICE, Scenario, slice};

#[test]
fn native_probe_reports_the_whole_machine_and_keeps_beating() {
    Scenario::new("native_probe")
        .inline_node(2, 256 << 20)
        .boot(BootPath::Native)
        .cmdline("heartbeat=300")
        .all_healthy()
        .expect(Expect::Line {
            pattern: slice(NATIVE_SLICE, "^HEARTBEAT [0-9]+ ok$"),
            count: 3,
        })
        .expect(Expect::line(slice(
            NATIVE_SLICE,
            r#"^SLICE-REPORT .*"cmdline":"heartbeat=300""#,
        )))
        .run();
}

#[test]
fn a_report_that_differs_from_the_expectation_fails_the_run() {
    let outcome = Scenario::new("native_probe_wrong_memory")
        .inline_node(2, 256 << 20)
        .boot(BootPath::Native)
        .expect(Expect::Report {
            slice: NATIVE_SLICE.into(),
            cpus: 2,
            memory_bytes: 128 << 20,
        })
        .run_unchecked();
    let why = outcome
        .result
        .expect_err("a wrong memory size must fail the run");
    assert!(
        why.contains("memory_bytes is 0x10000000, expected 0x8000000"),
        "{why}"
    );
    let log = std::fs::read_to_string(&outcome.log).expect("the log is always written");
    assert!(
        log.contains("# result: FAIL") && log.contains("SLICE-REPORT"),
        "{log}"
    );
}

#[test]
fn an_attack_that_is_asked_for_but_never_attempted_fails_the_run() {
    // The probe does not know "hvc-unknwon" (it warns and skips it): no scenario has to say
    // anything about attacks for the run to fail, naming the slice and the attack.
    let outcome = Scenario::new("native_probe_missing_attack")
        .inline_node(2, 256 << 20)
        .boot(BootPath::Native)
        .cmdline("heartbeat=300 attack=hvc-unknown,hvc-unknwon")
        .all_healthy()
        .run_unchecked();
    let why = outcome
        .result
        .expect_err("an attack that was never attempted must fail the run");
    assert!(
        why.contains("[native] attack hvc-unknwon was never attempted before heartbeats began"),
        "{why}"
    );
}

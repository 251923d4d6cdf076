//! One slice stops or restarts while the others keep running: PSCI SYSTEM_OFF and
//! SYSTEM_RESET from a guest, and `on-fault = "restart"`.

use microvisor_tests::{Expect, Scenario, hv, plan, probe_slice, slice};

const BEATS: usize = 3;

#[test]
fn system_off_stops_only_that_slice() {
    Scenario::new("psci_system_off")
        .plan(&plan(&[
            probe_slice(
                "off",
                "1",
                "64MiB",
                "cmdline = \"off-after=2 heartbeat=500\"",
            ),
            probe_slice("b", "2", "64MiB", "cmdline = \"heartbeat=500\""),
            probe_slice("c", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]))
        .all_healthy()
        .expect(Expect::Sequence(vec![
            slice("off", "^HEARTBEAT 2 ok$"),
            hv("^slice off stopped: "),
        ]))
        .expect(Expect::NeverAfter {
            after: hv("^slice off stopped: "),
            pattern: slice("off", ""),
        })
        .others_keep_running("off", &["b", "c"], BEATS)
        .run();
}

#[test]
fn system_reset_restarts_only_that_slice_from_its_image() {
    Scenario::new("psci_system_reset")
        .plan(&plan(&[
            probe_slice(
                "reset",
                "2",
                "64MiB",
                "cmdline = \"reset-after=2 heartbeat=500\"",
            ),
            probe_slice("b", "1", "64MiB", "cmdline = \"heartbeat=500\""),
            probe_slice("c", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]))
        .all_healthy()
        .expect(Expect::Sequence(vec![
            slice("reset", "^HEARTBEAT 2 ok$"),
            hv("^slice reset restarted"),
            slice("reset", r#"^SLICE-REPORT \{"slice":"reset","cpus":2,"#),
            slice("reset", "^PROBE PASS$"),
            slice("reset", "^HEARTBEAT 1 ok$"),
        ]))
        .expect(Expect::HeartbeatsAfter {
            after: hv("^slice reset restarted"),
            slices: vec!["b".into(), "c".into()],
            count: BEATS,
        })
        .run();
}

#[test]
fn a_reset_with_the_timer_interrupt_in_flight_leaves_the_timer_working() {
    // The probe resets with its virtual timer's interrupt injected but not taken (IRQs
    // masked): the physical interrupt is active, waiting for a guest deactivation that never
    // comes. The restarted run's timer interrupts must still arrive (its `timer-irq` benchmark
    // waits for each of its 16, at most 1 s past its deadline).
    Scenario::new("reset_timer_in_flight")
        .plan(&plan(&[
            probe_slice(
                "timer",
                "1",
                "64MiB",
                "cmdline = \"bench=timer-irq reset-after=1 reset-timer-pending=1 heartbeat=200\"",
            ),
            probe_slice("b", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]))
        .all_healthy()
        .expect(Expect::Sequence(vec![
            slice("timer", "^BENCH timer-irq [0-9]"),
            slice("timer", "^PROBE timer-pending fired=1$"),
            hv("^slice timer restarted"),
            slice("timer", "^BENCH timer-irq [0-9]"),
            slice("timer", "^BENCH done$"),
        ]))
        .expect(Expect::Never(slice("timer", "^BENCH timer-irq FAILED")))
        .run();
}

#[test]
fn on_fault_restart_boots_the_slice_again() {
    Scenario::new("on_fault_restart")
        .plan(&plan(&[
            probe_slice(
                "faulty",
                "1",
                "64MiB",
                "cmdline = \"attack=undef-sysreg\"\non-fault = \"restart\"",
            ),
            probe_slice("b", "2", "64MiB", "cmdline = \"heartbeat=500\""),
            probe_slice("c", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]))
        .all_healthy()
        .expect(Expect::Sequence(vec![
            slice("faulty", "^ATTACK undef-sysreg attempting "),
            hv("^slice faulty restarted"),
            slice("faulty", r#"^SLICE-REPORT \{"slice":"faulty","cpus":1,"#),
            slice("faulty", "^PROBE PASS$"),
        ]))
        .expect(Expect::HeartbeatsAfter {
            after: hv("^slice faulty restarted"),
            slices: vec!["b".into(), "c".into()],
            count: BEATS,
        })
        .run();
}

//! Hypervisor robustness (issue 13): a hypervisor stack that overflows runs into its guard page
//! and stops the node with one clear line; a slice flooding its console does not slow another
//! slice's output.

use microvisor_tests::{
    EXIT_COUNTERS, Expect, Input, Scenario, Tamper, hv, plan, probe_slice, slice,
};

#[test]
fn a_hypervisor_stack_overflow_stops_the_node_with_one_clear_line() {
    // The image is marked (Tamper::StackOverflow) so that the boot core, once the slices run,
    // recurses on its hypervisor stack instead of running its vCPU. The footprint line shows
    // the stacks with their guard pages; the overflow must end in the named FATAL line on the
    // emergency stack and PSCI SYSTEM_OFF, not in silence or a nested fault.
    let hex = "0x[0-9a-f]+";
    Scenario::new("stack_overflow")
        .plan(&plan(&[
            probe_slice("a", "1", "64MiB", "cmdline = \"heartbeat=500\""),
            probe_slice("b", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]))
        .tamper(Tamper::StackOverflow)
        .expect(Expect::line(hv(&format!(
            r"^footprint: .*, stacks \S+ \S+ for \d+ cores at {hex}-{hex} with unmapped guard pages, heap "
        ))))
        .expect(Expect::Sequence(vec![
            hv("^boot: 2 slices released"),
            hv("^test image: core 0 overflows its hypervisor stack on purpose$"),
            hv(&format!(
                r"^FATAL stack overflow on core 0 \(SP {hex}, guard page {hex}-{hex}\): ESR 0x9[0-9a-f]{{7}} .*; stopping the node$"
            )),
        ]))
        .expect(Expect::Never(hv("^FATAL hypervisor exception")))
        .expect(Expect::Never(hv("never overflowed")))
        .expect(Expect::QemuExits)
        .run();
}

#[test]
fn the_hypervisor_never_executes_its_data() {
    // The EL2 map has only the hypervisor's code executable (read-only), every other page of
    // RAM (its heap and stacks, every slice's RAM) writable and never executable, and
    // SCTLR_EL2.WXN on. The image is marked (Tamper::DataExecution) so that the boot core,
    // once the slices run, writes a RET into a heap page and calls it: an instruction abort
    // at EL2 (ESR class 0x21), reported, must stop it. Before, RAM was mapped executable and
    // the call returned ("a heap page was executed").
    let hex = "0x[0-9a-f]+";
    Scenario::new("data_execution")
        .plan(&plan(&[
            probe_slice("a", "1", "64MiB", "cmdline = \"heartbeat=500\""),
            probe_slice("b", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        ]))
        .tamper(Tamper::DataExecution)
        .expect(Expect::Sequence(vec![
            hv("^boot: 2 slices released"),
            hv("^test image: core 0 calls into its heap on purpose$"),
            hv(&format!(
                r"^FATAL hypervisor exception .* on core 0: ESR 0x86[0-9a-f]{{6}} ELR ({hex}) FAR {hex}$"
            )),
        ]))
        .expect(Expect::Never(hv("a heap page was executed")))
        .run();
}

#[test]
fn a_slice_flooding_its_console_does_not_slow_another_slices_output() {
    // Slice "flood" prints lines without pause for the whole run; "beat" prints a heartbeat
    // every 200 ms of its counter time. Ctrl-A c is pressed once the flood runs and again 20
    // heartbeats later: between the two `[hv] exits beat` lines "beat" must have printed at
    // least 50% of the heartbeats its uptime gives (measured: 100%; the margin is for a host
    // whose cores the flooding vCPU and a parallel scenario keep busy, as in
    // `a_linux_slice_loading_all_its_cpus_does_not_slow_its_neighbour`). Each slice assembles its lines under its
    // own lock and the node UART is a fair lock taken per line, so the flood delays a
    // heartbeat line by at most one flood line; a shared lock held across the flood would
    // starve it.
    let beats_in_window = 20;
    Scenario::new("console_flood")
        .inline_node(2, 1 << 30)
        .plan(&plan(&[
            probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=200\""),
            probe_slice("flood", "1", "64MiB", "cmdline = \"flood=1\""),
        ]))
        .all_healthy()
        .input(Input::after_nth(
            slice("flood", "^FLOOD "),
            100,
            EXIT_COUNTERS,
        ))
        .input(Input::after_next_nth(
            slice("beat", "^HEARTBEAT [0-9]+ ok$"),
            beats_in_window,
            EXIT_COUNTERS,
        ))
        .expect(Expect::HeartbeatRate {
            slice: "beat".into(),
            period_ms: 200,
            min_percent: 50,
        })
        .expect(Expect::Line {
            pattern: slice("flood", "^FLOOD "),
            count: 2000,
        })
        .expect(Expect::Never(hv("^slice .* (stopped|restarted)")))
        .run();
}

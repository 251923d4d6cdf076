//! The management slice (issue 11, docs/control.md): a Linux slice with `role = "manager"`
//! runs `microvisorctl` from its shell (typed on its console by the harness) and powers,
//! restarts, re-images, erases and watches the other slices at runtime.
//!
//! - Every operation on a probe and a Linux slice changes what the node console shows for
//!   that slice and nothing else; re-imaging boots another command line and another kernel,
//!   `--default` brings back the flashed ones; console output and input go through the
//!   manager; bad requests get one clear error; a slice that is not the manager calling the
//!   interface is stopped like any access to an address it does not have.
//! - Tenant hand-over: a probe plants a secret in its RAM and on its disk, is powered off,
//!   erased, and started again with a checker: nothing of the secret is anywhere. On a GICv4
//!   node, the old tenant's interrupt set-up of a vCPU that was off leaves nothing for the new
//!   tenant's.
//! - 200 restarts of one slice while another keeps its heartbeats; the hypervisor's heap is
//!   the same at the end as after the first restart.
//!
//! The manager is slice 1, so the console's input goes to its shell from the start.

use std::time::Duration;

use microvisor_tests::{
    Expect, Input, Pattern, Scenario, Step, hv, linux_slice, lit, plan, probe_slice, run_step,
    shell_ready, shell_steps, slice, with_device, with_nvme,
};
use xtask::node::{Network, Nic};

/// Inputs typing `steps` into the manager's shell once it can take them: its banner is out,
/// and so is the `REDFISH ready` line its init prints from the background. That line, printed
/// in the middle of a typed command's echo, hid the echo from the script, so the next
/// command was never typed.
fn manager_shell(steps: &[Step]) -> Vec<Input> {
    let mut inputs = vec![Input::after(shell_ready("manager"), &[])];
    inputs.extend(shell_steps(
        "manager",
        slice("manager", "REDFISH ready "),
        steps,
    ));
    inputs
}

/// [`manager_shell`] for plain commands.
fn manager_script(commands: &[&str]) -> Vec<Input> {
    let steps: Vec<Step> = commands.iter().map(|c| run_step(c)).collect();
    manager_shell(&steps)
}

/// Heartbeats a bystander must print after a disturbance.
const BEATS: usize = 3;

/// The manager: Linux, one vCPU, 256 MiB, a 64 MiB staging pool.
fn manager() -> String {
    format!(
        "{}\nrole = \"manager\"\nstaging = \"64MiB\"\n\n",
        linux_slice("manager", "1", "256MiB", "").trim_end()
    )
}

/// A line the manager prints (its shell, microvisorctl's output).
fn says(regex: &str) -> Pattern {
    slice("manager", regex)
}

/// microvisorctl's `list` row of `name` in `state`.
fn listed(name: &str, role: &str, state: &str) -> Pattern {
    says(&format!(r"^{}\s+{role}\s+{state}\s", lit(name)))
}

#[test]
fn manager_runs_every_other_slice() {
    let lin = linux_slice("lin", "1", "256MiB", "");
    let node = plan(&[
        manager(),
        lin,
        probe_slice("pr", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        probe_slice("beat", "1", "64MiB", "cmdline = \"heartbeat=500\""),
        probe_slice(
            "intruder",
            "1",
            "64MiB",
            "cmdline = \"attack=control-call\"",
        ),
    ]);
    let lin_report =
        |rest: &str| slice("lin", &format!(r#"^SLICE-REPORT \{{"slice":"lin".*{rest}"#));
    let pr_pass = slice("pr", "^PROBE PASS$");
    let steps = [
        // What the node has.
        run_step("microvisorctl list"),
        // A probe: off, then on again.
        run_step("microvisorctl off pr"),
        Step::WaitFor(hv("^slice pr stopped: ")),
        run_step("microvisorctl on pr"),
        Step::WaitFor(pr_pass.clone()),
        // A Linux slice: forced restart; then its console: input typed into its shell, and
        // the last lines of the probe.
        // (Its shell's banner of the new run: under load its first boot may reach its shell
        // only after the restart was asked for.)
        run_step("microvisorctl restart lin"),
        Step::WaitFor(hv("^slice lin restarted: forced restart by the manager$")),
        Step::WaitFor(slice(
            "lin",
            "^Enter 'help' for a list of built-in commands.$",
        )),
        run_step("printf 'echo mv$((6*7))\\n' | microvisorctl console lin"),
        Step::WaitFor(slice("lin", "mv42$")),
        run_step("microvisorctl console pr --tail 3"),
        // Re-imaged: another command line, another kernel (the probe), then the flashed ones.
        run_step(
            "microvisorctl boot lin --cmdline \"console=ttyAMA0 loglevel=4 mvtag=7\" --restart",
        ),
        Step::WaitFor(lin_report(
            r#""cmdline":"console=ttyAMA0 loglevel=4 mvtag=7""#,
        )),
        run_step(
            "microvisorctl boot lin --kernel /images/probe --no-initrd --cmdline heartbeat=500 --restart",
        ),
        Step::WaitFor(slice("lin", "^PROBE PASS$")),
        run_step("microvisorctl boot lin --default --restart"),
        Step::WaitFor(lin_report(r#""kernel":"6\."#)),
        // Bad requests: each one error line and an exit code, nothing else happens.
        run_step("microvisorctl on nosuch; echo rc=$?"),
        run_step("microvisorctl off manager; echo rc=$?"),
        run_step("dd if=/dev/zero of=/tmp/big bs=1M count=65 2>/dev/null"),
        run_step("microvisorctl boot pr --kernel /tmp/big; echo rc=$?"),
        // A request with a bad magic, straight through /dev/mem: EXECUTE says BAD_REQUEST (2).
        run_step("devmem 0xa200000 32 7; devmem 0xa000018 64"),
        // BOOT of pr with a command line of the whole window (2 MiB - 4 KiB): TOO_LARGE (6),
        // refused before anything is allocated (it used to exhaust the heap at EL2).
        run_step(
            "m=0xa2000; devmem ${m}00 32 0x5152564d; devmem ${m}04 32 10; devmem ${m}08 64 8; \
             devmem ${m}20 64 0x1ff000; for o in 28 30 38 40; do devmem ${m}$o 64 0; done; \
             devmem ${m}28 32 0x7270; devmem 0xa000018 64",
        ),
        // An on/off storm, then the probe must come back.
        run_step(
            "for i in 1 2 3 4 5 6; do microvisorctl off pr; microvisorctl on pr; done 2>/dev/null",
        ),
        run_step("sleep 3; microvisorctl restart pr"),
        // The restarted run's own PROBE PASS: on a loaded host the storm's last start may
        // still be printing its own after the restart was typed.
        Step::WaitFor(hv("^slice pr restarted: forced restart by the manager$")),
        Step::WaitFor(pr_pass.clone()),
        // Graceful shutdown: the probe ignores its power key and is forced off after 2 s;
        // Linux powers off by itself.
        run_step("microvisorctl shutdown pr --timeout 2 --wait; echo rc=$?"),
        run_step("microvisorctl shutdown lin --timeout 60 --wait; echo rc=$?"),
        run_step("microvisorctl list; echo SCRIPT DONE"),
    ];
    let mut s = Scenario::new("manager_runs_the_node")
        .inline_node(6, 3 << 29)
        .plan(&node)
        .timeout(Duration::from_secs(600))
        .healthy(&["manager", "beat"]);
    for input in manager_shell(&steps) {
        s = s.input(input);
    }
    let pr_stopped = hv("^slice pr stopped: forced off by the manager$");
    let restarted = hv("^slice lin restarted: forced restart by the manager$");
    s = s
        .expect(Expect::Sequence(vec![
            // list
            listed("manager", "manager", "on"),
            listed("lin", "tenant", "on"),
            listed("pr", "tenant", "on"),
            listed("beat", "tenant", "on"),
            // off / on of the probe, restart of Linux, its console
            pr_stopped.clone(),
            hv(r"^slice pr started \(RAM scrubbed: 64 MiB in \d+ ms\)$"),
            pr_pass.clone(),
            restarted.clone(),
            lin_report(""),
            slice("lin", "mv42$"),
            says(r"^HEARTBEAT \d+ ok$"),
            // re-imaging
            restarted.clone(),
            lin_report(r#""cmdline":"console=ttyAMA0 loglevel=4 mvtag=7""#),
            restarted.clone(),
            lin_report(r#""kernel":"probe "#),
            restarted,
            lin_report(r#""kernel":"6\."#),
            // bad requests
            says(r#"no slice "nosuch" on this node"#),
            says("^rc=13$"),
            says(r#"slice "manager" is the manager: it cannot force off itself"#),
            says("^rc=17$"),
            says(r#"slice "pr": .*does not fit"#),
            says("^rc=16$"),
            says("^0x0000000000000002$"),
            says("^0x0000000000000006$"),
            // the storm is over, the probe is back; then the shutdowns
            pr_pass.clone(),
            hv("^slice pr stopped: not off 2000 ms after the power key, forced off by the manager$"),
            hv(r"^slice lin stopped: powered off \(PSCI SYSTEM_OFF\)$"),
            listed("lin", "tenant", "off"),
            says("^SCRIPT DONE$"),
        ]))
        // The intruder's request is an access to an address its slice does not have.
        .expect(Expect::Sequence(vec![
            slice("intruder", "^ATTACK control-call attempting write64 0xa200000"),
            hv("^slice intruder: synchronous external abort delivered: write at IPA 0xa200000 outside its RAM and devices"),
            slice("intruder", "^ATTACK control-call contained write64 0xa200000 fault data-abort"),
        ]))
        // The bystander never notices.
        .expect(Expect::HeartbeatsAfter {
            after: pr_stopped,
            slices: vec!["beat".into()],
            count: BEATS,
        })
        .expect(Expect::Never(hv("^slice (beat|manager) (stopped|restarted)")))
        .expect(Expect::Never(hv("FATAL")));
    s.run();
}

#[test]
fn manager_hands_a_slice_to_a_new_tenant_with_nothing_of_the_old() {
    let node = plan(&[
        manager(),
        with_nvme(
            &probe_slice(
                "tenant",
                "1",
                "64MiB",
                "cmdline = \"secret=plant heartbeat=500\"",
            ),
            1,
            "16MiB",
        ),
    ]);
    let script = [
        "microvisorctl off tenant",
        "microvisorctl erase tenant --wait; echo rc=$?",
        "echo kept=$(microvisorctl console tenant --tail 200 | grep -c SECRET)",
        "microvisorctl boot tenant --kernel /images/probe --cmdline secret=check",
        "microvisorctl on tenant; microvisorctl status tenant",
    ];
    let mut s = Scenario::new("manager_tenant_handover")
        .inline_node(2, 1 << 30)
        .disk(64 << 20)
        .plan(&node)
        .timeout(Duration::from_secs(300))
        .healthy(&["manager"]);
    s = s.input(Input::wait(slice("tenant", "^SECRET PLANTED ")));
    for input in manager_script(&script) {
        s = s.input(input);
    }
    s.expect(Expect::Sequence(vec![
        slice(
            "tenant",
            r"^SECRET PLANTED ram=\d+ disk=16777216 regs=[1-9]\d*$",
        ),
        hv("^slice tenant stopped: forced off by the manager$"),
        hv("^slice tenant erased: "),
        says("^rc=0$"),
        // The console ring kept none of the old tenant's output (it printed SECRET PLANTED).
        says("^kept=0$"),
        hv(r"^slice tenant started \(RAM scrubbed: 64 MiB in \d+ ms\)$"),
        slice(
            "tenant",
            // regs=0: the pointer-authentication keys, breakpoints, watchpoints and PMU
            // state the old tenant planted are gone (`virt::reset_el1`; regs=13 without it).
            r"^SECRET CHECK ram_words=0 disk_words=0 .*disk_scanned=16777216 regs=0$",
        ),
        slice("tenant", "^SECRET CLEAN$"),
    ]))
    .expect(Expect::Never(slice("tenant", "^SECRET FOUND")))
    .run();
}

#[test]
fn a_new_tenant_gets_none_of_the_old_tenants_interrupt_state_on_a_gicv4_node() {
    // The old tenant (two vCPUs, a NIC whose MSIs are vLPIs) turns vCPU 1 off and then enables
    // its LPIs from vCPU 0 with a property table of disabled LPIs (its-remote-off). The new
    // tenant, booted by the manager with another command line, enables vCPU 1's LPIs with its
    // own table and moves the NIC's TX event there (its-remote-lpis): vCPU 1 must take it. A
    // vPE the old tenant had made resident on the parked core would have kept the old table.
    let node = plan(&[
        manager(),
        with_device(
            &probe_slice(
                "tenant",
                "2",
                "64MiB",
                "cmdline = \"attack=its-remote-off heartbeat=500\"",
            ),
            "pci = \"01:00.0\"",
        ),
    ]);
    let script = [
        "microvisorctl boot tenant --kernel /images/probe --cmdline attack=its-remote-lpis --restart",
    ];
    let old = slice(
        "tenant",
        "^ATTACK its-remote-off contained receiver-off=yes enable-lpis=set ",
    );
    let mut s = Scenario::new("manager_tenant_gicv4")
        .inline_node(3, 1 << 30)
        .gic_v4()
        .smmuv3()
        .disk(64 << 20)
        .nic(Nic::on(Network::Host))
        .plan(&node)
        .timeout(Duration::from_secs(300))
        .healthy(&["manager"])
        .reimaged("tenant");
    s = s.input(Input::wait(old.clone()));
    for input in manager_script(&script) {
        s = s.input(input);
    }
    s.expect(Expect::Sequence(vec![
        old,
        hv("^slice tenant restarted: forced restart by the manager$"),
        slice(
            "tenant",
            "^ATTACK its-remote-lpis contained enable-lpis=set target=0x1 exchange=ok tx-lpi=[1-9][0-9]* taken-by=0x1 back=completed ",
        ),
    ]))
    .run();
}

#[test]
fn manager_restarts_a_slice_whose_vcpus_all_turned_themselves_off() {
    // The tenant's only vCPU turns itself off (PSCI CPU_OFF). No vCPU is left to take a
    // request to end the run; a parked core must take it, or the slice could never be
    // stopped or handed on while its devices (here its NVMe share) live on.
    let node = plan(&[
        manager(),
        with_nvme(
            &probe_slice(
                "tenant",
                "1",
                "32MiB",
                "cmdline = \"heartbeat=500 cpu-off-after=2\"",
            ),
            1,
            "16MiB",
        ),
    ]);
    let off = slice("tenant", "^PROBE ACTION cpu-off$");
    let mut s = Scenario::new("manager_all_vcpus_off")
        .inline_node(2, 1 << 30)
        .disk(64 << 20)
        .plan(&node)
        .timeout(Duration::from_secs(240))
        .healthy(&["manager"]);
    s = s.input(Input::wait(off.clone()));
    for input in manager_script(&["sleep 1; microvisorctl restart tenant; echo rc=$?"]) {
        s = s.input(input);
    }
    s.expect(Expect::Sequence(vec![
        off.clone(),
        hv("^slice tenant restarted: forced restart by the manager$"),
        slice("tenant", "^HEARTBEAT 2 ok"),
        off,
    ]))
    .expect(Expect::line(says("^rc=0$")))
    .expect(Expect::Never(slice(
        "tenant",
        "^PROBE ACTION cpu-off returned",
    )))
    .run();
}

/// Restarts of the cycling slice.
const CYCLES: usize = 200;

#[test]
fn manager_restarts_a_slice_200_times_and_the_hypervisor_stays_as_it_was() {
    let node = plan(&[
        manager(),
        probe_slice("cycle", "1", "32MiB", ""),
        probe_slice("beat", "1", "32MiB", "cmdline = \"heartbeat=1000\""),
    ]);
    // The heap is read after the first restart and after the last; it may differ by what a
    // request in flight holds, never by anything that grows with the restarts.
    let heap = "microvisorctl node --json | sed 's/.*\"heap_used_bytes\":\\([0-9]*\\).*/\\1/'";
    let script = [
        "microvisorctl restart cycle; sleep 2".to_string(),
        format!("h1=$({heap})"),
        format!(
            "i=1; while [ $i -lt {CYCLES} ]; do microvisorctl restart cycle 2>/dev/null && i=$((i+1)); sleep 0.5; done"
        ),
        "sleep 2".to_string(),
        format!("h2=$({heap})"),
        "microvisorctl node".to_string(),
        "echo HEAP first=$h1 last=$h2".to_string(),
        "[ $h2 -le $((h1+8192)) ] && echo HEAP STEADY || echo HEAP GREW".to_string(),
    ];
    let script: Vec<&str> = script.iter().map(String::as_str).collect();
    let mut s = Scenario::new("manager_restart_cycles")
        .inline_node(3, 1 << 30)
        .plan(&node)
        .timeout(Duration::from_secs(900))
        .healthy(&["manager", "beat"]);
    for input in manager_script(&script) {
        s = s.input(input);
    }
    s.expect(Expect::Line {
        pattern: hv("^slice cycle restarted: forced restart by the manager$"),
        count: CYCLES,
    })
    .expect(Expect::line(says(r"^HEAP first=\d+ last=\d+$")))
    .expect(Expect::line(says("^HEAP STEADY$")))
    .expect(Expect::HeartbeatsAfter {
        after: says(r"^HEAP first="),
        slices: vec!["beat".into()],
        count: 1,
    })
    .expect(Expect::Never(hv(
        "^slice (beat|manager) (stopped|restarted)",
    )))
    .run();
}

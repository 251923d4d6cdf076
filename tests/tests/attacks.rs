//! Every probe attack, each contained as docs/threat-model.md says: accesses outside the slice's RAM and
//! emulated devices, SMC SYSTEM_OFF, undefined system registers and redistributor frames past
//! the slice's vCPUs stop the attacker (`[hv] slice <a> stopped: ...`, nothing more from it)
//! while the victims keep beating; PSCI CPU_ON outside the slice, unknown HVCs, SGIs aimed
//! outside the slice and SPIs it does not own are answered (`ATTACK ... contained`).
//! Several attackers share one node to keep the suite short; each has its own core.

use microvisor_tests::{Expect, Scenario, hv, lit, plan, probe_slice, slice};

/// Heartbeats each victim must print after an attacker stops.
const BEATS: usize = 3;
/// Where QEMU `-kernel` loads the microvisor: inside every slice's IPA window, so an access
/// there must land in the attacker's own RAM.
const HYPERVISOR_PA: u64 = 0x4020_0000;

/// The attacker `attacker` running `attack` is stopped and the `victims` keep running.
fn stops(s: Scenario, attacker: &str, attack: &str, victims: &[&str]) -> Scenario {
    let stopped = format!("^slice {} stopped: ", lit(attacker));
    s.expect(Expect::Sequence(vec![
        slice(attacker, &format!("^ATTACK {} attempting ", lit(attack))),
        hv(&stopped),
    ]))
    .expect(Expect::NeverAfter {
        after: hv(&stopped),
        pattern: slice(attacker, ""),
    })
    .others_keep_running(attacker, victims, BEATS)
}

/// The attacker's `attack` is answered (`contained <detail>`) and it keeps running.
fn answered(s: Scenario, attacker: &str, attack: &str, detail: &str) -> Scenario {
    s.expect(Expect::Sequence(vec![
        slice(attacker, &format!("^ATTACK {} attempting ", lit(attack))),
        slice(
            attacker,
            &format!("^ATTACK {} contained {detail}", lit(attack)),
        ),
        slice(attacker, "^HEARTBEAT [0-9]+ ok$"),
    ]))
    .expect(Expect::Never(hv(&format!(
        "^slice {} stopped",
        lit(attacker)
    ))))
}

#[test]
fn reads_and_writes_past_own_ram_stop_the_attacker() {
    let s = Scenario::new("attack_past_ram").plan(&plan(&[
        probe_slice("reader", "1", "64MiB", "cmdline = \"attack=read-past-ram\""),
        probe_slice(
            "writer",
            "1",
            "64MiB",
            "cmdline = \"attack=write-past-ram\"",
        ),
        probe_slice("victim", "2", "128MiB", "cmdline = \"heartbeat=500\""),
    ]));
    let s = stops(s.all_healthy(), "reader", "read-past-ram", &["victim"]);
    stops(s, "writer", "write-past-ram", &["victim"]).run();
}

/// The victim comes first, so it gets the top of RAM; `target` is aimed into it.
fn other_slice_plan(target: u64) -> String {
    plan(&[
        probe_slice("victim", "2", "128MiB", "cmdline = \"heartbeat=500\""),
        probe_slice(
            "reader",
            "1",
            "64MiB",
            &format!("cmdline = \"attack=read-addr target={target:#x}\""),
        ),
        probe_slice(
            "writer",
            "1",
            "64MiB",
            &format!("cmdline = \"attack=write-addr target={target:#x}\""),
        ),
    ])
}

#[test]
fn reads_and_writes_of_another_slices_memory_stop_the_attacker() {
    let victim = Scenario::new("attack_other_slice")
        .plan(&other_slice_plan(0))
        .slice_ram("victim");
    let target = victim.base + (1 << 20);
    assert!(
        target >= 0x4000_0000 + (64 << 20),
        "the victim's RAM must lie outside the attackers' IPA window"
    );
    let s = Scenario::new("attack_other_slice")
        .plan(&other_slice_plan(target))
        .all_healthy();
    let s = stops(s, "reader", "read-addr", &["victim"]);
    stops(s, "writer", "write-addr", &["victim"]).run();
}

#[test]
fn mmio_smc_system_off_and_undefined_sysregs_stop_the_attacker() {
    let s = Scenario::new("attack_mmio_smc_sysreg").plan(&plan(&[
        probe_slice("mmio", "1", "64MiB", "cmdline = \"attack=mmio\""),
        probe_slice("smc", "1", "64MiB", "cmdline = \"attack=smc-system-off\""),
        probe_slice("sysreg", "1", "64MiB", "cmdline = \"attack=undef-sysreg\""),
        probe_slice("victim", "1", "64MiB", "cmdline = \"heartbeat=500\""),
    ]));
    let s = stops(s.all_healthy(), "mmio", "mmio", &["victim"]);
    let s = stops(s, "smc", "smc-system-off", &["victim"]);
    stops(s, "sysreg", "undef-sysreg", &["victim"]).run();
}

#[test]
fn psci_outside_the_slice_and_unknown_hvcs_are_refused() {
    let s = Scenario::new("attack_answered").plan(&plan(&[
        probe_slice(
            "psci",
            "1",
            "64MiB",
            "cmdline = \"attack=cpu-on-outside,hvc-unknown heartbeat=500\"",
        ),
        probe_slice("victim", "3", "64MiB", "cmdline = \"heartbeat=500\""),
    ]));
    let s = answered(s.all_healthy(), "psci", "cpu-on-outside", "");
    answered(s, "psci", "hvc-unknown", "").run();
}

#[test]
fn accesses_to_the_hypervisors_physical_address_land_in_own_ram() {
    // 0x4020_0000 is the microvisor's physical address on the -kernel path, but for a guest it
    // is an IPA inside its own RAM: it must land there and the node must keep running.
    let target = format!("target={HYPERVISOR_PA:#x}");
    let s = Scenario::new("attack_hypervisor_pa").plan(&plan(&[
        probe_slice(
            "writer",
            "1",
            "64MiB",
            &format!("cmdline = \"attack=write-addr {target} heartbeat=500\""),
        ),
        probe_slice(
            "reader",
            "1",
            "64MiB",
            &format!("cmdline = \"attack=read-addr {target} heartbeat=500\""),
        ),
        probe_slice("victim", "2", "64MiB", "cmdline = \"heartbeat=500\""),
    ]));
    let own = format!("landed-in-own-ram {HYPERVISOR_PA:#x}");
    let s = answered(s.all_healthy(), "writer", "write-addr", &own);
    answered(s, "reader", "read-addr", &own)
        .expect(Expect::Line {
            pattern: slice("victim", "^HEARTBEAT [0-9]+ ok$"),
            count: BEATS,
        })
        .run();
}

#[test]
fn gic_attacks_are_contained_and_the_slices_own_gic_works() {
    // "gic" (2 vCPUs) first checks its own GIC (its redistributor frames name exactly its
    // vCPUs, the last one with Last set; an SGI to its vCPU 1 arrives), then sends SGIs to
    // every vCPU number outside the slice and enables, pends and routes SPIs it does not own:
    // all dropped or ignored. "gicr" (1 vCPU) reads the redistributor frame after its own,
    // frame 1 at 0x080A_0000 + 128 KiB: outside its devices, so it is stopped.
    let s = Scenario::new("attack_gic").plan(&plan(&[
        probe_slice(
            "gic",
            "2",
            "64MiB",
            "cmdline = \"attack=gicr-own,sgi-self-test,sgi-outside,spi-foreign heartbeat=500\"",
        ),
        probe_slice("gicr", "1", "64MiB", "cmdline = \"attack=gicr-foreign\""),
        probe_slice("victim", "1", "64MiB", "cmdline = \"heartbeat=500\""),
    ]));
    let s = answered(s.all_healthy(), "gic", "gicr-own", "typer-ok frames=2 ");
    let s = answered(
        s,
        "gic",
        "sgi-self-test",
        "sgi-within-slice delivered to=0x1 intid=5 ",
    );
    let s = answered(s, "gic", "sgi-outside", "sgis-dropped writes=");
    let s = answered(s, "gic", "spi-foreign", "typer=");
    stops(s, "gicr", "gicr-foreign", &["victim", "gic"])
        .expect(Expect::line(hv(
            r"^slice gicr stopped: read at IPA 0x80c0008 outside its RAM and devices",
        )))
        .run();
}

//! Tenant hand-over, the probe's side (issue 11): `secret=plant` fills a slice's free RAM and
//! its whole NVMe namespace with a recognisable pattern (each 8-byte word = tag XOR its own IPA
//! or namespace byte offset; see `guest-images/probe/src/secret.rs`), `secret=check` counts
//! pattern words in RAM and namespace, in place or moved. Re-imaging and erasing a slice at
//! runtime needs the manager; until then these scenarios prove the two halves and the detector:
//!
//! - a planter prints `SECRET PLANTED` with all of its free RAM and its whole namespace, and
//!   the node's disk file afterwards holds the pattern of its own offsets over its whole
//!   window, and no pattern word outside the planting slices' windows;
//! - a fresh slice (RAM scrubbed by the microvisor at start, its share of a fresh disk never
//!   written before it scans) prints `SECRET CLEAN` having scanned all of its free RAM and its
//!   whole namespace, on the same node and disk as the planter;
//! - a slice with `secret=check,plant reset-after=2` is clean at its first boot, plants, resets
//!   itself, and at its second boot finds nothing in RAM (the microvisor scrubbed it) and the
//!   whole namespace still planted (nothing erases it without the manager);
//! - the negative control `secret=plant,check` (plant, then check in the same boot) must print
//!   `SECRET FOUND`: the detector does see the pattern.

use std::time::Duration;

use microvisor_tests::{
    BootPath, Expect, NATIVE_SLICE, Scenario, lit, plan, probe_slice, slice, with_nvme,
};

/// The pattern's tag (`microvisor_probe::secret::TAG`).
const TAG: u64 = 0x5EC2_E7A5_0000_0000;
/// RAM of each slice.
const RAM_BYTES: u64 = 64 << 20;
/// Namespace of each slice.
const DISK_BYTES: u64 = 16 << 20;
/// The probe's footprint (image, bss, stacks) is at most this, so the free RAM is more than
/// `RAM_BYTES` minus it.
const MAX_FOOTPRINT: u64 = 4 << 20;

/// `SECRET CHECK` with these counts (regexes) and the whole namespace scanned; captures
/// `ram_scanned`. `regs` counts the registers found not zero (pointer-authentication keys,
/// breakpoints, watchpoints, PMU: `guest-images/probe/src/bare/secret_regs.rs`).
fn check_line(ram_words: &str, disk_words: &str, regs: &str) -> String {
    format!(
        "^SECRET CHECK ram_words={ram_words} disk_words={disk_words} ram_scanned=(\\d+) \
         disk_scanned={DISK_BYTES} regs={regs}$"
    )
}

/// `SECRET PLANTED` with all of the namespace and at least one register.
fn planted_line() -> String {
    format!("^SECRET PLANTED ram=\\d+ disk={DISK_BYTES} regs=[1-9]\\d*$")
}

/// The number after `key=` in the first line of `outcome` from `name` containing `what`.
fn number_in(lines: &[String], prefix: &str, what: &str, key: &str) -> u64 {
    let line = lines
        .iter()
        .find(|l| l.starts_with(prefix) && l.contains(what))
        .unwrap_or_else(|| panic!("no line {prefix}...{what}"));
    let start = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        + key.len()
        + 2;
    line[start..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad {key}= in {line}"))
}

/// Free RAM the probe reports (`ram=` or `ram_scanned=`) is all of RAM but its footprint.
fn assert_free_ram(bytes: u64, who: &str) {
    assert!(
        bytes > RAM_BYTES - MAX_FOOTPRINT && bytes < RAM_BYTES && bytes.is_multiple_of(64),
        "{who}: {bytes} bytes of free RAM is not 64 MiB minus the probe's footprint"
    );
}

#[test]
fn secret_planted_by_one_slice_is_not_seen_by_a_fresh_one() {
    let slices = [
        ("planter", "secret=plant heartbeat=500"),
        ("fresh", "secret=check heartbeat=500"),
        ("control", "secret=plant,check heartbeat=500"),
        ("rebooter", "secret=check,plant heartbeat=500 reset-after=2"),
    ];
    let plan_text = plan(
        &slices
            .iter()
            .map(|(name, cmdline)| {
                with_nvme(
                    &probe_slice(name, "1", "64MiB", &format!("cmdline = \"{cmdline}\"")),
                    1,
                    "16MiB",
                )
            })
            .collect::<Vec<_>>(),
    );
    let s = Scenario::new("secret_handover")
        .inline_node(4, 1 << 30)
        .disk(64 << 20)
        .plan(&plan_text)
        .timeout(Duration::from_secs(240))
        .all_healthy()
        .expect(Expect::Sequence(vec![
            slice("planter", &planted_line()),
            slice("planter", "^HEARTBEAT 2 ok$"),
        ]))
        .expect(Expect::Sequence(vec![
            slice("fresh", &check_line("0", "0", "0")),
            slice("fresh", "^SECRET CLEAN$"),
            slice("fresh", "^HEARTBEAT 2 ok$"),
        ]))
        .expect(Expect::Sequence(vec![
            slice("control", &planted_line()),
            // Everything planted on disk is read back; in RAM the NVMe queues and buffers
            // laid out after planting hide a few words.
            slice(
                "control",
                &check_line("[1-9]\\d*", &(DISK_BYTES / 8).to_string(), "[1-9]\\d*"),
            ),
            slice(
                "control",
                "^SECRET FOUND ram=0x[0-9a-f]+ disk=0x0 reg=APIAKeyLo_EL1$",
            ),
        ]))
        .expect(Expect::Sequence(vec![
            // First boot: clean, then plants; after its reset the microvisor scrubbed its RAM
            // (nothing of the pattern there) but nothing erased its share (all of it there).
            // Nor is anything left in the registers the guest owns. (This holds here even
            // with `virt::reset_el1` not clearing them, for a reason not found yet; the
            // manager's hand-over scenario is the one that fails without it.)
            slice("rebooter", &check_line("0", "0", "0")),
            slice("rebooter", "^SECRET CLEAN$"),
            slice("rebooter", &planted_line()),
            slice("rebooter", "^PROBE ACTION system-reset$"),
            slice(
                "rebooter",
                &check_line("0", &(DISK_BYTES / 8).to_string(), "0"),
            ),
            slice("rebooter", "^SECRET FOUND ram=none disk=0x0 reg=none$"),
        ]))
        .expect(Expect::Never(slice("fresh", "^SECRET (FOUND|INCOMPLETE)")))
        .expect(Expect::Never(slice("planter", "^SECRET CHECK")))
        .expect(Expect::Never(microvisor_tests::any_slice(
            "^SECRET (ERROR|INCOMPLETE)|^PROBE WARN",
        )));
    let check = s.clone();
    let outcome = s.run();

    let planted = number_in(&outcome.lines, "[planter] ", "SECRET PLANTED", "ram");
    let scanned = number_in(&outcome.lines, "[fresh] ", "SECRET CHECK", "ram_scanned");
    assert_free_ram(planted, "planter");
    assert_eq!(
        planted, scanned,
        "the fresh slice scanned all the RAM the planter filled"
    );

    // The disk file: the planter's window holds the pattern of its own offsets throughout,
    // the fresh slice's window nothing of it.
    let disk = std::fs::read(check.disk_file(0)).expect("disk file");
    let shares = check.disk_shares();
    let word_at = |at: u64| {
        let at = at as usize;
        u64::from_le_bytes(disk[at..at + 8].try_into().expect("8 bytes"))
    };
    let window = |i: usize| {
        let share = shares[i].expect("a share");
        (share.first_block * 512, share.blocks * 512)
    };
    let (start, len) = window(0);
    assert_eq!(len, DISK_BYTES);
    for off in (0..len).step_by(8) {
        let w = word_at(start + off);
        assert_eq!(
            w,
            TAG ^ off,
            "planter's window at offset {off:#x} (disk byte {:#x})",
            start + off
        );
    }
    // Nowhere else on the disk (the fresh slice's window, the gaps) is a pattern word, except
    // in the windows of the control and the rebooter, which planted too.
    let (control, control_len) = window(2);
    let (rebooter, rebooter_len) = window(3);
    let planted = |at: u64| {
        (start..start + len).contains(&at)
            || (control..control + control_len).contains(&at)
            || (rebooter..rebooter + rebooter_len).contains(&at)
    };
    for at in (0..disk.len() as u64).step_by(8) {
        let x = word_at(at) ^ TAG;
        assert!(
            planted(at) || !(x.is_multiple_of(8) && x < DISK_BYTES),
            "a pattern word outside the planting slices' windows, at disk byte {at:#x}"
        );
    }
}

#[test]
fn secret_detector_natively() {
    // Without the microvisor (QEMU's own RAM and NVMe): a fresh machine is clean, and
    // plant-then-check finds the pattern.
    for (name, mode, verdict) in [
        ("secret_native_check", "check", "^SECRET CLEAN$"),
        (
            "secret_native_plant_check",
            "plant,check",
            "^SECRET FOUND ram=0x[0-9a-f]+ disk=0x0 reg=APIAKeyLo_EL1$",
        ),
    ] {
        let words = if mode == "check" { "0" } else { "[1-9]\\d*" };
        let disk_words = if mode == "check" {
            "0".to_string()
        } else {
            (DISK_BYTES / 8).to_string()
        };
        let outcome = Scenario::new(name)
            .boot(BootPath::Native)
            .inline_node(2, RAM_BYTES)
            .disk(DISK_BYTES)
            .cmdline(&format!("heartbeat=500 secret={mode}"))
            .timeout(Duration::from_secs(120))
            .all_healthy()
            .expect(Expect::Sequence(vec![
                slice(NATIVE_SLICE, &check_line(words, &disk_words, words)),
                slice(NATIVE_SLICE, verdict),
                slice(NATIVE_SLICE, "^HEARTBEAT 1 ok$"),
            ]))
            .expect(Expect::Never(microvisor_tests::any_slice(&format!(
                "^SECRET (ERROR|INCOMPLETE)|^PROBE WARN|{}",
                lit("NVME FAIL")
            ))))
            .run();
        let scanned = number_in(&outcome.lines, "", "SECRET CHECK", "ram_scanned");
        assert_free_ram(scanned, name);
    }
}

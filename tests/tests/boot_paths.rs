//! The image boots through Debian's U-Boot (`booti`), also when the header's "anywhere" flag
//! makes it run in place at 0x4040_0000. U-Boot loads `-kernel` to 0x4040_0000; without the
//! flag `booti` moves it to 0x4020_0000 (and says so), with the flag it does not. The
//! microvisor's footprint line says where it runs.
//!
//! It also boots on a device tree the loader supplies (`-dtb`), as real firmware hands over its
//! own: QEMU's tree for the same machine, dumped and handed back (QEMU then replaces its memory
//! node and leaves the old one as FDT_NOP tokens), and the same tree recompiled by `dtc`.

use microvisor_tests::{BootPath, Expect, FirmwareTree, Scenario, any, hv, plan, probe_slice};

fn two_slices() -> String {
    plan(&[
        probe_slice("a", "2", "128MiB", ""),
        probe_slice("b", "[3, 2]", "64MiB", ""),
    ])
}

#[test]
fn boots_through_uboot() {
    Scenario::new("uboot")
        .boot(BootPath::UBoot)
        .plan(&two_slices())
        .all_healthy()
        .expect(Expect::line(any(
            "^Moving Image from 0x40400000 to 0x40200000",
        )))
        .expect(Expect::line(hv(r"^footprint: .*\bat 0x0*40200000\b")))
        .run();
}

#[test]
fn boots_through_uboot_in_place_with_the_anywhere_flag() {
    Scenario::new("uboot_anywhere")
        .boot(BootPath::UBootAnywhere)
        .plan(&two_slices())
        .all_healthy()
        .expect(Expect::Never(any("^Moving Image")))
        .expect(Expect::line(hv(r"^footprint: .*\bat 0x0*40400000\b")))
        .run();
}

#[test]
fn boots_on_qemus_own_tree_handed_over_with_dtb() {
    Scenario::new("dtb_qemu_dump")
        .firmware_tree(FirmwareTree::QemuDump)
        .plan(&two_slices())
        .all_healthy()
        .run();
}

#[test]
fn boots_on_qemus_tree_recompiled_by_dtc() {
    Scenario::new("dtb_recompiled")
        .firmware_tree(FirmwareTree::Recompiled)
        .plan(&two_slices())
        .all_healthy()
        .run();
}

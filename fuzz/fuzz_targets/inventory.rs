//! The firmware device tree reader (`logic::dtb`, `logic::inventory`): any byte string as a
//! flattened device tree (seeded with QEMU's own trees and a minimal generated one).
//!
//! Invariants:
//! - reading the inventory, salvaging the console and PSCI conduit, and every lookup on a tree
//!   that validates return (bounded work: libFuzzer's timeout), never panic;
//! - an inventory that reads has at least one core and at most `MAX_CPUS`, at least one RAM
//!   bank, none empty, sorted by address; `ram_total` is their sum (saturating, never a
//!   panic); every core's index is found again from its MPIDR (the first core with that
//!   affinity); every requester ID's SMMU StreamID lookup returns;
//! - when the inventory reads, salvage finds a PSCI conduit too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microvisor_logic::dtb::Tree;
use microvisor_logic::inventory::{Inventory, MAX_CPUS, Salvage};

fuzz_target!(|blob: &[u8]| {
    let inventory = Inventory::from_dtb(blob);
    let salvage = Salvage::from_dtb(blob);
    if let Ok(inv) = &inventory {
        assert!(!inv.cpus.is_empty() && inv.cpus.len() <= MAX_CPUS);
        assert!(!inv.ram.is_empty(), "an inventory without RAM");
        assert!(inv.ram.iter().all(|r| r.size > 0), "empty RAM bank kept");
        assert!(
            inv.ram.windows(2).all(|w| w[0].base <= w[1].base),
            "RAM banks not sorted"
        );
        let sum = inv.ram.iter().fold(0u64, |s, r| s.saturating_add(r.size));
        assert_eq!(inv.ram_total(), sum);
        for (i, &mpidr) in inv.cpus.iter().enumerate() {
            let found = inv.core_index(mpidr).expect("a core's own MPIDR names it");
            assert!(found <= i);
        }
        for rid in [0u16, 1, 0x8, 0x100, 0xffff] {
            let _ = inv.stream_id(rid);
        }
        assert!(
            salvage.psci.is_some(),
            "salvage lost the PSCI conduit the inventory read"
        );
    }
    if let Ok(tree) = Tree::new(blob) {
        let _ = tree.reservations().count();
        for node in tree.nodes() {
            let _ = (node.cells(), node.parent_cells(), node.is_available());
            let _ = node.properties().count();
            let _ = node.children().count();
        }
        for path in [&b"/cpus"[..], b"/memory", b"/chosen", b"serial0", b"/psci"] {
            let _ = tree.find(path);
        }
    }
});

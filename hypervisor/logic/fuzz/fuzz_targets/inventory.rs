//! Any byte string as a firmware device tree: reading the inventory, salvaging the console and
//! PSCI conduit, and every lookup on a tree that validates must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microvisor_logic::dtb::Tree;
use microvisor_logic::inventory::{Inventory, Salvage};

fuzz_target!(|blob: &[u8]| {
    let _ = Inventory::from_dtb(blob);
    let _ = Salvage::from_dtb(blob);
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

//! Bring-up of a working controller: what the driver finds out, and what it leaves in the
//! controller's registers and the function's configuration space.

use super::*;

#[test]
fn brings_up_a_controller_the_firmware_left_enabled() {
    let (node, controller) = up();
    assert_eq!(controller.bdf, NVME);
    assert_eq!(
        controller.info,
        ControllerInfo {
            subsystem_vendor: 0x1af4,
            serial: SERIAL.into(),
            model: MODEL.into(),
            firmware: FIRMWARE.into(),
            mdts: 7,
            volatile_write_cache: true,
            oncs: 0x005f,
            max_queue_entries: 2048,
            io_queues: 4,
            blocks: BLOCKS,
            lba_shift: 12,
        }
    );
    let world = node.world.borrow();
    let d = &world.device;
    // Disabled first, then enabled with the admin queues: NVM, 4 KiB pages, 64/16-byte entries.
    let cc_writes: Vec<u64> = d
        .register_writes
        .iter()
        .filter(|w| w.0 == 0x14)
        .map(|w| w.1)
        .collect();
    assert_eq!(cc_writes, [0, 0x0046_0001]);
    assert_eq!(d.aqa, 31 << 16 | 31, "32-entry admin queues");
    assert_eq!(d.asq % 4096, 0);
    assert_eq!(d.acq % 4096, 0);
    assert_ne!(d.asq, d.acq);
    assert_eq!(d.intms, u32::MAX, "pin interrupts masked");
    // Identify Controller, Identify Namespace 1, Number of Queues for 4 pairs (0-based 3).
    let commands: Vec<(u8, u32, u32, u32)> = d
        .admin_log
        .iter()
        .map(|c| (c.opcode, c.nsid.get(), c.cdw10.get(), c.cdw11.get()))
        .collect();
    assert_eq!(
        commands,
        [
            (0x06, 0, 1, 0),
            (0x06, 1, 0, 0),
            (0x09, 0, 0x07, 3 << 16 | 3)
        ]
    );
    assert_eq!(d.granted, Some((3, 3)));
}

#[test]
fn the_controllers_its_device_id_goes_through_the_msi_map() {
    use crate::inventory::{IdMap, IdMapEntry};
    let (_, controller) = up();
    assert_eq!(controller.its_device, u32::from(NVME.requester_id()));
    // A host bridge whose requester IDs reach the ITS at 0x10000 and up (found in review: the
    // raw requester ID was mapped, so the controller's MSIs named an unmapped DeviceID).
    let entry = |rid_base, out_base| IdMapEntry {
        rid_base,
        target: 1,
        out_base,
        length: 0x100,
    };
    let mut node = Node::new(Behaviour::default());
    node.host.msi_map = IdMap::new(&[entry(0, 0x1_0000)], u32::MAX);
    let controller = node.bring_up(NEEDS).expect("bring-up");
    assert_eq!(
        controller.its_device,
        0x1_0000 + u32::from(NVME.requester_id())
    );
    // A map that leaves the controller out: refused before anything is touched.
    let mut node = Node::new(Behaviour::default());
    node.host.msi_map = IdMap::new(&[entry(0x100, 0)], u32::MAX);
    assert!(matches!(
        node.bring_up(NEEDS),
        Err(NvmeError::Unsupported(why)) if why.contains("msi-map")
    ));
    assert!(node.world.borrow().device.register_writes.is_empty());
}

#[test]
fn brings_up_a_controller_that_starts_disabled() {
    let mut node = Node::new(Behaviour {
        starts_enabled: false,
        ..Behaviour::default()
    });
    let controller = node.bring_up(NEEDS).unwrap();
    assert_eq!(controller.info.io_queues, 4);
    let world = node.world.borrow();
    let cc_writes: Vec<u64> = world
        .device
        .register_writes
        .iter()
        .filter(|w| w.0 == 0x14)
        .map(|w| w.1)
        .collect();
    assert_eq!(cc_writes, [0x0046_0001], "no disable needed");
    assert!(world.violations.is_empty(), "{:?}", world.violations);
}

#[test]
fn waits_for_a_slow_controller_within_cap_to() {
    // CAP.TO = 2: 1 s. Ready after 900 ms and disabled after 800 ms is in time.
    let mut node = Node::new(Behaviour {
        cap: cap(2047, 2, 0, 1, 0),
        ready_after_ms: Some(900),
        disabled_after_ms: Some(800),
        ..Behaviour::default()
    });
    let start = node.now();
    node.bring_up(NEEDS).unwrap();
    assert!(node.now() - start >= 1700, "it waited for both transitions");
    assert_eq!(node.violations(), Vec::<String>::new());
}

#[test]
fn places_bar0_in_the_window_and_enables_the_function() {
    let mut node = Node::new(Behaviour::default());
    // A window whose CPU addresses differ from its PCI addresses.
    node.host.mem32 = Some(PciWindow {
        pci: 0x4000_0000,
        cpu: 0x10_4000_0000,
        size: 0x100_0000,
    });
    node.bring_up(NEEDS).unwrap();
    let config = &node.bridge.config;
    assert_eq!(config.bar0(), 0x4000_0000, "bus address in BAR0");
    assert_eq!(
        node.bridge.mapped,
        [Region::new(0x10_4000_0000, BAR0_SIZE)],
        "CPU address granted"
    );
    // Memory space, bus master, INTx disabled; I/O space left as it was.
    assert_eq!(config.command(), 1 << 1 | 1 << 2 | 1 << 10 | 1);
    // MSI-X enabled with the function masked during the reset, then unmasked.
    let control: Vec<u32> = config.msix_writes.iter().map(|w| w >> 30).collect();
    assert_eq!(control, [0b11, 0b10]);
    assert_eq!(config.msix_control() >> 30, 0b10);
}

#[test]
fn places_a_32bit_bar0_below_4_gib() {
    let mut node = Node::new(Behaviour::default());
    node.bridge.config.set_bar0(BAR0_SIZE, false);
    node.host.mem32 = None;
    node.host.mem64 = Some(PciWindow {
        pci: 0x80_0000_0000,
        cpu: 0x80_0000_0000,
        size: 0x10_0000_0000,
    });
    assert_eq!(
        node.bring_up(NEEDS).err(),
        Some(NvmeError::Bars("no room in the host bridge windows")),
        "a 32-bit BAR cannot hold a 64-bit window's address"
    );
    node.host.mem32 = Some(PciWindow {
        pci: MEM32_PCI,
        cpu: MEM32_CPU,
        size: MEM32_SIZE,
    });
    node.bring_up(NEEDS).unwrap();
    assert!(node.bridge.config.bar0() < 1 << 32);
}

#[test]
fn doorbells_follow_cap_dstrd() {
    // DSTRD = 2: doorbells 16 bytes apart. The fake rejects anything between them.
    let mut node = Node::new(Behaviour {
        cap: cap(2047, 15, 2, 1, 0),
        ..Behaviour::default()
    });
    let mut controller = node.bring_up(NEEDS).unwrap();
    let mut pair = controller
        .create_queue_pair(&mut node.memory, 3, 8, 3, 0x0800_0040, 99)
        .unwrap();
    pair.push(&SubmissionEntry::default());
    controller.ring_submission(&pair);
    node.world.borrow_mut().advance(1);
    assert!(pair.pop().is_some());
    controller.ring_completion(&pair);
    let world = node.world.borrow();
    assert!(world.violations.is_empty(), "{:?}", world.violations);
    let doorbells: Vec<u64> = world
        .device
        .register_writes
        .iter()
        .map(|w| w.0)
        .filter(|&o| o >= 0x1000)
        .collect();
    assert!(doorbells.contains(&(0x1000 + 6 * 16)), "SQ 3 tail");
    assert!(doorbells.contains(&(0x1000 + 7 * 16)), "CQ 3 head");
    assert!(doorbells.contains(&(0x1000 + 16)), "admin CQ head");
}

#[test]
fn creates_io_queue_pairs_and_points_their_msix_vectors() {
    let (node, mut controller) = up();
    let mut memory = TestMemory(node.world.clone());
    let first = controller
        .create_queue_pair(&mut memory, 1, 64, 1, 0x0808_0040, 0x1001)
        .unwrap();
    let second = controller
        .create_queue_pair(&mut memory, 2, 64, 2, 0x1_0808_0040, 0x1002)
        .unwrap();
    assert_eq!((first.id(), first.entries()), (1, 64));
    assert_eq!((second.id(), second.entries()), (2, 64));
    let world = node.world.borrow();
    let d = &world.device;
    let created: Vec<(u8, u64, u32, u32)> = d.admin_log[3..]
        .iter()
        .map(|c| (c.opcode, c.prp1.get(), c.cdw10.get(), c.cdw11.get()))
        .collect();
    assert_eq!(
        created,
        [
            // Create I/O CQ: QSIZE 63, QID; vector, interrupts enabled, contiguous.
            (0x05, first.cq_address(), 63 << 16 | 1, 1 << 16 | 0b11),
            // Create I/O SQ: QSIZE 63, QID; CQ 1, contiguous.
            (0x01, first.sq_address(), 63 << 16 | 1, 1 << 16 | 0b1),
            (0x05, second.cq_address(), 63 << 16 | 2, 2 << 16 | 0b11),
            (0x01, second.sq_address(), 63 << 16 | 2, 2 << 16 | 0b1),
        ]
    );
    assert_eq!(d.cqs[&1].vector, 1);
    assert!(d.cqs[&2].interrupts);
    assert_eq!(d.sqs[&2].cq, 2);
    // MSI-X entries: address low, high, data, vector control 0 (unmasked).
    let entry = |v: u64| -> Vec<u32> {
        (0..4)
            .map(|i| {
                d.bar
                    .get(&(MSIX_TABLE + 16 * v + 4 * i))
                    .copied()
                    .unwrap_or(0xdead)
            })
            .collect()
    };
    assert_eq!(entry(1), [0x0808_0040, 0, 0x1001, 0]);
    assert_eq!(entry(2), [0x0808_0040, 1, 0x1002, 0]);
    assert_eq!(
        entry(3),
        [0xdead, 0xdead, 0xdead, 1],
        "nothing else programmed, masked"
    );
    // Queues in distinct, page-aligned memory.
    let mut addresses = [
        first.sq_address(),
        first.cq_address(),
        second.sq_address(),
        second.cq_address(),
    ];
    addresses.sort();
    assert!(addresses.windows(2).all(|w| w[1] - w[0] >= 4096));
    assert!(world.violations.is_empty(), "{:?}", world.violations);
}

#[test]
fn granted_queue_count_is_the_fewer_of_the_sq_and_cq_answers() {
    for (grant, pairs) in [((7, 3), 4), ((3, 7), 4), ((0, 0), 1), ((63, 63), 64)] {
        let mut node = Node::new(Behaviour {
            grant: Some(grant),
            ..Behaviour::default()
        });
        let controller = node.bring_up(NEEDS).unwrap();
        assert_eq!(controller.info.io_queues, pairs, "answer {grant:?}");
    }
}

#[test]
fn an_answer_of_65536_queues_is_not_zero() {
    let mut node = Node::new(Behaviour {
        grant: Some((0xffff, 0xffff)),
        ..Behaviour::default()
    });
    let controller = node.bring_up(NEEDS).unwrap();
    assert_eq!(controller.info.io_queues, u16::MAX);
}

#[test]
fn asks_for_at_least_one_queue_pair() {
    let mut node = Node::new(Behaviour::default());
    node.bring_up(QueueNeeds {
        pairs: 0,
        entries: 64,
    })
    .unwrap();
    let set_features = node.admin_commands()[2];
    assert_eq!(set_features, (0x09, 0x07, 0), "NSQR = NCQR = 0: one pair");
}

#[test]
fn reads_a_512_byte_format_and_trims_the_strings() {
    let mut controller_data = identify_controller();
    controller_data[4..24].copy_from_slice(b"S                   ");
    let mut node = Node::new(Behaviour {
        identify_controller: controller_data,
        identify_namespace: identify_namespace(0, 9, 0),
        ..Behaviour::default()
    });
    let controller = node.bring_up(NEEDS).unwrap();
    assert_eq!(controller.info.serial, "S");
    assert_eq!(controller.info.lba_shift, 9);
}

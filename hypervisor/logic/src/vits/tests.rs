//! The vITS driven the way Linux's ITS driver drives it, then the way a hostile guest would.

use alloc::vec;
use alloc::vec::Vec;

use super::lpi::gicr;
use super::*;
use crate::nvme::{GuestMemoryFault, GuestRam, Ipa, Pa};
use crate::testing::Rng;

const RAM_BASE: u64 = 0x4000_0000;
const RAM_SIZE: u64 = 0x10_0000;
const RAM: GuestRam = GuestRam {
    ipa_base: Ipa(RAM_BASE),
    size: RAM_SIZE,
    pa_base: Pa(0x1_0000_0000),
};
const QUEUE: u64 = RAM_BASE;
const DEVICE_TABLE: u64 = RAM_BASE + 0x1_0000;
const COLLECTION_TABLE: u64 = RAM_BASE + 0x2_0000;
const ITT: u64 = RAM_BASE + 0x3_0000;
const PROPERTIES: u64 = RAM_BASE + 0x4_0000;
const PENDING: u64 = RAM_BASE + 0x5_0000;
const NVME: u32 = 0;
const NIC: u32 = 8;
const NIC_PHYSICAL: u32 = 0x100;
/// The NVMe controller's physical DeviceID, for a shared NVMe function.
const NVME_PHYSICAL: u32 = 0x300;

/// The slice's RAM, as a byte array the test edits between accesses.
struct FakeRam(Vec<u8>);

impl GuestMemory for FakeRam {
    fn read(&self, ipa: Ipa, buf: &mut [u8]) -> Result<(), GuestMemoryFault> {
        let start = ipa.0.checked_sub(RAM_BASE).ok_or(GuestMemoryFault)? as usize;
        let end = start.checked_add(buf.len()).ok_or(GuestMemoryFault)?;
        buf.copy_from_slice(self.0.get(start..end).ok_or(GuestMemoryFault)?);
        Ok(())
    }
}

/// A guest with its vITS, its RAM and its view of the command queue.
struct Guest {
    its: VirtualIts,
    ram: FakeRam,
    writer: u64,
    queue_bytes: u64,
}

fn slots() -> [DeviceSlot; 2] {
    [
        DeviceSlot {
            id: NVME,
            events: 32,
            backing: Backing::Emulated,
        },
        DeviceSlot {
            id: NIC,
            events: 4,
            backing: Backing::Assigned {
                physical_device: NIC_PHYSICAL,
            },
        },
    ]
}

impl Guest {
    fn new(vcpus: usize) -> Guest {
        Guest::with_devices(vcpus, &slots())
    }

    fn with_devices(vcpus: usize, devices: &[DeviceSlot]) -> Guest {
        Guest {
            its: VirtualIts::new(vcpus, RAM, devices),
            ram: FakeRam(vec![0; RAM_SIZE as usize]),
            writer: 0,
            queue_bytes: 0x1000,
        }
    }

    fn poke(&mut self, ipa: u64, bytes: &[u8]) {
        let at = (ipa - RAM_BASE) as usize;
        self.ram.0[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn write(&mut self, offset: u64, value: u64) -> Outcome {
        self.its.write(offset, 8, value, &self.ram)
    }

    fn read(&mut self, offset: u64) -> u64 {
        self.its.read(offset, 8, &self.ram).0
    }

    /// Queues `commands` and writes CWRITER once.
    fn queue(&mut self, commands: &[Command]) -> Outcome {
        for c in commands {
            self.poke(QUEUE + self.writer, &c.encode());
            self.writer = (self.writer + 32) % self.queue_bytes;
        }
        self.write(gits::CWRITER, self.writer)
    }

    fn set_property(&mut self, lpi: u32, byte: u8) {
        self.poke(PROPERTIES + u64::from(lpi - LPI_BASE), &[byte]);
    }

    /// What Linux does at boot: tables, queue, ITS on, each CPU's LPIs on and its
    /// collection mapped, then a SYNC.
    fn linux_boot(vcpus: usize) -> Guest {
        Guest::linux_boot_with(vcpus, &slots())
    }

    fn linux_boot_with(vcpus: usize, devices: &[DeviceSlot]) -> Guest {
        let mut g = Guest::with_devices(vcpus, devices);
        assert_eq!(
            g.read(gits::CTLR) & gits::CTLR_QUIESCENT,
            gits::CTLR_QUIESCENT
        );
        g.write(gits::BASER, DEVICE_TABLE | gits::VALID | 1 << 10);
        g.write(gits::BASER + 8, COLLECTION_TABLE | gits::VALID | 1 << 10);
        g.write(gits::CBASER, QUEUE | gits::VALID | 1 << 10);
        g.write(gits::CWRITER, 0);
        g.write(gits::CTLR, gits::CTLR_ENABLED);
        for v in 0..vcpus {
            g.its
                .redistributor_write(v, gicr::PROPBASER, 8, PROPERTIES | 13, &g.ram);
            g.its
                .redistributor_write(v, gicr::PENDBASER, 8, PENDING + 0x1_0000 * v as u64, &g.ram);
            g.its
                .redistributor_write(v, gicr::CTLR, 4, gicr::CTLR_ENABLE_LPIS, &g.ram);
            assert_eq!(g.its.redistributor_read(v, gicr::CTLR, 4), 1);
        }
        let maps: Vec<Command> = (0..vcpus)
            .flat_map(|v| {
                [
                    Command::Mapc {
                        icid: v as u16,
                        rdbase: v as u64,
                        valid: true,
                    },
                    Command::Sync { rdbase: v as u64 },
                ]
            })
            .collect();
        g.queue(&maps);
        assert_eq!(g.read(gits::CREADR), g.writer);
        assert_eq!(g.its.errors(), (0, None));
        g
    }

    /// Maps the NVMe's event `event` to `lpi` on collection `icid`, enabled at `priority`.
    fn map_nvme(&mut self, event: u32, lpi: u32, icid: u16, priority: u8) {
        self.set_property(lpi, priority | 1);
        self.queue(&[
            Command::Mapd {
                device: NVME,
                size: 4,
                itt: ITT,
                valid: true,
            },
            Command::Mapti {
                device: NVME,
                event,
                lpi,
                icid,
            },
            Command::Inv {
                device: NVME,
                event,
            },
            Command::Sync { rdbase: 0 },
        ]);
    }

    /// Runs one command and returns the error it caused (if any).
    fn error_of(&mut self, command: Command) -> Option<VitsError> {
        let (before, _) = self.its.errors();
        self.queue(&[command]);
        let (after, last) = self.its.errors();
        (after > before).then(|| last.unwrap())
    }
}

#[test]
fn registers_identify_a_physical_gicv3_its() {
    let mut g = Guest::new(2);
    let typer = g.read(gits::TYPER);
    assert_eq!(typer & 1, 1, "Physical");
    assert_eq!(typer >> 1 & 1, 0, "not Virtual: the guest gets no GICv4");
    assert_eq!((typer >> 4 & 0xf) + 1, ITT_ENTRY_SIZE);
    assert_eq!((typer >> 8 & 0x1f) + 1, 16, "EventID bits");
    assert_eq!((typer >> 13 & 0x1f) + 1, 8, "DeviceID bits");
    assert_eq!(typer >> 19 & 1, 0, "PTA = 0: RDbase is a processor number");
    assert_eq!((typer >> 32 & 0xf) + 1, 8, "CIDbits");
    assert_eq!(typer >> 36 & 1, 1, "CIL");
    assert_eq!(g.its.read(gits::TYPER + 4, 4, &g.ram).0, typer >> 32);
    assert_eq!(g.read(gits::IIDR), 0x43b);
    assert_eq!(g.read(gits::PIDR2) >> 4 & 0xf, 3);
    // BASER Type and Entry_Size are read-only, Indirect RAZ/WI, the rest as written.
    assert_eq!(g.read(gits::BASER) >> 56 & 7, 1);
    assert_eq!(g.read(gits::BASER + 8) >> 56 & 7, 4);
    g.write(gits::BASER, u64::MAX);
    let baser = g.read(gits::BASER);
    assert_eq!(
        (baser >> 56 & 7, baser >> 48 & 0x1f, baser >> 62 & 1),
        (1, 7, 0)
    );
    assert_eq!(baser & 0xfff, 0xfff);
    assert_eq!(g.read(gits::BASER + 16), 0, "BASER2-7 unimplemented");
    // 32-bit halves of CBASER.
    g.its.write(gits::CBASER, 4, QUEUE | 3, &g.ram);
    g.its.write(gits::CBASER + 4, 4, 1 << 31, &g.ram);
    assert_eq!(g.read(gits::CBASER), QUEUE | 3 | gits::VALID);
    // Unknown offsets read as zero and ignore writes; CPU writes to the translater do nothing.
    assert_eq!(g.read(0x40), 0);
    assert_eq!(g.write(TRANSLATER, 0), Outcome::default());
}

#[test]
fn an_nvme_message_becomes_a_pending_lpi_on_its_collections_vcpu() {
    let mut g = Guest::linux_boot(2);
    g.map_nvme(1, 8200, 1, 0xa0);
    assert_eq!(g.its.errors(), (0, None));
    assert_eq!(g.its.translate(NVME, 1), Ok(VcpuSet::EMPTY.with(1)));
    assert_eq!(g.its.highest_pending(1), Some((8200, 0xa0)));
    assert_eq!(g.its.highest_pending(0), None);
    // The pass's quick look agrees: something may wait on vCPU 1 only.
    assert!(g.its.has_pending(1) && !g.its.has_pending(0));
    assert!(g.its.take(1, 8200));
    assert_eq!(g.its.highest_pending(1), None);
    assert!(!g.its.has_pending(1));
    // Lowest priority value wins, then lowest INTID.
    g.queue(&[Command::Mapti {
        device: NVME,
        event: 2,
        lpi: 8300,
        icid: 1,
    }]);
    g.set_property(8300, 0x80 | 1);
    g.queue(&[Command::Inv {
        device: NVME,
        event: 2,
    }]);
    g.its.translate(NVME, 1).unwrap();
    g.its.translate(NVME, 2).unwrap();
    assert_eq!(g.its.highest_pending(1), Some((8300, 0x80)));
    assert_eq!(g.its.vcpus_with_pending(), VcpuSet::EMPTY.with(1));
}

#[test]
fn a_disabled_lpi_stays_pending_until_an_inv_enables_it() {
    let mut g = Guest::linux_boot(1);
    g.map_nvme(0, 8192, 0, 0xa0);
    g.set_property(8192, 0xa0);
    // Without INV the cached configuration still says enabled.
    g.its.translate(NVME, 0).unwrap();
    assert!(g.its.highest_pending(0).is_some());
    g.queue(&[Command::Inv {
        device: NVME,
        event: 0,
    }]);
    assert_eq!(g.its.highest_pending(0), None);
    assert!(g.its.is_pending(0, 8192), "still pending, only disabled");
    g.set_property(8192, 0x40 | 1);
    let outcome = g.queue(&[Command::Invall { icid: 0 }]);
    assert!(outcome.kick.contains(0));
    assert_eq!(g.its.highest_pending(0), Some((8192, 0x40)));
}

#[test]
fn int_clear_discard_movi_and_movall_follow_the_spec() {
    let mut g = Guest::linux_boot(3);
    g.map_nvme(0, 8192, 0, 0xa0);
    let outcome = g.queue(&[Command::Int {
        device: NVME,
        event: 0,
    }]);
    assert!(outcome.kick.contains(0) && g.its.is_pending(0, 8192));
    g.queue(&[Command::Clear {
        device: NVME,
        event: 0,
    }]);
    assert!(!g.its.is_pending(0, 8192));
    // MOVI carries the pending state to the new collection's vCPU.
    g.its.translate(NVME, 0).unwrap();
    let outcome = g.queue(&[Command::Movi {
        device: NVME,
        event: 0,
        icid: 2,
    }]);
    assert!(outcome.kick.contains(2));
    assert!(!g.its.is_pending(0, 8192) && g.its.is_pending(2, 8192));
    assert_eq!(g.its.translate(NVME, 0), Ok(VcpuSet::EMPTY.with(2)));
    // MOVALL moves every pending LPI between redistributors.
    g.queue(&[Command::Movall { from: 2, to: 1 }]);
    assert!(g.its.is_pending(1, 8192) && !g.its.is_pending(2, 8192));
    // DISCARD drops the translation and the pending state of its collection's vCPU.
    g.its.translate(NVME, 0).unwrap();
    g.queue(&[Command::Discard {
        device: NVME,
        event: 0,
    }]);
    assert!(!g.its.is_pending(2, 8192));
    assert_eq!(g.its.translate(NVME, 0), Err(VitsError::NoTranslation));
}

#[test]
fn every_command_error_is_counted_and_changes_nothing() {
    let mut g = Guest::linux_boot(2);
    g.map_nvme(0, 8192, 0, 0xa0);
    let cases = [
        (Command::Unknown(0x2a), VitsError::UnknownCommand(0x2a)),
        (
            Command::Mapd {
                device: 0x10,
                size: 4,
                itt: ITT,
                valid: true,
            },
            VitsError::NoSuchDevice,
        ),
        (
            Command::Mapd {
                device: NVME,
                size: 16,
                itt: ITT,
                valid: true,
            },
            VitsError::IttTooLarge,
        ),
        (
            Command::Mapd {
                device: NVME,
                size: 5,
                itt: RAM_BASE + RAM_SIZE - 0x100,
                valid: true,
            },
            VitsError::IttOutsideRam,
        ),
        (
            Command::Mapti {
                device: NIC,
                event: 0,
                lpi: 8192,
                icid: 0,
            },
            VitsError::DeviceUnmapped,
        ),
        (
            Command::Mapti {
                device: NVME,
                event: 32,
                lpi: 8192,
                icid: 0,
            },
            VitsError::EventOutOfRange,
        ),
        (
            Command::Mapti {
                device: NVME,
                event: 0,
                lpi: 8191,
                icid: 0,
            },
            VitsError::InvalidLpi,
        ),
        (
            Command::Mapti {
                device: NVME,
                event: 0,
                lpi: 16384,
                icid: 0,
            },
            VitsError::InvalidLpi,
        ),
        (
            Command::Mapti {
                device: NVME,
                event: 0,
                lpi: 8192,
                icid: 256,
            },
            VitsError::CollectionTable,
        ),
        (
            Command::Int {
                device: NVME,
                event: 5,
            },
            VitsError::NoTranslation,
        ),
        (
            Command::Movi {
                device: NVME,
                event: 0,
                icid: 7,
            },
            VitsError::CollectionUnmapped,
        ),
        (
            Command::Mapc {
                icid: 3,
                rdbase: 2,
                valid: true,
            },
            VitsError::NoSuchVcpu,
        ),
        (Command::Sync { rdbase: 1 << 20 }, VitsError::NoSuchVcpu),
        (Command::Movall { from: 0, to: 9 }, VitsError::NoSuchVcpu),
        (Command::Invall { icid: 5 }, VitsError::CollectionUnmapped),
    ];
    for (command, error) in cases {
        assert_eq!(g.error_of(command), Some(error), "{command:?}");
    }
    // The NVMe's mapping survived all of it.
    assert_eq!(g.its.translate(NVME, 0), Ok(VcpuSet::EMPTY.with(0)));
    // ITT wider than what the hypervisor keeps: accepted, events past the limit refused.
    let mut small = Guest::linux_boot(1);
    small.queue(&[Command::Mapd {
        device: NVME,
        size: 7,
        itt: ITT,
        valid: true,
    }]);
    assert_eq!(
        small.error_of(Command::Mapti {
            device: NVME,
            event: 32,
            lpi: 8192,
            icid: 0,
        }),
        Some(VitsError::EventBeyondLimit)
    );
}

#[test]
fn tables_must_be_declared_and_inside_ram() {
    let mut g = Guest::linux_boot(1);
    let mapd = Command::Mapd {
        device: NVME,
        size: 4,
        itt: ITT,
        valid: true,
    };
    g.write(gits::CTLR, 0);
    // Device table outside RAM: every MAPD fails.
    g.write(gits::BASER, (RAM_BASE + RAM_SIZE) | gits::VALID);
    g.write(gits::CTLR, 1);
    assert_eq!(g.error_of(mapd), Some(VitsError::DeviceTable));
    // A one-page table of 8-byte entries holds DeviceIDs 0-511; not valid: nothing.
    g.write(gits::CTLR, 0);
    g.write(gits::BASER, DEVICE_TABLE);
    g.write(gits::CTLR, 1);
    assert_eq!(g.error_of(mapd), Some(VitsError::DeviceTable));
    // Collection table too small for the ICID (64 KiB pages straddling the end of RAM).
    g.write(gits::CTLR, 0);
    g.write(gits::BASER, DEVICE_TABLE | gits::VALID);
    g.write(
        gits::BASER + 8,
        (RAM_BASE + RAM_SIZE - 0x1_0000) | gits::VALID | 2 << 8 | 1,
    );
    g.write(gits::CTLR, 1);
    assert_eq!(g.error_of(mapd), None);
    assert_eq!(
        g.error_of(Command::Mapc {
            icid: 0,
            rdbase: 0,
            valid: true
        }),
        Some(VitsError::CollectionTable)
    );
    // BASERs and CBASER are read-only while the ITS is enabled.
    let baser = g.read(gits::BASER);
    g.write(gits::BASER, 0);
    assert_eq!(g.read(gits::BASER), baser);
    let cbaser = g.read(gits::CBASER);
    g.write(gits::CBASER, 0);
    assert_eq!(g.read(gits::CBASER), cbaser);
}

#[test]
fn lpi_tables_outside_ram_leave_lpis_disabled() {
    let mut g = Guest::new(1);
    // Property table straddling the end of RAM; pending table preset with LPI 8195.
    g.its.redistributor_write(
        0,
        gicr::PROPBASER,
        8,
        (RAM_BASE + RAM_SIZE - 0x1000) | 13,
        &g.ram,
    );
    g.poke(PENDING + 1024, &[0b1000]);
    g.its
        .redistributor_write(0, gicr::PENDBASER, 8, PENDING, &g.ram);
    g.its.redistributor_write(0, gicr::CTLR, 4, 1, &g.ram);
    assert!(g.its.is_pending(0, 8195), "the guest's preset pending bit");
    assert_eq!(
        g.its.highest_pending(0),
        None,
        "no property readable: disabled"
    );
    // PROPBASER and PENDBASER are frozen once LPIs are on; EnableLPIs cannot be cleared.
    g.its
        .redistributor_write(0, gicr::PROPBASER, 8, PROPERTIES | 13, &g.ram);
    assert_eq!(
        g.its.redistributor_read(0, gicr::PROPBASER, 8),
        (RAM_BASE + RAM_SIZE - 0x1000) | 13
    );
    g.its.redistributor_write(0, gicr::CTLR, 4, 0, &g.ram);
    assert_eq!(g.its.redistributor_read(0, gicr::CTLR, 4), 1);
    // A PENDBASER outside RAM is never read; PTZ skips the read.
    let mut h = Guest::new(2);
    h.its
        .redistributor_write(0, gicr::PENDBASER, 8, RAM_BASE + RAM_SIZE, &h.ram);
    h.its.redistributor_write(0, gicr::CTLR, 4, 1, &h.ram);
    h.poke(PENDING + 1024, &[0xff]);
    h.its
        .redistributor_write(1, gicr::PENDBASER, 8, PENDING | gicr::PENDBASER_PTZ, &h.ram);
    h.its.redistributor_write(1, gicr::CTLR, 4, 1, &h.ram);
    assert!(!h.its.is_pending(1, 8192));
    assert_eq!(h.its.redistributor_read(1, gicr::PENDBASER, 8) >> 62, 0);
    // A guest IDbits below 14 covers fewer LPIs: the rest read as disabled.
    let mut k = Guest::new(1);
    k.set_property(8192 + 100, 0xa1);
    k.its
        .redistributor_write(0, gicr::PROPBASER, 8, PROPERTIES | 12, &k.ram);
    k.its.redistributor_write(0, gicr::CTLR, 4, 1, &k.ram);
    assert_eq!(k.its.properties[100], 0, "8292 >= 2^13");
}

#[test]
fn device_messages_are_dropped_unless_everything_is_in_place() {
    let mut g = Guest::linux_boot(2);
    assert_eq!(g.its.translate(NVME, 0), Err(VitsError::DeviceUnmapped));
    assert_eq!(g.its.translate(0x42, 0), Err(VitsError::NoSuchDevice));
    g.map_nvme(0, 8192, 1, 0xa0);
    assert_eq!(
        g.its.translate(NVME, 1 << 20),
        Err(VitsError::EventOutOfRange)
    );
    g.queue(&[Command::Mapc {
        icid: 1,
        rdbase: 0,
        valid: false,
    }]);
    assert_eq!(g.its.translate(NVME, 0), Err(VitsError::CollectionUnmapped));
    g.write(gits::CTLR, 0);
    assert_eq!(g.its.translate(NVME, 0), Err(VitsError::Disabled));
    // A vCPU that never enabled LPIs gets none.
    let mut h = Guest::new(1);
    h.write(gits::BASER, DEVICE_TABLE | gits::VALID);
    h.write(gits::BASER + 8, COLLECTION_TABLE | gits::VALID);
    h.write(gits::CBASER, QUEUE | gits::VALID);
    h.writer = 0;
    h.write(gits::CTLR, 1);
    h.queue(&[Command::Mapc {
        icid: 0,
        rdbase: 0,
        valid: true,
    }]);
    h.map_nvme(0, 8192, 0, 0xa0);
    assert_eq!(h.its.translate(NVME, 0), Err(VitsError::LpisDisabled));
    assert_eq!(h.its.errors().1, Some(VitsError::LpisDisabled));
}

#[test]
fn enabling_lpis_with_an_assigned_function_makes_the_vpe_resident() {
    let enable = |devices: &[DeviceSlot], propbaser: u64| {
        let mut g = Guest::with_devices(2, devices);
        g.its
            .redistributor_write(1, gicr::PROPBASER, 8, propbaser, &g.ram);
        g.its
            .redistributor_write(1, gicr::PENDBASER, 8, PENDING, &g.ram);
        let outcome = g
            .its
            .redistributor_write(1, gicr::CTLR, 4, gicr::CTLR_ENABLE_LPIS, &g.ram);
        let again = g
            .its
            .redistributor_write(1, gicr::CTLR, 4, gicr::CTLR_ENABLE_LPIS, &g.ram);
        assert_eq!(again.resident, None, "once per run");
        outcome.resident
    };
    assert_eq!(
        enable(&slots(), PROPERTIES | 13),
        Some(Residency {
            vcpu: 1,
            properties: Pa(RAM.pa_base.0 + (PROPERTIES - RAM_BASE)),
            id_bits: 14,
        })
    );
    // The guest asking for more INTID bits than the GIC has gets the 14 it has.
    assert_eq!(
        enable(&slots(), PROPERTIES | 20).map(|r| r.id_bits),
        Some(14)
    );
    // Only emulated devices: their LPIs go through the list registers.
    assert_eq!(enable(&slots()[..1], PROPERTIES | 13), None);
    // A property table too small to hold any LPI, or not wholly inside RAM: the hardware
    // never reads it.
    assert_eq!(enable(&slots(), PROPERTIES | 12), None);
    assert_eq!(enable(&slots(), (RAM_BASE + RAM_SIZE - 0x1000) | 13), None);
    assert_eq!(enable(&slots(), 0x1000 | 13), None);
}

#[test]
fn assigned_functions_become_physical_gicv4_commands() {
    let mut g = Guest::linux_boot(2);
    let outcome = g.queue(&[
        Command::Mapd {
            device: NIC,
            size: 1,
            itt: ITT + 0x1000,
            valid: true,
        },
        Command::Mapti {
            device: NIC,
            event: 3,
            lpi: 8250,
            icid: 1,
        },
        Command::Inv {
            device: NIC,
            event: 3,
        },
        Command::Sync { rdbase: 1 },
    ]);
    assert_eq!(
        outcome.host,
        [
            HostCommand::Vmapti {
                device: NIC_PHYSICAL,
                event: 3,
                vintid: 8250,
                vcpu: 1
            },
            HostCommand::Inv {
                device: NIC_PHYSICAL,
                event: 3
            },
            HostCommand::Vsync { vcpu: 1 },
        ]
    );
    let outcome = g.queue(&[
        Command::Movi {
            device: NIC,
            event: 3,
            icid: 0,
        },
        Command::Int {
            device: NIC,
            event: 3,
        },
        Command::Clear {
            device: NIC,
            event: 3,
        },
        Command::Invall { icid: 0 },
        Command::Mapc {
            icid: 0,
            rdbase: 1,
            valid: true,
        },
        Command::Discard {
            device: NIC,
            event: 3,
        },
    ]);
    assert_eq!(
        outcome.host,
        [
            HostCommand::Vmovi {
                device: NIC_PHYSICAL,
                event: 3,
                vcpu: 0
            },
            HostCommand::Int {
                device: NIC_PHYSICAL,
                event: 3
            },
            HostCommand::Clear {
                device: NIC_PHYSICAL,
                event: 3
            },
            HostCommand::Vinvall { vcpu: 0 },
            HostCommand::Vmovi {
                device: NIC_PHYSICAL,
                event: 3,
                vcpu: 1
            },
            HostCommand::Discard {
                device: NIC_PHYSICAL,
                event: 3
            },
        ]
    );
    // The NIC has 4 vectors: event 4 is past the limit even though the ITT declares 4 bits.
    g.queue(&[Command::Mapd {
        device: NIC,
        size: 3,
        itt: ITT + 0x1000,
        valid: true,
    }]);
    assert_eq!(
        g.error_of(Command::Mapti {
            device: NIC,
            event: 4,
            lpi: 8250,
            icid: 0
        }),
        Some(VitsError::EventBeyondLimit)
    );
    // Remapping an event discards the old hardware mapping first; re-MAPD and reset
    // discard everything mapped.
    g.queue(&[Command::Mapti {
        device: NIC,
        event: 0,
        lpi: 8250,
        icid: 0,
    }]);
    let outcome = g.queue(&[Command::Mapti {
        device: NIC,
        event: 0,
        lpi: 8251,
        icid: 0,
    }]);
    assert_eq!(
        outcome.host[0],
        HostCommand::Discard {
            device: NIC_PHYSICAL,
            event: 0
        }
    );
    assert_eq!(
        g.its.reset(),
        [
            HostCommand::Discard {
                device: NIC_PHYSICAL,
                event: 0
            },
            HostCommand::Vsync { vcpu: 0 },
            HostCommand::Vsync { vcpu: 1 },
        ]
    );
    assert_eq!(g.read(gits::CTLR), gits::CTLR_QUIESCENT);
    assert_eq!(g.its.redistributor_read(0, gicr::CTLR, 4), 0);
}

#[test]
fn the_queue_wraps_and_a_writer_outside_it_processes_nothing() {
    let mut g = Guest::linux_boot(1);
    g.map_nvme(0, 8192, 0, 0xa0);
    // Fill up to the last slot, then wrap: CWRITER below CREADR means "to the end, then on".
    while g.writer != g.queue_bytes - 64 {
        g.queue(&[Command::Sync { rdbase: 0 }]);
    }
    g.queue(&[
        Command::Sync { rdbase: 0 },
        Command::Sync { rdbase: 0 },
        Command::Int {
            device: NVME,
            event: 0,
        },
    ]);
    assert_eq!(g.writer, 32);
    assert_eq!(g.read(gits::CREADR), 32);
    assert!(g.its.is_pending(0, 8192));
    // CWRITER at or past the end of the one-page queue: an error, and nothing runs.
    g.poke(
        QUEUE + 32,
        &Command::Clear {
            device: NVME,
            event: 0,
        }
        .encode(),
    );
    g.write(gits::CWRITER, 0x1000);
    assert_eq!(g.its.errors().1, Some(VitsError::WriterOutsideQueue));
    assert_eq!(g.read(gits::CREADR), 32);
    assert!(g.its.is_pending(0, 8192));
    // Misaligned offset bits are ignored.
    g.write(gits::CWRITER, 64 | 0x1f & !1);
    assert_eq!(g.read(gits::CWRITER), 64);
    assert_eq!(g.read(gits::CREADR), 64);
    assert!(!g.its.is_pending(0, 8192));
}

#[test]
fn an_unreadable_queue_stalls_until_retried_or_replaced() {
    let mut g = Guest::linux_boot(1);
    g.write(gits::CTLR, 0);
    // A 2-page queue whose second page lies past the end of RAM.
    g.write(
        gits::CBASER,
        (RAM_BASE + RAM_SIZE - 0x1000) | gits::VALID | 1,
    );
    assert_eq!(g.read(gits::CREADR), 0, "CBASER resets CREADR");
    g.write(gits::CTLR, 1);
    g.write(gits::CWRITER, 0x1000 + 32);
    // The first page (127 syncs... here zeros: unknown command 0) runs, then it stalls.
    for _ in 0..4 {
        g.read(gits::CREADR);
    }
    assert_eq!(g.read(gits::CREADR), 0x1000 | gits::CREADR_STALLED);
    assert_eq!(g.its.errors().1, Some(VitsError::QueueUnreadable));
    // Retry tries again (and stalls again); a new CBASER clears it.
    g.write(gits::CWRITER, (0x1000 + 32) | gits::CWRITER_RETRY);
    assert_eq!(g.read(gits::CREADR) & 1, 1);
    g.write(gits::CTLR, 0);
    g.write(gits::CBASER, QUEUE | gits::VALID);
    g.writer = 0;
    g.write(gits::CTLR, 1);
    assert_eq!(g.read(gits::CREADR), 0);
    g.queue(&[Command::Sync { rdbase: 0 }]);
    assert_eq!(g.read(gits::CREADR), 32);
}

#[test]
fn work_per_access_is_bounded_and_polling_finishes_it() {
    // A device with the most events the hypervisor keeps: each MAPD walks 2048 entries.
    let mut g = Guest::linux_boot_with(
        1,
        &[DeviceSlot {
            id: NVME,
            events: 4096,
            backing: Backing::Emulated,
        }],
    );
    g.write(gits::CTLR, 0);
    // A 256-page queue (the largest) full of MAPD storms of the NVMe device.
    g.write(gits::CBASER, QUEUE | gits::VALID | 15);
    g.write(gits::CWRITER, 0);
    g.write(gits::CTLR, 1);
    g.queue_bytes = 16 * 0x1000;
    g.writer = 0;
    let storm: Vec<Command> = (0..(16 * 0x1000 / 32) - 1)
        .map(|i| Command::Mapd {
            device: NVME,
            size: 10,
            itt: ITT,
            valid: i % 2 == 0,
        })
        .collect();
    // Placing the commands first, then one CWRITER write.
    for c in &storm {
        g.poke(QUEUE + g.writer, &c.encode());
        g.writer += 32;
    }
    let mut polls = 0;
    g.write(gits::CWRITER, g.writer);
    let mut last = g.its.creadr;
    assert_eq!(last, 32 * 2, "each MAPD walks 2048 entries: 33 units");
    loop {
        let now = g.read(gits::CREADR);
        assert!(
            now - last <= 32 * u64::from(WORK_PER_ACCESS),
            "bounded batch"
        );
        if now == g.writer {
            break;
        }
        last = now;
        polls += 1;
        assert!(polls < 2000);
    }
    assert!(polls >= storm.len() / 2 - 1);
    assert_eq!(g.its.errors(), (0, None));
}

/// Random register accesses, commands with fields near the valid ones, and device messages:
/// nothing panics, every batch is bounded, state stays inside the slice's limits, and every
/// physical command names the slice's own function and vCPUs.
#[test]
fn hostile_guests_stay_contained() {
    // Linked NVMe events that went to a guest directly, over all seeds.
    let mut went_direct = 0;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed * 0x9e37_79b9);
        let vcpus = 1 + rng.index(4);
        // Half the seeds: the NVMe is a shared device whose events the test links to
        // hardware events 0..8 of NVME_PHYSICAL (at home on the physical ITS to begin with).
        let shared = seed % 2 == 0;
        let mut devices = slots();
        if shared {
            devices[0].backing = Backing::Shared {
                physical_device: NVME_PHYSICAL,
            };
        }
        let mut g = if rng.percent(70) {
            Guest::linux_boot_with(vcpus, &devices)
        } else {
            Guest::with_devices(vcpus, &devices)
        };
        let shared_events = if shared { 8 } else { 0 };
        let mut physical = PhysicalIts::at_home(NVME_PHYSICAL, 0..shared_events as u32);
        if shared && g.its.enabled {
            // The guest's NVMe driver set up, as Linux leaves it: events 0..8 translated.
            let mut setup = vec![Command::Mapd {
                device: NVME,
                size: 4,
                itt: ITT,
                valid: true,
            }];
            setup.extend((0..8).map(|event| Command::Mapti {
                device: NVME,
                event,
                lpi: 8192 + event,
                icid: (event as usize % vcpus) as u16,
            }));
            physical.apply(&g.queue(&setup).host, seed);
        }
        for _ in 0..400 {
            let device = rng.pick(&[NVME, NIC, 0x10, NIC_PHYSICAL, u32::MAX]);
            let event = rng.pick(&[0, 1, 3, 4, 31, 32, 2047, u32::MAX]);
            let icid = rng.below(vcpus as u64 + 2) as u16 | if rng.percent(5) { 0x100 } else { 0 };
            let lpi = rng.pick(&[8192, 8193, 9000, 16383, 16384, 0, 1023]);
            let rd = rng.below(vcpus as u64 + 1) | if rng.percent(5) { 1 << 35 } else { 0 };
            let command = match rng.below(13) {
                0 => Command::Mapd {
                    device,
                    size: rng.below(32) as u8,
                    itt: rng.pick(&[ITT, RAM_BASE + RAM_SIZE - 0x100, 0, !0xff]),
                    valid: rng.percent(70),
                },
                1 => Command::Mapc {
                    icid,
                    rdbase: rd,
                    valid: rng.percent(80),
                },
                2 => Command::Mapti {
                    device,
                    event,
                    lpi,
                    icid,
                },
                3 => Command::Movi {
                    device,
                    event,
                    icid,
                },
                4 => Command::Discard { device, event },
                5 => Command::Int { device, event },
                6 => Command::Clear { device, event },
                7 => Command::Inv { device, event },
                8 => Command::Invall { icid },
                9 => Command::Movall {
                    from: rd,
                    to: rng.below(vcpus as u64 + 1),
                },
                10 => Command::Sync { rdbase: rd },
                _ => Command::Unknown(rng.next() as u8),
            };
            let (before, cbaser) = (g.its.creadr, g.its.cbaser);
            let outcome = match rng.below(20) {
                0 => g.write(
                    rng.pick(&[gits::CTLR, gits::CBASER, gits::BASER, gits::BASER + 8]),
                    rng.next(),
                ),
                1 => g.write(gits::CWRITER, rng.next()),
                2 => {
                    let mut raw = [0u8; 32];
                    raw.iter_mut().for_each(|b| *b = rng.next() as u8);
                    g.poke(QUEUE + g.writer % 0x1000, &raw);
                    g.writer = (g.writer + 32) % g.queue_bytes;
                    g.write(gits::CWRITER, g.writer)
                }
                3 => {
                    let v = rng.index(vcpus + 1);
                    let offset = rng.pick(&[gicr::CTLR, gicr::PROPBASER, gicr::PENDBASER, 0x74]);
                    g.its.redistributor_write(v, offset, 8, rng.next(), &g.ram)
                }
                4 => {
                    let kick = g.its.translate(device, event).unwrap_or_default();
                    Outcome {
                        kick,
                        ..Outcome::default()
                    }
                }
                5 => {
                    let v = rng.index(vcpus + 1);
                    if let Some((lpi, _)) = g.its.highest_pending(v) {
                        assert!(g.its.take(v, lpi));
                    }
                    Outcome::default()
                }
                6 | 7 => {
                    let hardware = rng.percent(70).then(|| {
                        let home = Home {
                            lpi: 8192 + rng.below(8) as u32,
                            vcpu: rng.index(vcpus),
                        };
                        (rng.below(8) as u32, home)
                    });
                    let device = if rng.percent(80) { NVME } else { device };
                    let event = if rng.percent(80) {
                        rng.below(10) as u32
                    } else {
                        event
                    };
                    let host = g.its.link(device, event, hardware).unwrap_or_default();
                    Outcome {
                        host,
                        ..Outcome::default()
                    }
                }
                _ => g.queue(&[command]),
            };
            if g.its.cbaser == cbaser
                && let Some((_, size)) = g.its.queue()
            {
                let advanced = (g.its.creadr + size - before) % size;
                assert!(advanced <= 32 * u64::from(WORK_PER_ACCESS), "seed {seed}");
            }
            assert!(outcome.kick.iter().all(|v| v < vcpus), "seed {seed}");
            // The budget counts physical commands; the last command may overrun it by its
            // own, at most one per event of the NIC plus the VSYNCs of turning the ITS off.
            assert!(
                outcome.host.len() <= WORK_PER_ACCESS as usize + 4 + vcpus,
                "seed {seed}: {} physical commands in one access",
                outcome.host.len()
            );
            physical.apply(&outcome.host, seed);
            went_direct += outcome
                .host
                .iter()
                .filter(
                    |h| matches!(h, HostCommand::Vmapti { device, .. } if *device == NVME_PHYSICAL),
                )
                .count();
            for h in &outcome.host {
                let (device, vcpu) = match *h {
                    HostCommand::Vmapti { device, vcpu, .. }
                    | HostCommand::Vmovi { device, vcpu, .. } => (Some(device), Some(vcpu)),
                    HostCommand::Discard { device, .. }
                    | HostCommand::Inv { device, .. }
                    | HostCommand::Int { device, .. }
                    | HostCommand::Clear { device, .. } => (Some(device), None),
                    HostCommand::Restore { device, vcpu, .. } => (Some(device), Some(vcpu)),
                    HostCommand::Vinvall { vcpu } | HostCommand::Vsync { vcpu } => {
                        (None, Some(vcpu))
                    }
                };
                assert!(
                    device.is_none_or(|d| d == NIC_PHYSICAL || shared && d == NVME_PHYSICAL),
                    "seed {seed}: {h:?}"
                );
                assert!(vcpu.is_none_or(|v| v < vcpus), "seed {seed}: {h:?}");
                if let HostCommand::Vmapti {
                    device,
                    event,
                    vintid,
                    ..
                } = *h
                {
                    let events = if device == NIC_PHYSICAL { 4 } else { 8 };
                    assert!(event < events && (LPI_BASE..16384).contains(&vintid));
                }
            }
            let kept: usize = g
                .its
                .devices
                .iter()
                .map(|d| d.itt.as_ref().map_or(0, |(_, e)| e.len()))
                .sum();
            assert!(kept <= 32 + 4, "seed {seed}: {kept} entries");
            for v in 0..vcpus {
                if let Some((lpi, _)) = g.its.highest_pending(v) {
                    assert!((LPI_BASE..16384).contains(&lpi));
                }
            }
        }
        physical.apply(&g.its.reset(), seed);
        assert_eq!(
            physical.direct(),
            0,
            "seed {seed}: left mapped {:?}",
            physical.0
        );
        assert_eq!(
            physical.0.len(),
            shared_events,
            "seed {seed}: {:?}",
            physical.0
        );
    }
    assert!(
        went_direct > 20,
        "only {went_direct} linked events went direct"
    );
}

/// An NVMe share whose hardware queue 5 serves the guest's event 1 (decision 5): the hardware
/// event follows the guest's translation of event 1, and goes home whenever that breaks.
#[test]
fn a_linked_event_goes_to_the_guest_while_its_translation_holds() {
    let mut devices = slots();
    devices[0].backing = Backing::Shared {
        physical_device: NVME_PHYSICAL,
    };
    let mut g = Guest::linux_boot_with(2, &devices);
    let mut physical = PhysicalIts::at_home(NVME_PHYSICAL, 5..6);
    let home = Home { lpi: 8197, vcpu: 0 };
    let (discard, restore) = (
        HostCommand::Discard {
            device: NVME_PHYSICAL,
            event: 5,
        },
        HostCommand::Restore {
            device: NVME_PHYSICAL,
            event: 5,
            lpi: 8197,
            vcpu: 0,
        },
    );
    let vmapti = |lpi, vcpu| HostCommand::Vmapti {
        device: NVME_PHYSICAL,
        event: 5,
        vintid: lpi,
        vcpu,
    };
    // Each step's physical commands, VSYNCs and VINVALLs left out, checked against the model.
    let mut step = |host: Vec<HostCommand>, expected: &[HostCommand]| {
        physical.apply(&host, 0);
        let host: Vec<HostCommand> = host
            .into_iter()
            .filter(|h| !matches!(h, HostCommand::Vsync { .. } | HostCommand::Vinvall { .. }))
            .collect();
        assert_eq!(host, expected);
    };
    // Linked before the guest maps it: nothing moves.
    let host = g.its.link(NVME, 1, Some((5, home))).unwrap();
    step(host, &[]);
    // Mapped: the hardware event goes to the vLPI on collection 1's vCPU.
    g.set_property(8300, 0xa0 | 1);
    let host = g
        .queue(&[
            Command::Mapd {
                device: NVME,
                size: 4,
                itt: ITT,
                valid: true,
            },
            Command::Mapti {
                device: NVME,
                event: 1,
                lpi: 8300,
                icid: 1,
            },
        ])
        .host;
    step(host, &[discard, vmapti(8300, 1)]);
    // MOVI follows with VMOVI; INV and INT act on the hardware event, nothing is emulated.
    let host = g
        .queue(&[
            Command::Movi {
                device: NVME,
                event: 1,
                icid: 0,
            },
            Command::Inv {
                device: NVME,
                event: 1,
            },
            Command::Int {
                device: NVME,
                event: 1,
            },
        ])
        .host;
    let on = |c: fn(u32, u32) -> HostCommand| c(NVME_PHYSICAL, 5);
    step(
        host,
        &[
            HostCommand::Vmovi {
                device: NVME_PHYSICAL,
                event: 5,
                vcpu: 0,
            },
            on(|device, event| HostCommand::Inv { device, event }),
            on(|device, event| HostCommand::Int { device, event }),
        ],
    );
    assert!(!g.its.is_pending(0, 8300));
    // DISCARD sends it home; a new MAPTI brings it back to the new vLPI.
    let host = g
        .queue(&[Command::Discard {
            device: NVME,
            event: 1,
        }])
        .host;
    step(host, &[discard, restore]);
    let host = g
        .queue(&[Command::Mapti {
            device: NVME,
            event: 1,
            lpi: 8301,
            icid: 1,
        }])
        .host;
    step(host, &[discard, vmapti(8301, 1)]);
    // The ITS off: home (and the guest's own INT is emulated meanwhile); on: back.
    let host = g.write(gits::CTLR, 0).host;
    step(host, &[discard, restore]);
    let host = g.write(gits::CTLR, gits::CTLR_ENABLED).host;
    step(host, &[discard, vmapti(8301, 1)]);
    // The collection unmapped: home.
    let host = g
        .queue(&[Command::Mapc {
            icid: 1,
            rdbase: 1,
            valid: false,
        }])
        .host;
    step(host, &[discard, restore]);
    let host = g
        .queue(&[Command::Mapc {
            icid: 1,
            rdbase: 0,
            valid: true,
        }])
        .host;
    step(host, &[discard, vmapti(8301, 0)]);
    // One hardware event per guest event and the other way round; only shared devices.
    assert_eq!(
        g.its.link(NVME, 2, Some((5, home))),
        Err(VitsError::LinkBusy)
    );
    assert_eq!(
        g.its.link(NVME, 1, Some((6, home))),
        Err(VitsError::LinkBusy)
    );
    assert_eq!(
        g.its.link(NIC, 1, Some((6, home))),
        Err(VitsError::NotShared)
    );
    assert_eq!(
        g.its.link(NVME, 32, Some((6, home))),
        Err(VitsError::EventBeyondLimit)
    );
    // Unlinking hardware event 6, whose link to event 1 was refused, leaves 5's alone (a
    // hostile guest with two direct CQs on one vector; found in review).
    assert_eq!(g.its.unlink_hardware(NVME, 6), Ok(Vec::new()));
    assert_eq!(
        g.its.link(NVME, 2, Some((5, home))),
        Err(VitsError::LinkBusy),
        "5 still follows event 1"
    );
    // Unlinked: home. Linked again, then a reset: home, and the link is gone.
    let host = g.its.unlink_hardware(NVME, 5).unwrap();
    step(host, &[discard, restore]);
    let host = g.its.link(NVME, 1, Some((5, home))).unwrap();
    step(host, &[discard, vmapti(8301, 0)]);
    let host = g.its.reset();
    step(host, &[discard, restore]);
    assert_eq!(g.its.link(NVME, 1, None), Ok(Vec::new()));
}

/// The physical ITS's translations as the host commands leave them: `true` for a vLPI
/// (VMAPTI), `false` for the hypervisor's own LPI (a shared device's hardware event at home).
/// A command on an event that is not mapped, or a mapping over one that is, would be a
/// command error on the real ITS (which may stall it), so the model never issues one.
#[derive(Default)]
struct PhysicalIts(alloc::collections::BTreeMap<(u32, u32), bool>);

impl PhysicalIts {
    /// Hardware events `events` of `device` mapped to the hypervisor's LPIs (at boot).
    fn at_home(device: u32, events: core::ops::Range<u32>) -> PhysicalIts {
        PhysicalIts(events.map(|e| ((device, e), false)).collect())
    }

    /// Events mapped to vLPIs.
    fn direct(&self) -> usize {
        self.0.values().filter(|&&v| v).count()
    }

    fn apply(&mut self, host: &[HostCommand], seed: u64) {
        for h in host {
            match *h {
                HostCommand::Vmapti { device, event, .. } => {
                    let old = self.0.insert((device, event), true);
                    assert!(old.is_none(), "seed {seed}: {h:?} over a mapping");
                }
                HostCommand::Restore { device, event, .. } => {
                    let old = self.0.insert((device, event), false);
                    assert!(old.is_none(), "seed {seed}: {h:?} over a mapping");
                }
                HostCommand::Discard { device, event } => {
                    let old = self.0.remove(&(device, event));
                    assert!(old.is_some(), "seed {seed}: {h:?} of nothing");
                }
                HostCommand::Vmovi { device, event, .. }
                | HostCommand::Inv { device, event }
                | HostCommand::Int { device, event }
                | HostCommand::Clear { device, event } => {
                    let mapped = self.0.get(&(device, event));
                    assert_eq!(mapped, Some(&true), "seed {seed}: {h:?} on no vLPI");
                }
                HostCommand::Vinvall { .. } | HostCommand::Vsync { .. } => {}
            }
        }
    }
}

/// A queue full of MAPCs moving a collection between two vCPUs: each moves every
/// translation of a 64-vector function with a VMOVI. The physical commands count against the
/// access's work, so one access issues about 64 of them, not 64 per MAPC.
#[test]
fn physical_commands_count_against_the_work_of_an_access() {
    const WIDE: u32 = 0x10;
    const WIDE_PHYSICAL: u32 = 0x200;
    let devices = [DeviceSlot {
        id: WIDE,
        events: 64,
        backing: Backing::Assigned {
            physical_device: WIDE_PHYSICAL,
        },
    }];
    let mut g = Guest::linux_boot_with(2, &devices);
    g.queue_bytes = 0x1000;
    let mut physical = PhysicalIts::default();
    let mut commands = vec![Command::Mapd {
        device: WIDE,
        size: 5,
        itt: ITT,
        valid: true,
    }];
    commands.extend((0..64).map(|event| Command::Mapti {
        device: WIDE,
        event,
        lpi: 8192 + event,
        icid: 0,
    }));
    for batch in commands.chunks(16) {
        let outcome = g.queue(batch);
        physical.apply(&outcome.host, 0);
        while g.its.creadr != g.writer {
            physical.apply(&g.its.read(gits::CREADR, 8, &g.ram).1.host, 0);
        }
    }
    assert_eq!(physical.direct(), 64);
    let ping_pong: Vec<Command> = (0..64)
        .map(|n| Command::Mapc {
            icid: 0,
            rdbase: (n % 2 + 1) % 2,
            valid: true,
        })
        .collect();
    let mut accesses = 0;
    let mut outcome = g.queue(&ping_pong[..60]);
    loop {
        accesses += 1;
        assert!(
            outcome.host.len() <= WORK_PER_ACCESS as usize + 64,
            "{} physical commands in one access",
            outcome.host.len()
        );
        physical.apply(&outcome.host, 0);
        if g.its.creadr == g.writer {
            break;
        }
        outcome = g.its.read(gits::CREADR, 8, &g.ram).1;
    }
    // 60 MAPCs of 64 VMOVIs each: one per access, as each overruns the budget by itself.
    assert_eq!(accesses, 60);
    assert_eq!(g.its.errors(), (0, None));
}

#[test]
fn a_disabled_its_delivers_nothing_from_assigned_functions() {
    let mut g = Guest::linux_boot(2);
    let mut physical = PhysicalIts::default();
    let outcome = g.queue(&[
        Command::Mapd {
            device: NIC,
            size: 1,
            itt: ITT + 0x1000,
            valid: true,
        },
        Command::Mapti {
            device: NIC,
            event: 0,
            lpi: 8250,
            icid: 0,
        },
        Command::Mapti {
            device: NIC,
            event: 1,
            lpi: 8251,
            icid: 1,
        },
    ]);
    physical.apply(&outcome.host, 0);
    // Off: both physical translations go (and every vPE is synchronised), the guest's stay.
    let outcome = g.write(gits::CTLR, 0);
    assert_eq!(
        outcome.host,
        [
            HostCommand::Discard {
                device: NIC_PHYSICAL,
                event: 0
            },
            HostCommand::Discard {
                device: NIC_PHYSICAL,
                event: 1
            },
            HostCommand::Vsync { vcpu: 0 },
            HostCommand::Vsync { vcpu: 1 },
        ]
    );
    physical.apply(&outcome.host, 0);
    assert_eq!(physical.direct(), 0);
    assert_eq!(g.write(gits::CTLR, 0).host, []);
    // On again: mapped back to their collections' vCPUs.
    let outcome = g.write(gits::CTLR, gits::CTLR_ENABLED);
    assert_eq!(
        outcome.host,
        [
            HostCommand::Vmapti {
                device: NIC_PHYSICAL,
                event: 0,
                vintid: 8250,
                vcpu: 0
            },
            HostCommand::Vmapti {
                device: NIC_PHYSICAL,
                event: 1,
                vintid: 8251,
                vcpu: 1
            },
        ]
    );
    physical.apply(&outcome.host, 0);
    // A translation whose collection was unmapped while mapped has nowhere to go when the
    // ITS comes back: it is dropped, and the guest's later commands on it fail.
    let outcome = g.queue(&[Command::Mapc {
        icid: 1,
        rdbase: 0,
        valid: false,
    }]);
    physical.apply(&outcome.host, 0);
    physical.apply(&g.write(gits::CTLR, 0).host, 0);
    let outcome = g.write(gits::CTLR, gits::CTLR_ENABLED);
    assert_eq!(
        outcome.host,
        [HostCommand::Vmapti {
            device: NIC_PHYSICAL,
            event: 0,
            vintid: 8250,
            vcpu: 0
        }]
    );
    physical.apply(&outcome.host, 0);
    assert_eq!(
        g.error_of(Command::Discard {
            device: NIC,
            event: 1
        }),
        Some(VitsError::NoTranslation)
    );
    // A reset while the ITS is off discards nothing on the physical ITS: nothing is there.
    physical.apply(&g.write(gits::CTLR, 0).host, 0);
    assert_eq!(g.its.reset(), []);
    assert_eq!(physical.direct(), 0);
}

/// The vGIC with a vITS: LPIs advertised, the LPI registers answered by the vITS, and
/// pending LPIs loaded into free list registers, most urgent first, never twice at once.
#[test]
fn the_vgic_loads_pending_lpis_into_free_list_registers_once() {
    use crate::vgic::VirtualGic;
    let mut g = Guest::linux_boot(1);
    g.map_nvme(0, 8192, 0, 0xa0);
    g.set_property(8193, 0x80 | 1);
    g.queue(&[Command::Mapti {
        device: NVME,
        event: 1,
        lpi: 8193,
        icid: 0,
    }]);
    let plain = VirtualGic::new(1, &[]);
    let mut gic = VirtualGic::new(1, &[]).with_its(g.its);
    let gicd_typer = gic.distributor_read(0x4, 4);
    assert_eq!(gicd_typer >> 17 & 1, 1, "LPIS");
    assert_eq!((gicd_typer >> 19 & 0x1f) + 1, 14, "INTID bits");
    assert_eq!(gicd_typer >> 16 & 1, 0, "no MBIS");
    assert_eq!(
        plain.distributor_read(0x4, 4) >> 17 & 1,
        0,
        "GICv3 slices: no LPIs"
    );
    assert_eq!(gic.redistributor_read(0, 0x8, 8) & 1, 1, "PLPIS");
    assert_eq!(plain.redistributor_read(0, 0x8, 8) & 1, 0);
    assert_eq!(gic.redistributor_read(0, gicr::CTLR, 4), 1, "EnableLPIs");
    assert_eq!(
        gic.redistributor_read(0, gicr::PROPBASER, 8),
        PROPERTIES | 13
    );
    gic.distributor_write(0, 4, 2);
    let its = gic.its_mut().unwrap();
    let kick = its
        .translate(NVME, 0)
        .unwrap()
        .union(its.translate(NVME, 1).unwrap());
    assert_eq!(gic.lpis_changed(kick.with(7)), VcpuSet::EMPTY.with(0));
    let mut lrs = [0u64; 1];
    let update = gic.sync_list_registers(0, &mut lrs);
    assert_eq!(lrs[0] & 0xffff_ffff, 8193, "priority 0x80 before 0xa0");
    assert_eq!(lrs[0] >> 48 & 0xff, 0x80);
    assert_eq!(lrs[0] >> 60, 0b0101, "pending, group 1, no HW");
    assert!(update.underflow, "8192 still waits");
    // 8193 fires again while in the register; with more registers, 8192 is loaded but 8193
    // is not loaded a second time.
    gic.its_mut().unwrap().translate(NVME, 1).unwrap();
    let mut lrs3 = [lrs[0], 0, 0];
    gic.sync_list_registers(0, &mut lrs3);
    assert_eq!(lrs3[1] & 0xffff_ffff, 8192);
    assert_eq!(lrs3[2], 0);
    // The guest finishes 8193: it retires and its new pending state is loaded.
    lrs3[0] = 0;
    let update = gic.sync_list_registers(0, &mut lrs3);
    assert_eq!(lrs3[0] & 0xffff_ffff, 8193);
    assert!(!update.underflow);
    assert_eq!(gic.its_mut().unwrap().highest_pending(0), None);
}

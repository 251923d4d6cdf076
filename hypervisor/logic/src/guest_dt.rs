//! The device tree each slice boots with (DESIGN §4): a small QEMU-`virt`-shaped machine with
//! only the slice's own vCPUs, memory, GICv3 (its redistributors only), architected timer,
//! PSCI over HVC and the emulated PL011. Bindings: Linux `Documentation/devicetree/bindings`
//! `arm/psci.yaml`, `interrupt-controller/arm,gic-v3.yaml`, `timer/arm,arch_timer.yaml`,
//! `serial/pl011.yaml`.

use alloc::string::String;
use alloc::vec::Vec;
use microvisor_plan::layout::{DTB_MAX, GUEST_RAM_BASE};
use vm_fdt::FdtWriter;

use crate::pl011::PL011_SIZE;

/// The guest-physical map every slice sees (the same addresses as QEMU virt).
pub mod map {
    /// GICv3 distributor.
    pub const GICD: u64 = 0x0800_0000;
    pub const GICD_SIZE: u64 = 0x1_0000;
    /// First redistributor; one RD_base + SGI_base pair (128 KiB) per vCPU.
    pub const GICR: u64 = 0x080a_0000;
    pub const GICR_STRIDE: u64 = 0x2_0000;
    /// Room for redistributors below the UART window (as on QEMU virt).
    pub const GICR_REGION_SIZE: u64 = 0xf6_0000;
    /// The emulated PL011.
    pub const UART: u64 = 0x0900_0000;
    /// The PL011's SPI number as written in the DT (INTID 33).
    pub const UART_SPI: u32 = 1;
    /// The slice's PCIe host bridge (only with NVMe): ECAM for bus 0, as QEMU virt's
    /// high ECAM, and the 32-bit memory window its BARs go in.
    pub const ECAM: u64 = 0x40_1000_0000;
    pub const PCI_MMIO: u64 = 0x1000_0000;
    pub const PCI_MMIO_SIZE: u64 = 0x100_0000;
    /// SPIs the slice's devices signal through GICD_SETSPI_NSR (message-based interrupts).
    pub const MBI_FIRST: u32 = 64;
    pub const MBI_COUNT: u32 = 32;
}

/// An emulated device in the guest map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Uart,
    Distributor,
    /// The redistributor frames of one vCPU.
    Redistributor {
        vcpu: usize,
    },
    /// The PCIe host bridge's configuration space (only for slices with NVMe).
    PciConfig,
}

/// Which emulated device of a slice with `vcpus` vCPUs the IPA falls in, and the offset in it.
/// Redistributor frames exist only for the slice's own vCPUs, ECAM only with `pcie`. (A
/// function's BARs move where the guest puts them; the caller checks those.)
pub fn device_at(ipa: u64, vcpus: usize, pcie: bool) -> Option<(Device, u64)> {
    use crate::vgic::REDISTRIBUTOR_SIZE;
    let within = |base: u64, size: u64| ipa.checked_sub(base).filter(|&o| o < size);
    if let Some(offset) = within(map::ECAM, crate::vpci::ECAM_SIZE).filter(|_| pcie) {
        return Some((Device::PciConfig, offset));
    }
    if let Some(offset) = within(map::UART, PL011_SIZE) {
        return Some((Device::Uart, offset));
    }
    if let Some(offset) = within(map::GICD, map::GICD_SIZE) {
        return Some((Device::Distributor, offset));
    }
    let offset = ipa.checked_sub(map::GICR)?;
    let vcpu = usize::try_from(offset / REDISTRIBUTOR_SIZE).ok()?;
    (vcpu < vcpus).then_some((Device::Redistributor { vcpu }, offset % REDISTRIBUTOR_SIZE))
}

/// Most vCPUs a slice can have: redistributors that fit the guest's GICR window.
pub const MAX_VCPUS: usize = microvisor_plan::model::MAX_VCPUS;
const _: () = assert!(MAX_VCPUS as u64 * map::GICR_STRIDE <= map::GICR_REGION_SIZE);

/// Timer PPIs as the DT numbers them (INTID - 16): secure phys, non-secure phys, virtual, hyp.
const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
/// GIC maintenance interrupt PPI.
const MAINTENANCE_PPI: u32 = 9;
/// GIC DT interrupt types and trigger flags.
const SPI: u32 = 0;
const PPI: u32 = 1;
const LEVEL_HIGH: u32 = 4;
/// The PL011's reference clock (what QEMU virt advertises).
const UART_CLOCK_HZ: u32 = 24_000_000;

const PHANDLE_GIC: u32 = 1;
const PHANDLE_CLOCK: u32 = 2;

/// What goes into a slice's device tree.
#[derive(Clone, Debug)]
pub struct GuestMachine<'a> {
    pub slice_name: &'a str,
    pub vcpus: usize,
    /// Bytes of RAM at [`GUEST_RAM_BASE`].
    pub memory: u64,
    pub cmdline: &'a str,
    /// IPA range of the initrd, if any.
    pub initrd: Option<(u64, u64)>,
    /// The slice has an NVMe controller on its own PCIe host bridge.
    pub pcie: bool,
}

/// Why no device tree could be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestDtError {
    /// More vCPUs than redistributor frames fit the guest map ([`MAX_VCPUS`]).
    TooManyVcpus,
    /// The tree came out larger than the [`DTB_MAX`] window reserved for it.
    TooLarge,
    /// The DT writer refused a name or value (e.g. a NUL byte inside the command line).
    Writer,
}

impl From<vm_fdt::Error> for GuestDtError {
    fn from(_: vm_fdt::Error) -> Self {
        GuestDtError::Writer
    }
}

/// Builds the flattened device tree for one slice.
pub fn generate(machine: &GuestMachine<'_>) -> Result<Vec<u8>, GuestDtError> {
    if machine.vcpus == 0 || machine.vcpus > MAX_VCPUS {
        return Err(GuestDtError::TooManyVcpus);
    }
    let mut w = FdtWriter::new()?;
    let root = w.begin_node("")?;
    w.property_string("compatible", "linux,dummy-virt")?;
    w.property_string(
        "model",
        &alloc::format!("microvisor slice {}", machine.slice_name),
    )?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", PHANDLE_GIC)?;

    chosen(&mut w, machine)?;
    memory(&mut w, machine.memory)?;
    cpus(&mut w, machine.vcpus)?;
    psci(&mut w)?;
    gic(&mut w, machine.vcpus, machine.pcie)?;
    timer(&mut w)?;
    uart(&mut w)?;
    if machine.pcie {
        pcie(&mut w)?;
    }

    w.end_node(root)?;
    let blob = w.finish()?;
    if blob.len() as u64 > DTB_MAX {
        return Err(GuestDtError::TooLarge);
    }
    Ok(blob)
}

fn uart_path() -> String {
    alloc::format!("/pl011@{:x}", map::UART)
}

fn chosen(w: &mut FdtWriter, m: &GuestMachine<'_>) -> Result<(), GuestDtError> {
    let node = w.begin_node("chosen")?;
    w.property_string("bootargs", m.cmdline)?;
    w.property_string("stdout-path", &uart_path())?;
    w.property_string("microvisor,slice-name", m.slice_name)?;
    if let Some((start, end)) = m.initrd {
        w.property_u64("linux,initrd-start", start)?;
        w.property_u64("linux,initrd-end", end)?;
    }
    w.end_node(node)?;
    Ok(())
}

fn memory(w: &mut FdtWriter, size: u64) -> Result<(), GuestDtError> {
    let node = w.begin_node(&alloc::format!("memory@{GUEST_RAM_BASE:x}"))?;
    w.property_string("device_type", "memory")?;
    w.property_array_u64("reg", &[GUEST_RAM_BASE, size])?;
    w.end_node(node)?;
    Ok(())
}

fn cpus(w: &mut FdtWriter, vcpus: usize) -> Result<(), GuestDtError> {
    let node = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for i in 0..vcpus {
        let cpu = w.begin_node(&alloc::format!("cpu@{i}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,armv8")?;
        w.property_u32("reg", i as u32)?;
        w.property_string("enable-method", "psci")?;
        w.end_node(cpu)?;
    }
    w.end_node(node)?;
    Ok(())
}

fn psci(w: &mut FdtWriter) -> Result<(), GuestDtError> {
    let node = w.begin_node("psci")?;
    w.property_string_list(
        "compatible",
        alloc::vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()],
    )?;
    w.property_string("method", "hvc")?;
    w.end_node(node)?;
    Ok(())
}

fn gic(w: &mut FdtWriter, vcpus: usize, mbi: bool) -> Result<(), GuestDtError> {
    let node = w.begin_node(&alloc::format!("intc@{:x}", map::GICD))?;
    w.property_string("compatible", "arm,gic-v3")?;
    w.property_u32("#interrupt-cells", 3)?;
    w.property_null("interrupt-controller")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_null("ranges")?;
    let redistributors = map::GICR_STRIDE * vcpus as u64;
    w.property_array_u64(
        "reg",
        &[map::GICD, map::GICD_SIZE, map::GICR, redistributors],
    )?;
    w.property_u32("#redistributor-regions", 1)?;
    w.property_array_u32("interrupts", &[PPI, MAINTENANCE_PPI, LEVEL_HIGH])?;
    if mbi {
        // Message-based SPIs: devices write the INTID to GICD_SETSPI_NSR (Linux irq-gic-v3-mbi).
        w.property_null("msi-controller")?;
        w.property_array_u32("mbi-ranges", &[map::MBI_FIRST, map::MBI_COUNT])?;
    }
    w.property_u32("phandle", PHANDLE_GIC)?;
    w.end_node(node)?;
    Ok(())
}

fn timer(w: &mut FdtWriter) -> Result<(), GuestDtError> {
    let node = w.begin_node("timer")?;
    w.property_string("compatible", "arm,armv8-timer")?;
    let cells: Vec<u32> = TIMER_PPIS
        .iter()
        .flat_map(|&ppi| [PPI, ppi, LEVEL_HIGH])
        .collect();
    w.property_array_u32("interrupts", &cells)?;
    w.property_null("always-on")?;
    w.end_node(node)?;
    Ok(())
}

fn uart(w: &mut FdtWriter) -> Result<(), GuestDtError> {
    let clock = w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", UART_CLOCK_HZ)?;
    w.property_string("clock-output-names", "clk24mhz")?;
    w.property_u32("phandle", PHANDLE_CLOCK)?;
    w.end_node(clock)?;

    let node = w.begin_node(&uart_path()[1..])?;
    w.property_string_list(
        "compatible",
        alloc::vec!["arm,pl011".into(), "arm,primecell".into()],
    )?;
    w.property_array_u64("reg", &[map::UART, PL011_SIZE])?;
    w.property_array_u32("interrupts", &[SPI, map::UART_SPI, LEVEL_HIGH])?;
    w.property_array_u32("clocks", &[PHANDLE_CLOCK, PHANDLE_CLOCK])?;
    w.property_string_list(
        "clock-names",
        alloc::vec!["uartclk".into(), "apb_pclk".into()],
    )?;
    w.end_node(node)?;
    Ok(())
}

/// The slice's PCIe host bridge: bus 0 only, one 32-bit memory window, MSIs through the GIC.
fn pcie(w: &mut FdtWriter) -> Result<(), GuestDtError> {
    let node = w.begin_node(&alloc::format!("pcie@{:x}", map::PCI_MMIO))?;
    w.property_string("compatible", "pci-host-ecam-generic")?;
    w.property_string("device_type", "pci")?;
    w.property_u32("#address-cells", 3)?;
    w.property_u32("#size-cells", 2)?;
    w.property_array_u64("reg", &[map::ECAM, crate::vpci::ECAM_SIZE])?;
    w.property_array_u32("bus-range", &[0, 0])?;
    // 32-bit non-prefetchable memory: PCI address = CPU address.
    let (base, size) = (map::PCI_MMIO, map::PCI_MMIO_SIZE);
    w.property_array_u32(
        "ranges",
        &[
            0x0200_0000,
            0,
            base as u32,
            (base >> 32) as u32,
            base as u32,
            (size >> 32) as u32,
            size as u32,
        ],
    )?;
    w.property_u32("msi-parent", PHANDLE_GIC)?;
    w.property_null("dma-coherent")?;
    w.property_u32("linux,pci-domain", 0)?;
    w.end_node(node)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdt::Fdt;

    fn machine(vcpus: usize) -> GuestMachine<'static> {
        GuestMachine {
            slice_name: "web-0",
            vcpus,
            memory: 256 << 20,
            cmdline: "console=ttyAMA0 quiet",
            initrd: Some((0x4f00_0000, 0x4f80_0000)),
            pcie: false,
        }
    }

    fn prop_u64s(fdt: &Fdt<'_>, path: &str, name: &str) -> Vec<u64> {
        let value = fdt.find_node(path).unwrap().property(name).unwrap().value;
        value
            .chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn describes_exactly_the_slice() {
        let blob = generate(&machine(3)).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let cpus: Vec<_> = fdt.find_node("/cpus").unwrap().children().collect();
        assert_eq!(cpus.len(), 3);
        for (i, cpu) in cpus.iter().enumerate() {
            let reg = cpu.property("reg").unwrap().value;
            assert_eq!(u32::from_be_bytes(reg.try_into().unwrap()), i as u32);
            assert_eq!(
                cpu.property("enable-method").unwrap().as_str(),
                Some("psci")
            );
        }
        assert_eq!(
            prop_u64s(&fdt, "/memory@40000000", "reg"),
            [0x4000_0000, 256 << 20]
        );
        assert_eq!(
            prop_u64s(&fdt, "/intc@8000000", "reg"),
            [0x800_0000, 0x1_0000, 0x80a_0000, 3 * 0x2_0000]
        );
        assert_eq!(
            fdt.find_node("/psci")
                .unwrap()
                .property("method")
                .unwrap()
                .as_str(),
            Some("hvc")
        );
        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(
            chosen.property("bootargs").unwrap().as_str(),
            Some("console=ttyAMA0 quiet")
        );
        assert_eq!(
            chosen.property("microvisor,slice-name").unwrap().as_str(),
            Some("web-0")
        );
        assert_eq!(
            chosen.property("stdout-path").unwrap().as_str(),
            Some("/pl011@9000000")
        );
        assert_eq!(
            prop_u64s(&fdt, "/chosen", "linux,initrd-start"),
            [0x4f00_0000]
        );
        assert_eq!(
            prop_u64s(&fdt, "/chosen", "linux,initrd-end"),
            [0x4f80_0000]
        );
        assert!(fdt.find_compatible(&["arm,pl011"]).is_some());
        assert!(fdt.find_compatible(&["arm,armv8-timer"]).is_some());
    }

    #[test]
    fn firmware_inventory_reader_accepts_it() {
        // The hypervisor's own DT reader sees the slice as a one-node machine of its own.
        let blob = generate(&machine(2)).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(fdt.find_node("/cpus").unwrap().children().count(), 2);
        assert!(
            fdt.find_node("/pcie").is_none(),
            "no hardware the slice does not own"
        );
    }

    #[test]
    fn devices_by_address() {
        let at = |ipa| device_at(ipa, 2, false);
        assert_eq!(at(0x0900_0018), Some((Device::Uart, 0x18)));
        assert_eq!(at(0x0900_1000), None);
        assert_eq!(at(0x0800_0004), Some((Device::Distributor, 4)));
        assert_eq!(at(0x0801_0000), None);
        assert_eq!(
            at(0x080a_0008),
            Some((Device::Redistributor { vcpu: 0 }, 8))
        );
        assert_eq!(
            at(0x080d_0080),
            Some((Device::Redistributor { vcpu: 1 }, 0x1_0080))
        );
        assert_eq!(
            at(0x080e_0008),
            None,
            "frame of a vCPU the slice does not have"
        );
        assert_eq!(at(0x0901_0000), None);
        assert_eq!(at(0), None);
        assert_eq!(at(0x40_1000_0010), None, "no PCIe without NVMe");
        assert_eq!(
            device_at(0x40_1000_0010, 2, true),
            Some((Device::PciConfig, 0x10))
        );
        assert_eq!(
            device_at(0x40_1010_0000, 2, true),
            None,
            "bus 1 does not exist"
        );
    }

    #[test]
    fn nvme_slices_get_a_host_bridge_and_mbi() {
        let blob = generate(&GuestMachine {
            pcie: true,
            ..machine(2)
        })
        .unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let bridge = fdt.find_compatible(&["pci-host-ecam-generic"]).unwrap();
        assert!(bridge.property("msi-parent").is_some());
        let gic = fdt.find_node("/intc@8000000").unwrap();
        assert!(gic.property("msi-controller").is_some());
        let ranges = gic.property("mbi-ranges").unwrap().value;
        assert_eq!(ranges, [0, 0, 0, 64, 0, 0, 0, 32]);
        let plain = generate(&machine(2)).unwrap();
        let fdt = Fdt::new(&plain).unwrap();
        assert!(fdt.find_compatible(&["pci-host-ecam-generic"]).is_none());
        assert!(
            fdt.find_node("/intc@8000000")
                .unwrap()
                .property("msi-controller")
                .is_none()
        );
    }

    #[test]
    fn refuses_zero_and_too_many_vcpus() {
        assert_eq!(generate(&machine(0)), Err(GuestDtError::TooManyVcpus));
        assert_eq!(
            generate(&machine(MAX_VCPUS + 1)),
            Err(GuestDtError::TooManyVcpus)
        );
        assert!(generate(&machine(MAX_VCPUS)).is_ok());
    }

    #[test]
    fn refuses_a_tree_larger_than_its_window() {
        let huge = "x".repeat(DTB_MAX as usize);
        let m = GuestMachine {
            cmdline: &huge,
            ..machine(1)
        };
        assert_eq!(generate(&m), Err(GuestDtError::TooLarge));
    }

    #[test]
    fn refuses_nul_in_command_line() {
        let m = GuestMachine {
            cmdline: "a\0b",
            ..machine(1)
        };
        assert_eq!(generate(&m), Err(GuestDtError::Writer));
    }
}

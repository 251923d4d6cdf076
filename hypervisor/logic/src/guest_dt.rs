//! The device tree each slice boots with (docs/architecture.md, "Slices"): a small
//! QEMU-`virt`-shaped machine with only the slice's own vCPUs, memory, architected timer and
//! PSCI over HVC, plus one node per emulated device. A device is described once, by a
//! [`DeviceNode`]: its regions feed the slice's MMIO bus ([`crate::bus`]) and its node goes
//! into the tree, so adding a device never means editing this module. Bindings: Linux
//! `Documentation/devicetree/bindings` `arm/psci.yaml`, `interrupt-controller/arm,gic-v3.yaml`,
//! `timer/arm,arch_timer.yaml`, `serial/pl011.yaml`, `pci/host-generic-pci.yaml`,
//! `gpio/pl061-gpio.yaml`, `input/gpio-keys.yaml`.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use microvisor_plan::layout::{DTB_MAX, GUEST_RAM_BASE};

use crate::bus::BusRegion;
use crate::dtb::writer::DtbWriteError;
pub use crate::dtb::writer::DtbWriter;
use crate::pl011::PL011_SIZE;
use crate::pl061::{PL061_SIZE, POWER_KEY_LINE};

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
    /// The emulated PL061 GPIO controller (the power key), as on QEMU virt.
    pub const GPIO: u64 = 0x0903_0000;
    /// The PL061's SPI number as written in the DT (INTID 39).
    pub const GPIO_SPI: u32 = 7;
    /// The slice's PCIe host bridge (with an NVMe share or assigned functions): ECAM for bus
    /// 0, as QEMU virt's high ECAM, and the 32-bit memory window its BARs go in.
    pub const ECAM: u64 = 0x40_1000_0000;
    pub const PCI_MMIO: u64 = 0x1000_0000;
    pub const PCI_MMIO_SIZE: u64 = 0x100_0000;
    /// SPIs the slice's devices signal through GICD_SETSPI_NSR (message-based interrupts).
    pub const MBI_FIRST: u32 = 64;
    pub const MBI_COUNT: u32 = 32;
    /// The virtual ITS of a slice on a GICv4 node (instead of MBI): control frame, then the
    /// translation frame with GITS_TRANSLATER, as on QEMU virt.
    pub const ITS: u64 = 0x0808_0000;
    pub const ITS_SIZE: u64 = 0x2_0000;
    /// What a PCI function's MSI-X entry must hold as its address to reach the vITS.
    pub const ITS_TRANSLATER: u64 = ITS + 0x1_0040;
}

// The largest slice's RAM ends below its ECAM, and the ECAM (bus 0, 1 MiB) inside the IPA
// space stage 2 translates.
const _: () = assert!(
    microvisor_plan::layout::GUEST_RAM_BASE + microvisor_plan::model::MAX_SLICE_MEMORY <= map::ECAM
);
const _: () = assert!(map::ECAM + (1 << 20) <= 1 << crate::pagetable::STAGE2_INPUT_BITS);

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
/// The fixed APB clock [`Pl011Node`] writes, which [`Pl061Node`] names too.
const PHANDLE_CLOCK: u32 = 2;
const PHANDLE_GPIO: u32 = 3;
const PHANDLE_ITS: u32 = 4;
/// Linux input event code of the power key (`include/uapi/linux/input-event-codes.h`).
const KEY_POWER: u32 = 116;

/// What goes into a slice's device tree besides its devices.
#[derive(Clone, Debug)]
pub struct GuestMachine<'a> {
    pub slice_name: &'a str,
    pub vcpus: usize,
    /// Bytes of RAM at [`GUEST_RAM_BASE`].
    pub memory: u64,
    pub cmdline: &'a str,
    /// IPA range of the initrd, if any.
    pub initrd: Option<(u64, u64)>,
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

impl From<DtbWriteError> for GuestDtError {
    fn from(_: DtbWriteError) -> Self {
        GuestDtError::Writer
    }
}

/// One emulated device as the slice's machine describes it: the guest-physical ranges it
/// decodes (its bus regions, which are also its DT `reg`), the SPIs it signals, and its node.
pub trait DeviceNode {
    /// The ranges the device answers, each with the exit counter its accesses count under.
    fn regions(&self) -> Vec<BusRegion>;
    /// The INTIDs of the SPIs the device raises (the slice's vGIC owns them).
    fn spis(&self) -> Vec<u32> {
        Vec::new()
    }
    /// The device's path, if it is the slice's console (`/chosen/stdout-path`).
    fn console_path(&self) -> Option<String> {
        None
    }
    /// Writes the device's node(s) under the root.
    fn write_node(&self, w: &mut DtbWriter) -> Result<(), GuestDtError>;
}

/// Builds the flattened device tree for one slice with `devices` (which must include the
/// interrupt controller, [`GicNode`], every other node's interrupt parent).
pub fn generate(
    machine: &GuestMachine<'_>,
    devices: &[&dyn DeviceNode],
) -> Result<Vec<u8>, GuestDtError> {
    if machine.vcpus == 0 || machine.vcpus > MAX_VCPUS {
        return Err(GuestDtError::TooManyVcpus);
    }
    let mut w = DtbWriter::new();
    let root = w.begin_node("")?;
    w.property_string("compatible", "linux,dummy-virt")?;
    w.property_string(
        "model",
        &alloc::format!("microvisor slice {}", machine.slice_name),
    )?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", PHANDLE_GIC)?;

    let stdout = devices.iter().find_map(|d| d.console_path());
    chosen(&mut w, machine, stdout.as_deref())?;
    memory(&mut w, machine.memory)?;
    cpus(&mut w, machine.vcpus)?;
    psci(&mut w)?;
    timer(&mut w)?;
    for device in devices {
        device.write_node(&mut w)?;
    }

    w.end_node(root)?;
    let blob = w.finish()?;
    if blob.len() as u64 > DTB_MAX {
        return Err(GuestDtError::TooLarge);
    }
    Ok(blob)
}

fn chosen(
    w: &mut DtbWriter,
    m: &GuestMachine<'_>,
    stdout: Option<&str>,
) -> Result<(), GuestDtError> {
    let node = w.begin_node("chosen")?;
    w.property_string("bootargs", m.cmdline)?;
    if let Some(path) = stdout {
        w.property_string("stdout-path", path)?;
    }
    w.property_string("microvisor,slice-name", m.slice_name)?;
    if let Some((start, end)) = m.initrd {
        w.property_u64("linux,initrd-start", start)?;
        w.property_u64("linux,initrd-end", end)?;
    }
    w.end_node(node)?;
    Ok(())
}

fn memory(w: &mut DtbWriter, size: u64) -> Result<(), GuestDtError> {
    let node = w.begin_node_at("memory", GUEST_RAM_BASE)?;
    w.property_string("device_type", "memory")?;
    w.property_array_u64("reg", &[GUEST_RAM_BASE, size])?;
    w.end_node(node)?;
    Ok(())
}

fn cpus(w: &mut DtbWriter, vcpus: usize) -> Result<(), GuestDtError> {
    let node = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for i in 0..vcpus {
        let cpu = w.begin_node_at("cpu", i as u64)?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,armv8")?;
        w.property_u32("reg", i as u32)?;
        w.property_string("enable-method", "psci")?;
        w.end_node(cpu)?;
    }
    w.end_node(node)?;
    Ok(())
}

fn psci(w: &mut DtbWriter) -> Result<(), GuestDtError> {
    let node = w.begin_node("psci")?;
    w.property_strings("compatible", &["arm,psci-1.0", "arm,psci-0.2"])?;
    w.property_string("method", "hvc")?;
    w.end_node(node)?;
    Ok(())
}

fn timer(w: &mut DtbWriter) -> Result<(), GuestDtError> {
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

/// The slice's GICv3: the distributor and one redistributor frame pair per vCPU, and with
/// `mbi` the message-based SPIs its PCI functions signal through (Linux irq-gic-v3-mbi), or
/// with `its` a virtual ITS child node (GICv4 nodes, docs/decisions/0004-gicv4-virtual-its.md;
/// its frames are [`ItsNode`]'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GicNode {
    pub vcpus: usize,
    pub mbi: bool,
    pub its: bool,
}

impl GicNode {
    /// Index of the distributor region in [`DeviceNode::regions`].
    pub const DISTRIBUTOR: usize = 0;
    /// Index of the redistributor region (one frame pair per vCPU).
    pub const REDISTRIBUTORS: usize = 1;
}

impl DeviceNode for GicNode {
    fn regions(&self) -> Vec<BusRegion> {
        let redistributors = map::GICR_STRIDE * self.vcpus as u64;
        vec![
            BusRegion::new(map::GICD, map::GICD_SIZE, "mmio-gic"),
            BusRegion::new(map::GICR, redistributors, "mmio-gic"),
        ]
    }

    fn write_node(&self, w: &mut DtbWriter) -> Result<(), GuestDtError> {
        let node = w.begin_node_at("intc", map::GICD)?;
        w.property_string("compatible", "arm,gic-v3")?;
        w.property_u32("#interrupt-cells", 3)?;
        w.property_null("interrupt-controller")?;
        w.property_u32("#address-cells", 2)?;
        w.property_u32("#size-cells", 2)?;
        w.property_null("ranges")?;
        let reg: Vec<u64> = self
            .regions()
            .iter()
            .flat_map(|r| [r.base, r.size])
            .collect();
        w.property_array_u64("reg", &reg)?;
        w.property_u32("#redistributor-regions", 1)?;
        w.property_array_u32("interrupts", &[PPI, MAINTENANCE_PPI, LEVEL_HIGH])?;
        if self.mbi {
            // Message-based SPIs: devices write the INTID to GICD_SETSPI_NSR.
            w.property_null("msi-controller")?;
            w.property_array_u32("mbi-ranges", &[map::MBI_FIRST, map::MBI_COUNT])?;
        }
        w.property_u32("phandle", PHANDLE_GIC)?;
        if self.its {
            let its = w.begin_node_at("its", map::ITS)?;
            w.property_string("compatible", "arm,gic-v3-its")?;
            w.property_null("msi-controller")?;
            w.property_u32("#msi-cells", 1)?;
            w.property_array_u64("reg", &[map::ITS, map::ITS_SIZE])?;
            w.property_u32("phandle", PHANDLE_ITS)?;
            w.end_node(its)?;
        }
        w.end_node(node)?;
        Ok(())
    }
}

/// The frames of the slice's virtual ITS (its node is written by [`GicNode`], as a child of
/// the GIC's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItsNode;

impl DeviceNode for ItsNode {
    fn regions(&self) -> Vec<BusRegion> {
        vec![BusRegion::new(map::ITS, map::ITS_SIZE, "mmio-its")]
    }

    fn write_node(&self, _w: &mut DtbWriter) -> Result<(), GuestDtError> {
        Ok(())
    }
}

/// The slice's PL011 and the fixed clock it names; the slice's console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pl011Node;

impl Pl011Node {
    /// The UART's INTID (SPI [`map::UART_SPI`]).
    pub const INTID: u32 = 32 + map::UART_SPI;
}

impl DeviceNode for Pl011Node {
    fn regions(&self) -> Vec<BusRegion> {
        vec![BusRegion::new(map::UART, PL011_SIZE, "mmio-uart")]
    }

    fn spis(&self) -> Vec<u32> {
        vec![Self::INTID]
    }

    fn console_path(&self) -> Option<String> {
        Some(alloc::format!("/pl011@{:x}", map::UART))
    }

    fn write_node(&self, w: &mut DtbWriter) -> Result<(), GuestDtError> {
        let clock = w.begin_node("apb-pclk")?;
        w.property_string("compatible", "fixed-clock")?;
        w.property_u32("#clock-cells", 0)?;
        w.property_u32("clock-frequency", UART_CLOCK_HZ)?;
        w.property_string("clock-output-names", "clk24mhz")?;
        w.property_u32("phandle", PHANDLE_CLOCK)?;
        w.end_node(clock)?;

        let node = w.begin_node_at("pl011", map::UART)?;
        w.property_strings("compatible", &["arm,pl011", "arm,primecell"])?;
        w.property_array_u64("reg", &[map::UART, PL011_SIZE])?;
        w.property_array_u32("interrupts", &[SPI, map::UART_SPI, LEVEL_HIGH])?;
        w.property_array_u32("clocks", &[PHANDLE_CLOCK, PHANDLE_CLOCK])?;
        w.property_strings("clock-names", &["uartclk", "apb_pclk"])?;
        w.end_node(node)?;
        Ok(())
    }
}

/// The slice's PL061 GPIO controller and the `gpio-keys` node that makes its line
/// [`POWER_KEY_LINE`] the power key (`KEY_POWER`, active high), as QEMU virt describes them.
/// Its `clocks` names the APB clock [`Pl011Node`] writes: every slice has both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pl061Node;

impl Pl061Node {
    /// The controller's INTID (SPI [`map::GPIO_SPI`]).
    pub const INTID: u32 = 32 + map::GPIO_SPI;
}

impl DeviceNode for Pl061Node {
    fn regions(&self) -> Vec<BusRegion> {
        vec![BusRegion::new(map::GPIO, PL061_SIZE, "mmio-gpio")]
    }

    fn spis(&self) -> Vec<u32> {
        vec![Self::INTID]
    }

    fn write_node(&self, w: &mut DtbWriter) -> Result<(), GuestDtError> {
        let node = w.begin_node_at("pl061", map::GPIO)?;
        w.property_strings("compatible", &["arm,pl061", "arm,primecell"])?;
        w.property_array_u64("reg", &[map::GPIO, PL061_SIZE])?;
        w.property_array_u32("interrupts", &[SPI, map::GPIO_SPI, LEVEL_HIGH])?;
        w.property_null("gpio-controller")?;
        w.property_u32("#gpio-cells", 2)?;
        w.property_u32("clocks", PHANDLE_CLOCK)?;
        w.property_string("clock-names", "apb_pclk")?;
        w.property_u32("phandle", PHANDLE_GPIO)?;
        w.end_node(node)?;

        let keys = w.begin_node("gpio-keys")?;
        w.property_string("compatible", "gpio-keys")?;
        let key = w.begin_node("poweroff")?;
        w.property_string("label", "GPIO Key Poweroff")?;
        w.property_u32("linux,code", KEY_POWER)?;
        // Flags 0: GPIO_ACTIVE_HIGH.
        w.property_array_u32("gpios", &[PHANDLE_GPIO, u32::from(POWER_KEY_LINE), 0])?;
        w.end_node(key)?;
        w.end_node(keys)?;
        Ok(())
    }
}

/// The manager's control interface (docs/control.md): its register page, which traps, and
/// its data window, which is memory; a compatible no Linux driver claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlNode;

impl DeviceNode for ControlNode {
    fn regions(&self) -> Vec<BusRegion> {
        use crate::control::{REGISTERS_IPA, REGISTERS_SIZE};
        vec![BusRegion::new(
            REGISTERS_IPA,
            REGISTERS_SIZE,
            "mmio-control",
        )]
    }

    fn write_node(&self, w: &mut DtbWriter) -> Result<(), GuestDtError> {
        use crate::control::{REGISTERS_IPA, REGISTERS_SIZE, WINDOW_IPA, WINDOW_SIZE};
        let node = w.begin_node_at("control", REGISTERS_IPA)?;
        w.property_string("compatible", "microvisor,control-v1")?;
        w.property_array_u64(
            "reg",
            &[REGISTERS_IPA, REGISTERS_SIZE, WINDOW_IPA, WINDOW_SIZE],
        )?;
        w.property_strings("reg-names", &["registers", "window"])?;
        w.end_node(node)?;
        Ok(())
    }
}

/// The slice's PCIe host bridge: ECAM for bus 0 only, one 32-bit memory window (PCI address
/// = CPU address) that its functions' BARs go in, MSIs through the GIC's MBI SPIs or, with
/// `its`, the virtual ITS (DeviceID = requester ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcieHostNode {
    pub its: bool,
}

impl PcieHostNode {
    /// MSIs as GICv3 message-based SPIs.
    pub const MBI: PcieHostNode = PcieHostNode { its: false };
    /// MSIs through the slice's virtual ITS.
    pub const ITS: PcieHostNode = PcieHostNode { its: true };

    /// Index of the ECAM region in [`DeviceNode::regions`].
    pub const ECAM: usize = 0;
    /// Index of the memory window region.
    pub const WINDOW: usize = 1;
}

impl DeviceNode for PcieHostNode {
    fn regions(&self) -> Vec<BusRegion> {
        vec![
            BusRegion::new(map::ECAM, crate::vpci::ECAM_SIZE, "mmio-pci"),
            BusRegion::new(map::PCI_MMIO, map::PCI_MMIO_SIZE, "mmio-bar"),
        ]
    }

    fn spis(&self) -> Vec<u32> {
        if self.its {
            return Vec::new();
        }
        (map::MBI_FIRST..map::MBI_FIRST + map::MBI_COUNT).collect()
    }

    fn write_node(&self, w: &mut DtbWriter) -> Result<(), GuestDtError> {
        let node = w.begin_node_at("pcie", map::PCI_MMIO)?;
        w.property_string("compatible", "pci-host-ecam-generic")?;
        w.property_string("device_type", "pci")?;
        w.property_u32("#address-cells", 3)?;
        w.property_u32("#size-cells", 2)?;
        w.property_array_u64("reg", &[map::ECAM, crate::vpci::ECAM_SIZE])?;
        w.property_array_u32("bus-range", &[0, 0])?;
        let (base, size) = (map::PCI_MMIO, map::PCI_MMIO_SIZE);
        w.property_array_u32(
            "ranges",
            &[
                0x0200_0000,
                (base >> 32) as u32,
                base as u32,
                (base >> 32) as u32,
                base as u32,
                (size >> 32) as u32,
                size as u32,
            ],
        )?;
        if self.its {
            // DeviceID = requester ID for the 256 functions of bus 0.
            w.property_array_u32("msi-map", &[0, PHANDLE_ITS, 0, 0x100])?;
        } else {
            w.property_u32("msi-parent", PHANDLE_GIC)?;
        }
        w.property_null("dma-coherent")?;
        w.property_u32("linux,pci-domain", 0)?;
        w.end_node(node)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::MmioBus;
    use fdt::Fdt;

    fn machine(vcpus: usize) -> GuestMachine<'static> {
        GuestMachine {
            slice_name: "web-0",
            vcpus,
            memory: 256 << 20,
            cmdline: "console=ttyAMA0 quiet",
            initrd: Some((0x4f00_0000, 0x4f80_0000)),
        }
    }

    /// The devices of a slice with `vcpus` vCPUs, with a PCIe host bridge if `pcie`.
    fn devices(vcpus: usize, pcie: bool) -> Vec<Box<dyn DeviceNode>> {
        let mut list: Vec<Box<dyn DeviceNode>> = vec![
            Box::new(GicNode {
                vcpus,
                mbi: pcie,
                its: false,
            }),
            Box::new(Pl011Node),
            Box::new(Pl061Node),
        ];
        if pcie {
            list.push(Box::new(PcieHostNode::MBI));
        }
        list
    }

    fn generate_for(m: &GuestMachine<'_>, pcie: bool) -> Result<Vec<u8>, GuestDtError> {
        let devices = devices(m.vcpus.min(MAX_VCPUS), pcie);
        let nodes: Vec<&dyn DeviceNode> = devices.iter().map(|d| d.as_ref()).collect();
        generate(m, &nodes)
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
        let blob = generate_for(&machine(3), false).unwrap();
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
    fn the_manager_has_its_control_node() {
        let mut list = devices(1, false);
        list.push(Box::new(ControlNode));
        let nodes: Vec<&dyn DeviceNode> = list.iter().map(|d| d.as_ref()).collect();
        let blob = generate(&machine(1), &nodes).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let node = fdt.find_compatible(&["microvisor,control-v1"]).unwrap();
        assert_eq!(node.name, "control@a000000");
        assert_eq!(
            prop_u64s(&fdt, "/control@a000000", "reg"),
            [0x0a00_0000, 0x1000, 0x0a20_0000, 0x20_0000]
        );
        let plain = generate_for(&machine(1), true).unwrap();
        let fdt = Fdt::new(&plain).unwrap();
        assert!(fdt.find_compatible(&["microvisor,control-v1"]).is_none());
    }

    #[test]
    fn firmware_inventory_reader_accepts_it() {
        // The hypervisor's own DT reader sees the slice as a one-node machine of its own.
        let blob = generate_for(&machine(2), false).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(fdt.find_node("/cpus").unwrap().children().count(), 2);
        assert!(
            fdt.find_node("/pcie").is_none(),
            "no hardware the slice does not own"
        );
    }

    /// Every region on the bus is in the tree, at the same address and size, and every device
    /// node with a `reg` is on the bus: the tree and the dispatch come from one description.
    #[test]
    fn bus_and_tree_agree() {
        for pcie in [false, true] {
            let devices = devices(2, pcie);
            let nodes: Vec<&dyn DeviceNode> = devices.iter().map(|d| d.as_ref()).collect();
            let regions: Vec<Vec<BusRegion>> = nodes.iter().map(|d| d.regions()).collect();
            let bus = MmioBus::new(&regions).unwrap();
            let blob = generate(&machine(2), &nodes).unwrap();
            let fdt = Fdt::new(&blob).unwrap();
            let mut in_tree = Vec::new();
            for node in fdt.all_nodes() {
                let Some(reg) = node.property("reg") else {
                    continue;
                };
                if node.name.starts_with("memory") || node.name.starts_with("cpu@") {
                    continue;
                }
                for pair in reg.value.chunks(16) {
                    let base = u64::from_be_bytes(pair[..8].try_into().unwrap());
                    let size = u64::from_be_bytes(pair[8..].try_into().unwrap());
                    in_tree.push((base, size));
                }
            }
            let mut on_bus: Vec<(u64, u64)> = regions
                .iter()
                .flatten()
                .filter(|r| r.base != map::PCI_MMIO) // the window is in `ranges`, not `reg`
                .map(|r| (r.base, r.size))
                .collect();
            in_tree.sort_unstable();
            on_bus.sort_unstable();
            assert_eq!(in_tree, on_bus, "pcie = {pcie}");
            for &(base, size) in &on_bus {
                assert!(bus.route(base).is_some() && bus.route(base + size - 1).is_some());
                assert!(bus.route(base + size).is_none_or(|r| r.offset == 0));
            }
        }
    }

    #[test]
    fn the_slice_bus_by_address() {
        let devices = devices(2, true);
        let regions: Vec<Vec<BusRegion>> = devices.iter().map(|d| d.regions()).collect();
        let bus = MmioBus::new(&regions).unwrap();
        let at = |ipa| {
            bus.route(ipa)
                .map(|r| (bus.counters()[r.counter], r.region, r.offset))
        };
        assert_eq!(at(0x0900_0018), Some(("mmio-uart", 0, 0x18)));
        assert_eq!(at(0x0900_1000), None);
        assert_eq!(at(0x0903_0418), Some(("mmio-gpio", 0, 0x418)));
        assert_eq!(at(0x0903_1000), None);
        assert_eq!(at(0x0800_0004), Some(("mmio-gic", 0, 4)));
        assert_eq!(at(0x0801_0000), None);
        assert_eq!(at(0x080a_0008), Some(("mmio-gic", 1, 8)));
        assert_eq!(at(0x080d_0080), Some(("mmio-gic", 1, 0x3_0080)));
        assert_eq!(
            at(0x080e_0008),
            None,
            "frame of a vCPU the slice does not have"
        );
        assert_eq!(at(0x40_1000_0010), Some(("mmio-pci", 0, 0x10)));
        assert_eq!(at(0x40_1010_0000), None, "bus 1 does not exist");
        assert_eq!(at(0x1000_4000), Some(("mmio-bar", 1, 0x4000)));
        assert_eq!(at(0x1100_0000), None, "past the memory window");
        assert_eq!(at(0), None);
        let plain: Vec<Vec<BusRegion>> = devices.iter().take(3).map(|d| d.regions()).collect();
        let plain = MmioBus::new(&plain).unwrap();
        assert!(
            plain.route(0x40_1000_0010).is_none(),
            "no PCIe without NVMe"
        );
    }

    #[test]
    fn pcie_slices_get_a_host_bridge_and_mbi() {
        let blob = generate_for(&machine(2), true).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let bridge = fdt.find_compatible(&["pci-host-ecam-generic"]).unwrap();
        assert!(bridge.property("msi-parent").is_some());
        let gic = fdt.find_node("/intc@8000000").unwrap();
        assert!(gic.property("msi-controller").is_some());
        let ranges = gic.property("mbi-ranges").unwrap().value;
        assert_eq!(ranges, [0, 0, 0, 64, 0, 0, 0, 32]);
        let plain = generate_for(&machine(2), false).unwrap();
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
    fn gicv4_slices_get_a_virtual_its_instead_of_mbi() {
        let devices: Vec<Box<dyn DeviceNode>> = vec![
            Box::new(GicNode {
                vcpus: 2,
                mbi: false,
                its: true,
            }),
            Box::new(Pl011Node),
            Box::new(PcieHostNode::ITS),
            Box::new(ItsNode),
        ];
        let nodes: Vec<&dyn DeviceNode> = devices.iter().map(|d| d.as_ref()).collect();
        let blob = generate(&machine(2), &nodes).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let its = fdt.find_node("/intc@8000000/its@8080000").unwrap();
        assert_eq!(its.compatible().unwrap().first(), "arm,gic-v3-its");
        assert!(its.property("msi-controller").is_some());
        assert_eq!(prop_u32s(&its, "#msi-cells"), [1]);
        assert_eq!(prop_u32s(&its, "reg"), [0, 0x808_0000, 0, 0x2_0000]);
        let bridge = fdt.find_compatible(&["pci-host-ecam-generic"]).unwrap();
        let phandle = prop_u32s(&its, "phandle")[0];
        assert_eq!(prop_u32s(&bridge, "msi-map"), [0, phandle, 0, 0x100]);
        assert!(bridge.property("msi-parent").is_none());
        let gic = fdt.find_node("/intc@8000000").unwrap();
        assert!(gic.property("mbi-ranges").is_none());
        assert!(gic.property("msi-controller").is_none());
        // The ITS frames sit between the distributor and the redistributors.
        const {
            assert!(map::GICD + map::GICD_SIZE <= map::ITS && map::ITS + map::ITS_SIZE <= map::GICR)
        };
    }

    #[test]
    fn devices_name_their_interrupts() {
        assert_eq!(Pl011Node.spis(), [33]);
        assert_eq!(Pl061Node.spis(), [39]);
        let mbi = PcieHostNode::MBI.spis();
        assert!(PcieHostNode::ITS.spis().is_empty());
        assert_eq!((mbi[0], mbi.len()), (64, 32));
        assert!(
            GicNode {
                vcpus: 1,
                mbi: true,
                its: false,
            }
            .spis()
            .is_empty()
        );
    }

    fn prop_u32s(node: &fdt::node::FdtNode<'_, '_>, name: &str) -> Vec<u32> {
        node.property(name)
            .unwrap()
            .value
            .chunks(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// The GPIO controller and its power key as QEMU virt describes them (hw/arm/virt.c,
    /// create_gpio_devices and create_gpio_keys), and every phandle they name resolves to the
    /// node it should.
    #[test]
    fn power_key_is_a_pl061_line_like_qemu_virt() {
        let blob = generate_for(&machine(1), false).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let gpio = fdt.find_node("/pl061@9030000").unwrap();
        let compatible: Vec<&str> = gpio.compatible().unwrap().all().collect();
        assert_eq!(compatible, ["arm,pl061", "arm,primecell"]);
        assert_eq!(
            prop_u64s(&fdt, "/pl061@9030000", "reg"),
            [0x0903_0000, 0x1000]
        );
        assert_eq!(prop_u32s(&gpio, "interrupts"), [0, 7, 4]);
        assert!(gpio.property("gpio-controller").is_some());
        assert_eq!(prop_u32s(&gpio, "#gpio-cells"), [2]);
        assert_eq!(
            gpio.property("clock-names").unwrap().as_str(),
            Some("apb_pclk")
        );
        let clock = fdt
            .find_phandle(prop_u32s(&gpio, "clocks")[0])
            .expect("the clock resolves");
        assert_eq!(
            clock.compatible().unwrap().first(),
            "fixed-clock",
            "the UART's APB clock"
        );

        let keys = fdt.find_node("/gpio-keys").unwrap();
        assert_eq!(keys.compatible().unwrap().first(), "gpio-keys");
        let key = fdt.find_node("/gpio-keys/poweroff").unwrap();
        assert_eq!(
            key.property("label").unwrap().as_str(),
            Some("GPIO Key Poweroff")
        );
        assert_eq!(prop_u32s(&key, "linux,code"), [116]);
        let gpios = prop_u32s(&key, "gpios");
        assert_eq!(gpios[1..], [3, 0], "line 3, active high");
        let controller = fdt.find_phandle(gpios[0]).expect("the controller resolves");
        assert_eq!(controller.name, "pl061@9030000");
    }

    /// No two nodes share a phandle.
    #[test]
    fn phandles_are_unique() {
        let blob = generate_for(&machine(2), true).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let mut phandles: Vec<u32> = fdt
            .all_nodes()
            .filter(|n| n.property("phandle").is_some())
            .map(|n| prop_u32s(&n, "phandle")[0])
            .collect();
        let count = phandles.len();
        phandles.sort_unstable();
        phandles.dedup();
        assert_eq!(phandles.len(), count);
        assert_eq!(count, 3, "GIC, clock, GPIO");
    }

    #[test]
    fn refuses_zero_and_too_many_vcpus() {
        assert_eq!(
            generate_for(&machine(0), false),
            Err(GuestDtError::TooManyVcpus)
        );
        assert_eq!(
            generate_for(&machine(MAX_VCPUS + 1), false),
            Err(GuestDtError::TooManyVcpus)
        );
        assert!(generate_for(&machine(MAX_VCPUS), false).is_ok());
    }

    #[test]
    fn refuses_a_tree_larger_than_its_window() {
        let huge = "x".repeat(DTB_MAX as usize);
        let m = GuestMachine {
            cmdline: &huge,
            ..machine(1)
        };
        assert_eq!(generate_for(&m, false), Err(GuestDtError::TooLarge));
    }

    #[test]
    fn refuses_nul_in_command_line() {
        let m = GuestMachine {
            cmdline: "a\0b",
            ..machine(1)
        };
        assert_eq!(generate_for(&m, false), Err(GuestDtError::Writer));
    }
}

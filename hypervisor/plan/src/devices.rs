//! Whole PCI functions given to slices (`[[slice.device]]`, docs/plan.md): PCI addresses, the
//! node's functions as the hypervisor finds them at boot (or as xtask knows them for a QEMU
//! node profile), and the placement of every request onto them.
//!
//! The rules are deterministic, so which function a slice gets follows from the plan and the
//! node alone:
//!
//! 1. The plan is validated first ([`PlanOf::validate`]): no address is asked for twice.
//! 2. A node without an SMMUv3 cannot confine a function's DMA: the first request in plan order
//!    is refused (`NoSmmu`), whatever it is.
//! 3. **Explicit requests** (`pci = "00:03.0"`) are served first, in plan order. The function
//!    must exist on the node, must not be a bridge (class 06), and must not be the NVMe
//!    controller the hypervisor divides into `[slice.nvme]` shares while some slice has one.
//! 4. **Class requests** (`class = "net"`) are then served in plan order, each taking the
//!    lowest-addressed function of its class that is still free (never the hypervisor's NVMe
//!    controller while some slice has `[slice.nvme]`) and whose isolation group holds no
//!    function of anyone else (the lowest free one when there is none such, refused then).
//! 5. **Isolation groups** ([`NodePci::isolation_groups`]: functions that may reach each other
//!    peer to peer without passing the SMMU) have one owner. Once every request is placed
//!    (so after any refusal of steps 3 and 4), the first request in plan order whose
//!    function's group already has a function of an earlier slice, or the hypervisor's kept
//!    NVMe controller, is refused.
//!
//! The result lists, per slice in plan order, the function given for each of its
//! `[[slice.device]]` tables, in the slice's order.

use crate::sorted_map::SortedMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Field, PlanError, Problem};
use crate::model::PlanOf;

/// A PCI function's address on the node's (only) PCI segment: bus, device (0-31) and function
/// (0-7). Written `BB:DD.F` in hex (`00:03.0`). In the bundle it is its 16-bit routing ID, so
/// every encoded value is a valid address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
pub struct PciAddress {
    bus: u8,
    device: u8,
    function: u8,
}

impl PciAddress {
    /// Largest device number on a bus.
    pub const MAX_DEVICE: u8 = 31;
    /// Largest function number of a device.
    pub const MAX_FUNCTION: u8 = 7;

    /// The address `bus:device.function`, or `None` if `device > 31` or `function > 7`.
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<PciAddress> {
        if device > Self::MAX_DEVICE || function > Self::MAX_FUNCTION {
            return None;
        }
        Some(PciAddress {
            bus,
            device,
            function,
        })
    }

    /// The address with routing (requester) ID `id`: bus in bits 15:8, device in 7:3,
    /// function in 2:0 (PCIe Base 4.0 §2.2.6.2). On QEMU virt this is also the SMMU StreamID
    /// and the ITS DeviceID.
    pub const fn from_routing_id(id: u16) -> PciAddress {
        PciAddress {
            bus: (id >> 8) as u8,
            device: ((id >> 3) & 0x1f) as u8,
            function: (id & 0x7) as u8,
        }
    }

    /// The routing (requester) ID: `bus << 8 | device << 3 | function`.
    pub const fn routing_id(self) -> u16 {
        (self.bus as u16) << 8 | (self.device as u16) << 3 | self.function as u16
    }

    /// Bus number.
    pub const fn bus(self) -> u8 {
        self.bus
    }

    /// Device number (0-31).
    pub const fn device(self) -> u8 {
        self.device
    }

    /// Function number (0-7).
    pub const fn function(self) -> u8 {
        self.function
    }

    /// Parses `BB:DD.F` (two hex digits of bus, two of device, one digit of function), as
    /// `lspci` prints it; a leading `0000:` segment, as Linux and the hypervisor's log print
    /// it, is accepted too.
    pub fn parse(text: &str) -> Result<PciAddress, PciAddressError> {
        let rest = match text.split_once(':') {
            Some((segment, rest)) if rest.contains(':') => {
                if !is_hex(segment, 4) {
                    return Err(PciAddressError::NotBusDeviceFunction);
                }
                if segment != "0000" {
                    return Err(PciAddressError::NotSegmentZero);
                }
                rest
            }
            _ => text,
        };
        let (bus, rest) = rest
            .split_once(':')
            .ok_or(PciAddressError::NotBusDeviceFunction)?;
        let (device, function) = rest
            .split_once('.')
            .ok_or(PciAddressError::NotBusDeviceFunction)?;
        if !is_hex(bus, 2) || !is_hex(device, 2) || !is_hex(function, 1) {
            return Err(PciAddressError::NotBusDeviceFunction);
        }
        let hex = |digits: &str| u8::from_str_radix(digits, 16);
        let (Ok(bus), Ok(device), Ok(function)) = (hex(bus), hex(device), hex(function)) else {
            return Err(PciAddressError::NotBusDeviceFunction);
        };
        if device > Self::MAX_DEVICE {
            return Err(PciAddressError::DeviceTooLarge(device));
        }
        if function > Self::MAX_FUNCTION {
            return Err(PciAddressError::FunctionTooLarge(function));
        }
        Ok(PciAddress {
            bus,
            device,
            function,
        })
    }
}

/// Whether `text` is exactly `len` ASCII hex digits.
fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl From<u16> for PciAddress {
    fn from(id: u16) -> PciAddress {
        PciAddress::from_routing_id(id)
    }
}

impl From<PciAddress> for u16 {
    fn from(address: PciAddress) -> u16 {
        address.routing_id()
    }
}

impl core::str::FromStr for PciAddress {
    type Err = PciAddressError;

    fn from_str(text: &str) -> Result<PciAddress, PciAddressError> {
        PciAddress::parse(text)
    }
}

impl fmt::Display for PciAddress {
    /// `BB:DD.F`, e.g. `00:03.0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Why a `pci = "..."` value is not a PCI address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciAddressError {
    /// Not of the form `BB:DD.F` (or `0000:BB:DD.F`).
    NotBusDeviceFunction,
    /// A device number above 1f.
    DeviceTooLarge(u8),
    /// A function number above 7.
    FunctionTooLarge(u8),
    /// A PCI segment other than 0000 (nodes have one).
    NotSegmentZero,
}

impl fmt::Display for PciAddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciAddressError::NotBusDeviceFunction => f.write_str(
                "expected bus:device.function in hex, two digits each for bus and device, \
                 like \"00:03.0\"",
            ),
            PciAddressError::DeviceTooLarge(device) => {
                write!(f, "device {device:02x} is above 1f")
            }
            PciAddressError::FunctionTooLarge(function) => {
                write!(f, "function {function:x} is above 7")
            }
            PciAddressError::NotSegmentZero => {
                f.write_str("the node has one PCI segment, 0000 (write \"BB:DD.F\")")
            }
        }
    }
}

/// The kinds of function a slice can ask for by class (`class = "..."`). The list is kept
/// small on purpose: each entry is a kind the microvisor has been tested with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DeviceClass {
    /// `"net"`: a network controller, class code 02 xx xx (Ethernet 02 00 00 and the others).
    Net,
    /// `"nvme"`: an NVM Express controller, class code 01 08 02.
    Nvme,
}

impl DeviceClass {
    /// Every class, in documentation order.
    pub const ALL: [DeviceClass; 2] = [DeviceClass::Net, DeviceClass::Nvme];

    /// The name a plan uses (`"net"`, `"nvme"`).
    pub const fn name(self) -> &'static str {
        match self {
            DeviceClass::Net => "net",
            DeviceClass::Nvme => "nvme",
        }
    }

    /// The class named `name` in a plan.
    pub fn from_name(name: &str) -> Option<DeviceClass> {
        DeviceClass::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether a function with 24-bit class code `class` (base class, subclass, programming
    /// interface) is of this kind.
    pub const fn matches(self, class: u32) -> bool {
        match self {
            DeviceClass::Net => (class >> 16) & 0xff == 0x02,
            DeviceClass::Nvme => class & 0xff_ffff == 0x01_08_02,
        }
    }

    /// The class codes it stands for, for messages (`02 xx xx`, `01 08 02`).
    pub const fn codes(self) -> &'static str {
        match self {
            DeviceClass::Net => "02 xx xx",
            DeviceClass::Nvme => "01 08 02",
        }
    }
}

/// One `[[slice.device]]`: a function by address or the next free one of a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DeviceRequest {
    /// `pci = "BB:DD.F"`: exactly this function of the node.
    Pci(PciAddress),
    /// `class = "net" | "nvme"`: the lowest-addressed free function of this class.
    Class(DeviceClass),
}

impl fmt::Display for DeviceRequest {
    /// `00:03.0` or `class net`: how messages name the request (`device 00:03.0: ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Pci(address) => write!(f, "{address}"),
            DeviceRequest::Class(class) => write!(f, "class {}", class.name()),
        }
    }
}

/// One PCI function found on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciFunction {
    /// Where it is.
    pub address: PciAddress,
    /// The 24-bit class code: base class (bits 23:16), subclass (15:8), programming
    /// interface (7:0); configuration space offset 0x09 (PCI Local Bus 3.0 §6.2.1).
    pub class: u32,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
}

impl PciFunction {
    /// The bridge this function is (`a host bridge`, `a PCI-to-PCI bridge`, `a bridge`), if
    /// its base class is 06.
    pub const fn bridge(&self) -> Option<&'static str> {
        bridge_kind(self.class)
    }

    /// What the function is, in a word or two: its class name when it has one (`net`), else
    /// `host bridge`, `PCI-to-PCI bridge`, `bridge` or `class 0c 03 30`.
    fn kind(&self) -> FunctionKind {
        FunctionKind(*self)
    }
}

impl fmt::Display for PciFunction {
    /// `00:03.0 net 1af4:1041`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {:04x}:{:04x}",
            self.address,
            self.kind(),
            self.vendor,
            self.device
        )
    }
}

/// The bridge a function of class code `class` is, if its base class is 06 (PCI Code and ID
/// Assignment 1.11 §1.7).
pub(crate) const fn bridge_kind(class: u32) -> Option<&'static str> {
    if (class >> 16) & 0xff != 0x06 {
        return None;
    }
    Some(match (class >> 8) & 0xff {
        0x00 => "a host bridge",
        0x04 | 0x09 => "a PCI-to-PCI bridge",
        _ => "a bridge",
    })
}

/// Prints what a function is (see [`PciFunction::kind`]).
struct FunctionKind(PciFunction);

impl fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(class) = DeviceClass::ALL
            .into_iter()
            .find(|c| c.matches(self.0.class))
        {
            return f.write_str(class.name());
        }
        match self.0.bridge() {
            Some(bridge) => f.write_str(bridge.trim_start_matches("a ")),
            None => write!(f, "class {}", ClassCode(self.0.class)),
        }
    }
}

/// Prints a 24-bit class code as three hex bytes, `06 04 00`.
pub(crate) struct ClassCode(pub(crate) u32);

impl fmt::Display for ClassCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [_, base, sub, interface] = self.0.to_be_bytes();
        write!(f, "{base:02x} {sub:02x} {interface:02x}")
    }
}

/// The node's PCI functions, as far as giving them to slices is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodePci {
    /// Every function found (bridges included), in any order.
    pub functions: Vec<PciFunction>,
    /// Whether an SMMUv3 stands between the functions and memory (without one no function
    /// is given to a slice).
    pub smmu: bool,
    /// The NVMe controller the hypervisor drives and divides into `[slice.nvme]` shares, if
    /// it has one. It is kept from slices only while some slice has a `[slice.nvme]`.
    pub hypervisor_nvme: Option<PciAddress>,
    /// The isolation groups of more than one function (functions that may reach each other
    /// peer to peer without their requests passing the SMMU: `logic::pci::isolation`); every
    /// other function is alone. The functions of a group go to one owner.
    pub isolation_groups: Vec<Vec<PciAddress>>,
}

/// Who has a function of a class that is not free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FunctionUse {
    /// Given to this slice (its name).
    Slice(String),
    /// The hypervisor's own NVMe controller, kept for `[slice.nvme]` shares.
    Hypervisor,
}

/// Places every `[[slice.device]]` of `plan` on `node` following the rules in the module
/// documentation. Returns, per slice in plan order, the function given for each of its
/// requests, in the slice's order.
pub fn place_devices<I>(
    plan: &PlanOf<I>,
    node: &NodePci,
) -> Result<Vec<Vec<PciAddress>>, PlanError> {
    plan.validate()?;
    if !node.smmu {
        let first = plan
            .slices
            .iter()
            .find_map(|slice| Some((slice.name.as_str(), *slice.devices.first()?)));
        if let Some((slice, request)) = first {
            return Err(PlanError::slice(
                slice,
                Field::Device(request),
                Problem::NoSmmu,
            ));
        }
    }
    let functions = by_address(&node.functions);
    // The hypervisor's NVMe controller and the first slice with a share of it, if any.
    let nvme_sharer = plan
        .slices
        .iter()
        .find(|slice| slice.nvme.is_some())
        .map(|slice| slice.name.as_str());
    let shared_nvme = node.hypervisor_nvme.zip(nvme_sharer);
    let reserved = shared_nvme.map(|(address, _)| address);
    let mut owner: SortedMap<PciAddress, &str> = SortedMap::new();

    for slice in &plan.slices {
        let name = slice.name.as_str();
        for request in &slice.devices {
            let DeviceRequest::Pci(address) = *request else {
                continue;
            };
            let refuse = |problem| PlanError::slice(name, Field::Device(*request), problem);
            let Some(function) = functions.get(&address) else {
                let free = functions
                    .values()
                    .filter(|f| is_free(f, &owner, reserved))
                    .copied()
                    .collect();
                return Err(refuse(Problem::NoSuchFunction { free }));
            };
            if function.bridge().is_some() {
                return Err(refuse(Problem::Bridge {
                    class: function.class,
                }));
            }
            if let Some((_, sharer)) = shared_nvme.filter(|(nvme, _)| *nvme == address) {
                return Err(refuse(Problem::HypervisorNvme {
                    sharer: sharer.into(),
                }));
            }
            // `validate` already rules this out; checked again so that a function is never
            // given twice.
            if let Some(first) = owner.insert(address, name) {
                return Err(refuse(Problem::DeviceListedTwice {
                    first_slice: first.into(),
                }));
            }
        }
    }

    let mut placed = Vec::with_capacity(plan.slices.len());
    for slice in &plan.slices {
        let name = slice.name.as_str();
        let mut given = Vec::with_capacity(slice.devices.len());
        for request in &slice.devices {
            let address = match *request {
                DeviceRequest::Pci(address) => address,
                DeviceRequest::Class(class) => {
                    // The lowest free function of the class whose group holds nobody else's;
                    // the lowest free one otherwise (then refused below, naming its group).
                    let candidates = || {
                        functions
                            .values()
                            .filter(|f| class.matches(f.class) && is_free(f, &owner, reserved))
                    };
                    let free = candidates()
                        .find(|f| group_conflict(node, f.address, name, &owner, reserved).is_none())
                        .or_else(|| candidates().next());
                    let Some(function) = free else {
                        let problem = Problem::NoFreeFunction {
                            class,
                            uses: uses_of(class, &functions, &owner, reserved),
                        };
                        return Err(PlanError::slice(name, Field::Device(*request), problem));
                    };
                    owner.insert(function.address, name);
                    function.address
                }
            };
            given.push(address);
        }
        placed.push(given);
    }
    // No isolation group may have two owners (the hypervisor's NVMe controller counts as one
    // while it is kept): the first request in plan order whose function's group already has
    // another owner is refused.
    let mut earlier: SortedMap<PciAddress, &str> = SortedMap::new();
    for (slice, given) in plan.slices.iter().zip(&placed) {
        for (request, address) in slice.devices.iter().zip(given) {
            if let Some((other, used)) =
                group_conflict(node, *address, &slice.name, &earlier, reserved)
            {
                return Err(PlanError::slice(
                    &slice.name,
                    Field::Device(*request),
                    Problem::SharedIsolationGroup { other, used },
                ));
            }
            earlier.insert(*address, slice.name.as_str());
        }
    }
    Ok(placed)
}

/// Another function of `address`'s isolation group that someone other than slice `name` has,
/// and who.
fn group_conflict(
    node: &NodePci,
    address: PciAddress,
    name: &str,
    owner: &SortedMap<PciAddress, &str>,
    reserved: Option<PciAddress>,
) -> Option<(PciAddress, FunctionUse)> {
    let group = node
        .isolation_groups
        .iter()
        .find(|group| group.contains(&address))?;
    group
        .iter()
        .filter(|&&other| other != address)
        .find_map(|&other| match owner.get(&other) {
            Some(slice) if *slice != name => Some((other, FunctionUse::Slice((*slice).into()))),
            Some(_) => None,
            None => (reserved == Some(other)).then_some((other, FunctionUse::Hypervisor)),
        })
}

/// The functions by address (a function listed twice counts once: its first entry).
fn by_address(functions: &[PciFunction]) -> SortedMap<PciAddress, PciFunction> {
    let mut map = SortedMap::new();
    for function in functions {
        map.insert_if_absent(function.address, *function);
    }
    map
}

/// Whether `function` could still be given to a slice.
fn is_free(
    function: &PciFunction,
    owner: &SortedMap<PciAddress, &str>,
    reserved: Option<PciAddress>,
) -> bool {
    function.bridge().is_none()
        && reserved != Some(function.address)
        && !owner.contains_key(&function.address)
}

/// Who has each function of `class` (all of them are taken when this is asked).
fn uses_of(
    class: DeviceClass,
    functions: &SortedMap<PciAddress, PciFunction>,
    owner: &SortedMap<PciAddress, &str>,
    reserved: Option<PciAddress>,
) -> Vec<(PciAddress, FunctionUse)> {
    functions
        .values()
        .filter(|f| class.matches(f.class))
        .filter_map(|f| {
            let used = match owner.get(&f.address) {
                Some(slice) => FunctionUse::Slice((*slice).into()),
                None if reserved == Some(f.address) => FunctionUse::Hypervisor,
                None => return None,
            };
            Some((f.address, used))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn address(text: &str) -> PciAddress {
        PciAddress::parse(text).unwrap()
    }

    #[test]
    fn parses_and_prints_bus_device_function() {
        let a = address("00:03.0");
        assert_eq!((a.bus(), a.device(), a.function()), (0, 3, 0));
        assert_eq!(a.to_string(), "00:03.0");
        let b = address("1F:1f.7");
        assert_eq!((b.bus(), b.device(), b.function()), (0x1f, 0x1f, 7));
        assert_eq!(b.to_string(), "1f:1f.7");
        assert_eq!(address("ff:00.1").to_string(), "ff:00.1");
        assert_eq!("00:10.0".parse::<PciAddress>().unwrap().device(), 16);
    }

    #[test]
    fn accepts_segment_zero_only() {
        assert_eq!(address("0000:00:02.0"), address("00:02.0"));
        assert_eq!(
            PciAddress::parse("0001:00:02.0"),
            Err(PciAddressError::NotSegmentZero)
        );
        assert_eq!(
            PciAddress::parse("00:00:02.0"),
            Err(PciAddressError::NotBusDeviceFunction)
        );
    }

    #[test]
    fn refuses_what_is_not_bus_device_function() {
        for bad in [
            "", "0:3.0", "00:3.0", "000:03.0", "00:03", "00.03.0", "00:03.00", "00:03.", "0x:03.0",
            "+0:03.0", "00:+3.0", "00:03.+", "00:03.0 ", " 00:03.0", "00-03.0", "00:03:0",
            "äb:03.0",
        ] {
            assert_eq!(
                PciAddress::parse(bad),
                Err(PciAddressError::NotBusDeviceFunction),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_devices_and_functions_out_of_range() {
        assert_eq!(
            PciAddress::parse("00:20.0"),
            Err(PciAddressError::DeviceTooLarge(0x20))
        );
        assert_eq!(
            PciAddress::parse("00:03.8"),
            Err(PciAddressError::FunctionTooLarge(8))
        );
        assert_eq!(
            PciAddress::parse("00:03.f"),
            Err(PciAddressError::FunctionTooLarge(15))
        );
        assert_eq!(PciAddress::new(0, 32, 0), None);
        assert_eq!(PciAddress::new(0, 31, 8), None);
        assert_eq!(PciAddress::new(1, 31, 7), Some(address("01:1f.7")));
    }

    #[test]
    fn address_errors_read_well() {
        assert_eq!(
            PciAddressError::DeviceTooLarge(0x20).to_string(),
            "device 20 is above 1f"
        );
        assert_eq!(
            PciAddressError::FunctionTooLarge(9).to_string(),
            "function 9 is above 7"
        );
        assert!(
            PciAddressError::NotBusDeviceFunction
                .to_string()
                .contains("like \"00:03.0\"")
        );
        assert!(
            PciAddressError::NotSegmentZero
                .to_string()
                .starts_with("the node has one PCI segment, 0000")
        );
    }

    #[test]
    fn routing_ids_are_the_requester_ids() {
        // platform-facts: 00:01.0 -> 0x8, 01:00.0 -> 0x100.
        assert_eq!(address("00:01.0").routing_id(), 0x8);
        assert_eq!(address("01:00.0").routing_id(), 0x100);
        assert_eq!(address("ab:1d.5").routing_id(), 0xabed);
        for id in [0u16, 1, 0x8, 0xff, 0x100, 0xabed, u16::MAX] {
            assert_eq!(PciAddress::from_routing_id(id).routing_id(), id);
        }
    }

    #[test]
    fn every_encoded_address_decodes_to_a_valid_one() {
        let a = address("02:1f.6");
        let bytes = postcard::to_allocvec(&a).unwrap();
        assert_eq!(postcard::from_bytes::<PciAddress>(&bytes).unwrap(), a);
        for id in [0u16, 0x7, 0xf8, 0xffff] {
            let bytes = postcard::to_allocvec(&id).unwrap();
            let decoded = postcard::from_bytes::<PciAddress>(&bytes).unwrap();
            assert!(decoded.device() <= 31 && decoded.function() <= 7);
            assert_eq!(decoded.routing_id(), id);
        }
    }

    #[test]
    fn classes_by_name_and_code() {
        assert_eq!(DeviceClass::from_name("net"), Some(DeviceClass::Net));
        assert_eq!(DeviceClass::from_name("nvme"), Some(DeviceClass::Nvme));
        assert_eq!(DeviceClass::from_name("NET"), None);
        assert_eq!(DeviceClass::from_name("gpu"), None);
        assert!(DeviceClass::Net.matches(0x02_00_00));
        assert!(DeviceClass::Net.matches(0x02_80_00));
        assert!(!DeviceClass::Net.matches(0x01_08_02));
        assert!(DeviceClass::Nvme.matches(0x01_08_02));
        assert!(!DeviceClass::Nvme.matches(0x01_08_01), "NVMHCI, not NVMe");
        assert!(!DeviceClass::Nvme.matches(0x01_06_01), "AHCI");
        assert!(
            DeviceClass::Nvme.matches(0xff_01_08_02) && DeviceClass::Net.matches(0x7f_02_00_00),
            "bits above the 24-bit class code are not looked at"
        );
    }

    #[test]
    fn functions_describe_themselves() {
        let function = |class, vendor, device| PciFunction {
            address: address("00:03.0"),
            class,
            vendor,
            device,
        };
        assert_eq!(
            function(0x02_00_00, 0x1af4, 0x1041).to_string(),
            "00:03.0 net 1af4:1041"
        );
        assert_eq!(
            function(0x06_00_00, 0x1b36, 0x0008).to_string(),
            "00:03.0 host bridge 1b36:0008"
        );
        assert_eq!(
            function(0x06_04_00, 0x1b36, 0x000c).to_string(),
            "00:03.0 PCI-to-PCI bridge 1b36:000c"
        );
        assert_eq!(
            function(0x06_80_00, 1, 2).to_string(),
            "00:03.0 bridge 0001:0002"
        );
        assert_eq!(
            function(0x0c_03_30, 0x1b36, 0x000d).to_string(),
            "00:03.0 class 0c 03 30 1b36:000d"
        );
        assert_eq!(
            DeviceRequest::Class(DeviceClass::Net).to_string(),
            "class net"
        );
        assert_eq!(
            DeviceRequest::Pci(address("00:03.0")).to_string(),
            "00:03.0"
        );
    }

    #[test]
    fn a_function_listed_twice_by_the_node_counts_once() {
        let net = PciFunction {
            address: address("00:03.0"),
            class: 0x02_00_00,
            vendor: 0x1af4,
            device: 0x1041,
        };
        let mut other = net;
        other.class = 0x06_04_00;
        let map = by_address(&[net, other, net]);
        assert_eq!(map.len(), 1);
        assert_eq!(*map.get(&net.address).unwrap(), net);
    }
}

//! A slice's MMIO bus: which emulated device answers each guest-physical address range, and
//! which exit counter an access there counts under. Built once per slice from its devices'
//! descriptions ([`crate::guest_dt::DeviceNode`]), the same descriptions that write the
//! slice's device tree, so the tree and the dispatch can never disagree about an address.

use alloc::vec::Vec;

/// Most regions (and so exit counters) one slice's bus holds.
pub const MAX_REGIONS: usize = 8;

/// One guest-physical range a device decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusRegion {
    pub base: u64,
    pub size: u64,
    /// Name of the exit counter accesses here count under (`mmio-uart`); regions with the
    /// same name share one counter.
    pub counter: &'static str,
}

impl BusRegion {
    pub const fn new(base: u64, size: u64, counter: &'static str) -> Self {
        Self {
            base,
            size,
            counter,
        }
    }
}

/// Where an access lands: which device, which of its regions, the offset inside that region,
/// and the exit counter slot to bump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub device: usize,
    pub region: usize,
    pub offset: u64,
    pub counter: usize,
}

/// Why a bus could not be built from a set of devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError {
    /// A region is empty or wraps around the address space.
    BadRegion { counter: &'static str, base: u64 },
    /// Two regions overlap (the counter names of both).
    Overlap {
        first: &'static str,
        second: &'static str,
    },
    /// More than [`MAX_REGIONS`] regions.
    TooMany,
}

impl core::fmt::Display for BusError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadRegion { counter, base } => {
                write!(f, "device {counter}: empty or wrapping region at {base:#x}")
            }
            Self::Overlap { first, second } => {
                write!(f, "devices {first} and {second} overlap")
            }
            Self::TooMany => write!(f, "more than {MAX_REGIONS} device regions"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    base: u64,
    size: u64,
    device: usize,
    region: usize,
    counter: usize,
}

/// The address map of one slice's emulated devices.
#[derive(Clone, Debug)]
pub struct MmioBus {
    /// Sorted by base, never overlapping.
    entries: Vec<Entry>,
    /// Counter names by slot.
    counters: Vec<&'static str>,
}

impl MmioBus {
    /// The bus of devices `devices`, each given by its regions (device `i` is `devices[i]`).
    pub fn new(devices: &[Vec<BusRegion>]) -> Result<Self, BusError> {
        let mut entries = Vec::new();
        let mut counters: Vec<&'static str> = Vec::new();
        let mut names = Vec::new();
        for (device, regions) in devices.iter().enumerate() {
            for (region, r) in regions.iter().enumerate() {
                let end = r.base.checked_add(r.size).filter(|_| r.size > 0).ok_or(
                    BusError::BadRegion {
                        counter: r.counter,
                        base: r.base,
                    },
                )?;
                let counter = match counters.iter().position(|&c| c == r.counter) {
                    Some(slot) => slot,
                    None => {
                        counters.push(r.counter);
                        counters.len() - 1
                    }
                };
                entries.push(Entry {
                    base: r.base,
                    size: end - r.base,
                    device,
                    region,
                    counter,
                });
                names.push(r.counter);
            }
        }
        if entries.len() > MAX_REGIONS {
            return Err(BusError::TooMany);
        }
        microvisor_plan::sort::sort_by_key(&mut entries, |e| e.base);
        for pair in entries.windows(2) {
            if pair[1].base < pair[0].base + pair[0].size {
                return Err(BusError::Overlap {
                    first: counters[pair[0].counter],
                    second: counters[pair[1].counter],
                });
            }
        }
        Ok(Self { entries, counters })
    }

    /// The device that decodes `ipa`, if any.
    pub fn route(&self, ipa: u64) -> Option<Route> {
        // At most MAX_REGIONS entries: a straight scan beats a binary search here.
        let entry = self
            .entries
            .iter()
            .find(|e| ipa.wrapping_sub(e.base) < e.size)?;
        Some(Route {
            device: entry.device,
            region: entry.region,
            offset: ipa - entry.base,
            counter: entry.counter,
        })
    }

    /// Exit counter names, by slot.
    pub fn counters(&self) -> &[&'static str] {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn bus() -> MmioBus {
        MmioBus::new(&[
            vec![BusRegion::new(0x0900_0000, 0x1000, "mmio-uart")],
            vec![
                BusRegion::new(0x0800_0000, 0x1_0000, "mmio-gic"),
                BusRegion::new(0x080a_0000, 0x4_0000, "mmio-gic"),
            ],
        ])
        .unwrap()
    }

    #[test]
    fn routes_by_address_and_edges() {
        let bus = bus();
        let at = |ipa| {
            bus.route(ipa)
                .map(|r| (r.device, r.region, r.offset, r.counter))
        };
        assert_eq!(at(0x0900_0000), Some((0, 0, 0, 0)));
        assert_eq!(at(0x0900_0fff), Some((0, 0, 0xfff, 0)));
        assert_eq!(at(0x0900_1000), None, "one past the UART");
        assert_eq!(at(0x0800_0004), Some((1, 0, 4, 1)));
        assert_eq!(at(0x080d_ffff), Some((1, 1, 0x3_ffff, 1)));
        assert_eq!(at(0x080e_0000), None, "past the last redistributor");
        assert_eq!(
            at(0x0801_0000),
            None,
            "between distributor and redistributors"
        );
        assert_eq!(at(0), None);
        assert_eq!(at(u64::MAX), None);
    }

    #[test]
    fn regions_with_one_name_share_a_counter() {
        assert_eq!(bus().counters(), ["mmio-uart", "mmio-gic"]);
    }

    #[test]
    fn refuses_overlap() {
        let err = MmioBus::new(&[
            vec![BusRegion::new(0x1000, 0x2000, "a")],
            vec![BusRegion::new(0x2fff, 0x10, "b")],
        ])
        .unwrap_err();
        assert_eq!(
            err,
            BusError::Overlap {
                first: "a",
                second: "b"
            }
        );
    }

    #[test]
    fn refuses_empty_and_wrapping_regions() {
        assert_eq!(
            MmioBus::new(&[vec![BusRegion::new(0x1000, 0, "a")]]).unwrap_err(),
            BusError::BadRegion {
                counter: "a",
                base: 0x1000
            }
        );
        assert_eq!(
            MmioBus::new(&[vec![BusRegion::new(u64::MAX, 2, "b")]]).unwrap_err(),
            BusError::BadRegion {
                counter: "b",
                base: u64::MAX
            }
        );
    }

    #[test]
    fn refuses_too_many_regions() {
        let many: Vec<BusRegion> = (0..=MAX_REGIONS as u64)
            .map(|i| BusRegion::new(i * 0x1000, 0x1000, "x"))
            .collect();
        assert_eq!(MmioBus::new(&[many]).unwrap_err(), BusError::TooMany);
    }

    #[test]
    fn adjacent_regions_do_not_overlap() {
        let bus = MmioBus::new(&[
            vec![BusRegion::new(0x1000, 0x1000, "a")],
            vec![BusRegion::new(0x2000, 0x1000, "b")],
        ])
        .unwrap();
        assert_eq!(bus.route(0x1fff).unwrap().device, 0);
        assert_eq!(bus.route(0x2000).unwrap().device, 1);
    }
}

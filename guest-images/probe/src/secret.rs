//! The tenant hand-over check (`secret=plant|check`, issue 11 "Tenant hand-over"): a
//! recognisable pattern planted over the slice's RAM and NVMe namespace by one tenant, and a
//! detector the next tenant runs over the same RAM and namespace.
//!
//! **Pattern.** Every 8-byte word holds [`TAG`] XOR its own location: the IPA of the word in
//! RAM ([`ram_word`]), the byte offset of the word in the namespace ([`disk_word`]). `TAG`'s
//! low 32 bits are zero, so in a hex dump a planted word reads `5ec2e7a5` followed by its own
//! address.
//!
//! **Detector** ([`Detector::matches`]): a word `w` found at location `at` matches when
//! `x = w XOR TAG` is
//! - `at` itself (a stale copy left in place), or
//! - 8-byte aligned and inside the slice's RAM (one of its DT memory ranges) or inside
//!   `[0, disk size)` (a copy that moved: DMA'd, swapped, relocated, RAM data on disk or
//!   disk data in RAM).
//!
//! **False positives.** Zero words give `x = TAG` and all-ones words `x = !TAG`; both are far
//! above any RAM the probe accepts (below 512 GiB) and any disk size below 2^62 bytes, so
//! scrubbed (zeroed) or erased (all-ones or zeros) memory and disks give 0 matches. Any other
//! word matches only if its upper 25+ bits equal `TAG`'s: for uniformly random data the chance
//! per word is (RAM bytes + disk bytes) / 8 / 2^64, about 5e-13 for a 64 MiB slice with a
//! 16 MiB namespace (the probe's memory-test pattern and ordinary data, pointers, small
//! integers, ASCII text and `0xdead...` markers never have those bits).

use crate::dt::MemoryRegion;
use crate::memplan::Range;

/// The fixed tag of the pattern ("5ec2e7a5" in the high half, zeros in the low half).
pub const TAG: u64 = 0x5EC2_E7A5_0000_0000;

/// Most RAM ranges a [`Detector`] knows (the probe keeps at most this many DT memory ranges).
pub const MAX_RAM_RANGES: usize = crate::MAX_MEMORY_REGIONS;

/// The disk size a RAM scan assumes when it runs before the namespace is known (`secret=check`
/// scans RAM before the memory test and the NVMe driver touch it): any 8-byte aligned offset
/// below 1 TiB counts as a plausible disk location. This can only add matches, never hide one.
pub const UNKNOWN_DISK_BYTES: u64 = 1 << 40;

/// The planted word at RAM address (IPA) `ipa`.
pub fn ram_word(ipa: u64) -> u64 {
    TAG ^ ipa
}

/// The planted word at namespace byte offset `offset`.
pub fn disk_word(offset: u64) -> u64 {
    TAG ^ offset
}

/// What `secret=` asks for: `plant`, `check`, or both in the order given. `secret=plant,check`
/// plants, then checks in the same boot, which must find the pattern (the detector's negative
/// control); `secret=check,plant` checks what the previous boot left, then plants (with
/// `reset-after=`, every boot checks what the one before it planted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecretMode {
    /// Plant the pattern over RAM and the namespace.
    pub plant: bool,
    /// Scan RAM and the namespace for it.
    pub check: bool,
    /// `check` came before `plant` (or alone): the check looks at what was there at boot.
    pub check_first: bool,
}

impl SecretMode {
    /// Whether anything is asked for.
    pub fn any(&self) -> bool {
        self.plant || self.check
    }

    /// Whether the check looks at what was there at boot (RAM before the memory test, the
    /// namespace before the NVMe data test), rather than after planting.
    pub fn checks_at_boot(&self) -> bool {
        self.check && self.check_first
    }

    /// Parses the value of `secret=`: a comma-separated list of `plant` and `check`. Returns
    /// the mode and the first unknown word, if any (known words still count).
    pub fn parse(value: &[u8]) -> (SecretMode, Option<&[u8]>) {
        let mut mode = SecretMode::default();
        let mut unknown = None;
        for word in value.split(|&b| b == b',').filter(|w| !w.is_empty()) {
            match word {
                b"plant" => mode.plant = true,
                b"check" => {
                    mode.check_first |= !mode.plant;
                    mode.check = true;
                }
                other => {
                    if unknown.is_none() {
                        unknown = Some(other);
                    }
                }
            }
        }
        (mode, unknown)
    }
}

/// Where a moved copy of the pattern could point: the slice's RAM ranges and its disk size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detector {
    ram: [Range; MAX_RAM_RANGES],
    ram_count: usize,
    disk_bytes: u64,
    /// Largest plausible location + 1: a cheap first filter.
    limit: u64,
}

impl Detector {
    /// A detector for RAM `ram` (ranges beyond [`MAX_RAM_RANGES`] are ignored) and a namespace
    /// of `disk_bytes` (0: none).
    pub fn new(ram: &[Range], disk_bytes: u64) -> Detector {
        let mut d = Detector {
            ram: [Range::default(); MAX_RAM_RANGES],
            ram_count: 0,
            disk_bytes,
            limit: disk_bytes,
        };
        for r in ram.iter().filter(|r| !r.is_empty()).take(MAX_RAM_RANGES) {
            d.ram[d.ram_count] = *r;
            d.ram_count += 1;
            d.limit = d.limit.max(r.end);
        }
        d
    }

    /// A detector for the DT memory `regions` and a namespace of `disk_bytes`.
    pub fn for_regions(regions: &[MemoryRegion], disk_bytes: u64) -> Detector {
        let mut ram = [Range::default(); MAX_RAM_RANGES];
        for (r, m) in ram.iter_mut().zip(regions) {
            *r = Range {
                start: m.base,
                end: m.end(),
            };
        }
        Detector::new(&ram[..regions.len().min(MAX_RAM_RANGES)], disk_bytes)
    }

    /// Whether `x` (a word XOR [`TAG`]) is a plausible location: 8-byte aligned, in RAM or on
    /// the disk.
    pub fn plausible(&self, x: u64) -> bool {
        x < self.limit
            && x.is_multiple_of(8)
            && (x < self.disk_bytes || self.ram[..self.ram_count].iter().any(|r| r.contains(x)))
    }

    /// Whether `word`, found at location `at` (an IPA, or a disk byte offset), is the pattern:
    /// see the module documentation.
    pub fn matches(&self, word: u64, at: u64) -> bool {
        let x = word ^ TAG;
        x == at || self.plausible(x)
    }
}

/// Running totals of one scan: words that matched and the first location where one did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Matching words.
    pub words: u64,
    /// Lowest location of a matching word.
    pub first: Option<u64>,
    /// Bytes scanned.
    pub scanned: u64,
}

impl Tally {
    /// Adds a scan of `bytes` at `start` with `words` matches, the first at `first`.
    pub fn add(&mut self, bytes: u64, words: u64, first: Option<u64>) {
        self.scanned += bytes;
        self.words += words;
        self.first = match (self.first, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Scans `words` (read from location `start` on) with `detector` and adds them.
    pub fn scan(&mut self, detector: &Detector, start: u64, words: impl IntoIterator<Item = u64>) {
        let (mut n, mut count, mut first) = (0u64, 0u64, None);
        for w in words {
            let at = start + 8 * n;
            if detector.matches(w, at) {
                count += 1;
                first.get_or_insert(at);
            }
            n += 1;
        }
        self.add(8 * n, count, first);
    }
}

/// The verdict after a check: `CLEAN` needs no match and everything scanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing found and all of RAM and the namespace scanned.
    Clean,
    /// Pattern words found.
    Found,
    /// Nothing found, but not everything could be scanned (a read failed).
    Incomplete,
}

/// The verdict of a check over `ram` and `disk` that should have covered `ram_bytes` and
/// `disk_bytes`, with `regs` registers found not zero (`bare::secret_regs`).
pub fn verdict(ram: &Tally, disk: &Tally, regs: usize, ram_bytes: u64, disk_bytes: u64) -> Verdict {
    if ram.words != 0 || disk.words != 0 || regs != 0 {
        Verdict::Found
    } else if ram.scanned < ram_bytes || disk.scanned < disk_bytes {
        Verdict::Incomplete
    } else {
        Verdict::Clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn slice_ram() -> [Range; 1] {
        [Range {
            start: 0x4000_0000,
            end: 0x4000_0000 + 64 * MIB,
        }]
    }

    fn detector() -> Detector {
        Detector::new(&slice_ram(), 16 * MIB)
    }

    #[test]
    fn planted_words_match_in_place() {
        let d = detector();
        for at in [0x4000_0000u64, 0x4013_0040, 0x43ff_fff8] {
            assert!(d.matches(ram_word(at), at));
        }
        for off in [0u64, 512, 16 * MIB - 8] {
            assert!(d.matches(disk_word(off), off));
        }
    }

    #[test]
    fn moved_words_match_anywhere() {
        let d = detector();
        // RAM pattern found at another RAM address, RAM pattern on disk, disk pattern in RAM.
        assert!(d.matches(ram_word(0x4100_0000), 0x4200_0000));
        assert!(d.matches(ram_word(0x4100_0000), 4096));
        assert!(d.matches(disk_word(8 * MIB), 0x4000_1000));
    }

    #[test]
    fn zeros_ones_and_other_patterns_do_not_match() {
        let d = detector();
        for at in [0u64, 8, 0x4000_0000, 0x43ff_fff8] {
            assert!(!d.matches(0, at));
            assert!(!d.matches(u64::MAX, at));
            assert!(!d.matches(0xDEAD_BEEF_0BAD_F00D, at));
            assert!(!d.matches(at, at));
            assert!(!d.matches(crate::memplan::pattern(at, 0x1234), at));
        }
        // Misaligned or out-of-range locations.
        assert!(!d.matches(ram_word(0x4000_0004), 0x4000_0000));
        assert!(!d.matches(ram_word(0x4400_0000), 0x4000_0000));
        assert!(!d.matches(disk_word(16 * MIB), 0x4000_0000));
        assert!(!d.matches(ram_word(0x3fff_fff8), 0x4000_0000));
    }

    #[test]
    fn no_false_positive_over_a_scrubbed_or_tested_slice() {
        let d = detector();
        let mut t = Tally::default();
        t.scan(&d, 0x4000_0000, (0..65536u64).map(|_| 0));
        t.scan(
            &d,
            0x4100_0000,
            (0..65536u64).map(|i| crate::memplan::pattern(0x4100_0000 + 8 * i, 0x9e37)),
        );
        assert_eq!((t.words, t.first, t.scanned), (0, None, 2 * 65536 * 8));
    }

    #[test]
    fn without_a_disk_only_ram_is_plausible() {
        let d = Detector::new(&slice_ram(), 0);
        assert!(!d.matches(disk_word(4096), 0x4000_0000));
        assert!(d.matches(disk_word(4096), 4096), "in place still counts");
        assert!(d.matches(ram_word(0x4000_1000), 0x4000_0000));
    }

    #[test]
    fn detector_from_dt_regions() {
        let regions = [
            MemoryRegion {
                base: 0x4000_0000,
                size: 64 * MIB,
            },
            MemoryRegion {
                base: 0x1_0000_0000,
                size: MIB,
            },
        ];
        let d = Detector::for_regions(&regions, 16 * MIB);
        assert!(d.matches(ram_word(0x1_0000_0008), 0x4000_0000));
        assert!(!d.matches(ram_word(0x1_0010_0000), 0x4000_0000));
        assert!(!d.matches(disk_word(100 << 30), 0x4000_0000));
        // Before the namespace is known, any offset below 1 TiB counts.
        let early = Detector::for_regions(&regions, UNKNOWN_DISK_BYTES);
        assert!(early.matches(disk_word(100 << 30), 0x4000_0000));
        assert!(!early.matches(disk_word(UNKNOWN_DISK_BYTES), 0x4000_0000));
        for d in [d, early] {
            assert!(!d.matches(0, 0x4000_0000) && !d.matches(u64::MAX, 0x4000_0000));
        }
    }

    #[test]
    fn tally_counts_and_keeps_the_first() {
        let d = detector();
        let mut t = Tally::default();
        let words = [0, ram_word(0x4000_0008), 0, ram_word(0x4000_0018)];
        t.scan(&d, 0x4000_0000, words);
        assert_eq!((t.words, t.first, t.scanned), (2, Some(0x4000_0008), 32));
        t.add(64, 1, Some(0x4000_0000));
        assert_eq!((t.words, t.first, t.scanned), (3, Some(0x4000_0000), 96));
        assert_eq!(verdict(&t, &Tally::default(), 0, 96, 0), Verdict::Found);
    }

    #[test]
    fn verdicts() {
        let full = Tally {
            words: 0,
            first: None,
            scanned: 100,
        };
        assert_eq!(verdict(&full, &full, 0, 100, 100), Verdict::Clean);
        assert_eq!(verdict(&full, &full, 0, 100, 200), Verdict::Incomplete);
        assert_eq!(
            verdict(&full, &Tally::default(), 0, 100, 0),
            Verdict::Clean,
            "no namespace: RAM alone"
        );
        assert_eq!(
            verdict(&full, &full, 1, 100, 100),
            Verdict::Found,
            "a register left over"
        );
    }

    #[test]
    fn modes_parse() {
        let mode = |plant, check, check_first| SecretMode {
            plant,
            check,
            check_first,
        };
        assert_eq!(
            SecretMode::parse(b"plant"),
            (mode(true, false, false), None)
        );
        assert_eq!(
            SecretMode::parse(b"plant,check"),
            (mode(true, true, false), None)
        );
        assert!(!SecretMode::parse(b"plant,check").0.checks_at_boot());
        assert_eq!(
            SecretMode::parse(b"check,plant"),
            (mode(true, true, true), None)
        );
        assert!(SecretMode::parse(b"check").0.checks_at_boot());
        assert!(SecretMode::parse(b"check,plant").0.checks_at_boot());
        let (mode, unknown) = SecretMode::parse(b"check,steal,,");
        assert!(mode.check && !mode.plant);
        assert_eq!(unknown, Some(&b"steal"[..]));
        assert!(!SecretMode::parse(b"").0.any());
    }
}

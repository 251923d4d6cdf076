//! Identify data structures a slice sees (Base 1.4 §5.15.2): the controller (CNS 01h), its one
//! namespace (CNS 00h), the active namespace list (CNS 02h) and the namespace identification
//! descriptors (CNS 03h). Everything is synthesized from the slice's configuration; nothing of
//! the physical controller shows through except the LBA size.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::config::{ControllerConfig, NamespaceIds};
use super::spec::VERSION_1_4;

/// Bytes of every Identify data structure.
pub const IDENTIFY_SIZE: usize = 4096;
/// Asynchronous Event Request Limit, 0-based: four may be outstanding.
pub const AERL: u8 = 3;
/// Abort Command Limit, 0-based.
pub const ACL: u8 = 3;
/// Warning Composite Temperature Threshold, kelvins (70 °C).
pub const WCTEMP: u16 = 343;
/// Critical Composite Temperature Threshold, kelvins (85 °C).
pub const CCTEMP: u16 = 358;

/// Identify Controller byte offsets (Base 1.4 Figure 247).
pub(crate) mod ctrl {
    pub const VID: usize = 0;
    pub const SSVID: usize = 2;
    pub const SN: usize = 4;
    pub const MN: usize = 24;
    pub const FR: usize = 64;
    pub const RAB: usize = 72;
    pub const MDTS: usize = 77;
    pub const CNTLID: usize = 78;
    pub const VER: usize = 80;
    pub const CNTRLTYPE: usize = 111;
    pub const OACS: usize = 256;
    pub const ACL: usize = 258;
    pub const AERL: usize = 259;
    pub const FRMW: usize = 260;
    pub const LPA: usize = 261;
    pub const ELPE: usize = 262;
    pub const NPSS: usize = 263;
    pub const WCTEMP: usize = 266;
    pub const CCTEMP: usize = 268;
    pub const SQES: usize = 512;
    pub const CQES: usize = 513;
    pub const MAXCMD: usize = 514;
    pub const NN: usize = 516;
    pub const ONCS: usize = 520;
    pub const VWC: usize = 525;
    pub const SGLS: usize = 536;
    pub const SUBNQN: usize = 768;
    pub const PSD0: usize = 2048;
}

/// Identify Namespace byte offsets (Base 1.4 Figure 245).
pub(crate) mod ns {
    pub const NSZE: usize = 0;
    pub const NCAP: usize = 8;
    pub const NUSE: usize = 16;
    pub const NLBAF: usize = 25;
    pub const FLBAS: usize = 26;
    pub const EUI64: usize = 120;
    pub const LBAF0: usize = 128;
}

/// ONCS: Dataset Management (bit 2) and Write Zeroes (bit 3).
pub const ONCS: u16 = 1 << 2 | 1 << 3;
/// Controller type: I/O controller.
const CNTRLTYPE_IO: u8 = 1;
/// FRMW: one firmware slot, read-only.
const FRMW_ONE_READ_ONLY_SLOT: u8 = 1 << 1 | 1;
/// VWC bits 2:1 = 11b: Flush with NSID FFFFFFFFh is supported.
const VWC_FLUSH_BROADCAST: u8 = 0b11 << 1;
/// Power state 0's maximum power, in centiwatts (25 W).
const PS0_MAX_POWER: u16 = 2500;

/// Identify data derived from the configuration once.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    serial: [u8; 20],
    model: [u8; 40],
    firmware: [u8; 8],
    nqn: Vec<u8>,
    ids: NamespaceIds,
    controller_id: u16,
    vendor: u16,
    mdts: u8,
    vwc: bool,
    blocks: u64,
    block_shift: u8,
    max_commands: u16,
}

/// `s` space padded to `N` bytes (Base 1.4 §1.5: ASCII strings are left-justified and padded
/// with spaces).
fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let len = s.len().min(N);
    out[..len].copy_from_slice(&s.as_bytes()[..len]);
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// The UUID-based NQN format (Base 1.4 §7.9): nqn.2014-08.org.nvmexpress:uuid:<uuid>.
fn uuid_nqn(uuid: &[u8; 16]) -> String {
    let h = hex(uuid);
    alloc::format!(
        "nqn.2014-08.org.nvmexpress:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

impl Identity {
    pub fn new(config: &ControllerConfig) -> Identity {
        let ids = config
            .namespace_ids
            .unwrap_or_else(|| NamespaceIds::from_serial(&config.serial));
        let nqn = match &config.subsystem_nqn {
            Some(nqn) => nqn.clone(),
            None => {
                uuid_nqn(&NamespaceIds::from_serial(&alloc::format!("{}/nqn", config.serial)).uuid)
            }
        };
        Identity {
            serial: padded(&config.serial),
            model: padded(&config.model),
            firmware: padded(&config.firmware_revision),
            nqn: nqn.into_bytes(),
            ids,
            controller_id: config.controller_id,
            vendor: config.pci_vendor_id,
            mdts: config.mdts(),
            vwc: config.volatile_write_cache,
            blocks: config.namespace.blocks,
            block_shift: config.namespace.block_shift,
            max_commands: config.queues.depth - 1,
        }
    }

    /// The firmware revision, as in the firmware slot log.
    pub fn firmware(&self) -> [u8; 8] {
        self.firmware
    }

    /// Identify Controller (CNS 01h).
    pub fn controller(&self) -> Vec<u8> {
        let mut d = vec![0u8; IDENTIFY_SIZE];
        put(&mut d, ctrl::VID, &self.vendor.to_le_bytes());
        put(&mut d, ctrl::SSVID, &self.vendor.to_le_bytes());
        put(&mut d, ctrl::SN, &self.serial);
        put(&mut d, ctrl::MN, &self.model);
        put(&mut d, ctrl::FR, &self.firmware);
        d[ctrl::RAB] = 6;
        d[ctrl::MDTS] = self.mdts;
        put(&mut d, ctrl::CNTLID, &self.controller_id.to_le_bytes());
        put(&mut d, ctrl::VER, &VERSION_1_4.to_le_bytes());
        d[ctrl::CNTRLTYPE] = CNTRLTYPE_IO;
        // OACS: Doorbell Buffer Config only (bit 8).
        put(&mut d, ctrl::OACS, &(1u16 << 8).to_le_bytes());
        d[ctrl::ACL] = ACL;
        d[ctrl::AERL] = AERL;
        d[ctrl::FRMW] = FRMW_ONE_READ_ONLY_SLOT;
        d[ctrl::LPA] = 0;
        d[ctrl::ELPE] = 0;
        d[ctrl::NPSS] = 0;
        put(&mut d, ctrl::WCTEMP, &WCTEMP.to_le_bytes());
        put(&mut d, ctrl::CCTEMP, &CCTEMP.to_le_bytes());
        d[ctrl::SQES] = 0x66;
        d[ctrl::CQES] = 0x44;
        put(&mut d, ctrl::MAXCMD, &self.max_commands.to_le_bytes());
        put(&mut d, ctrl::NN, &1u32.to_le_bytes());
        put(&mut d, ctrl::ONCS, &ONCS.to_le_bytes());
        d[ctrl::VWC] = if self.vwc { 1 | VWC_FLUSH_BROADCAST } else { 0 };
        put(&mut d, ctrl::SGLS, &0u32.to_le_bytes());
        put(&mut d, ctrl::SUBNQN, &self.nqn);
        put(&mut d, ctrl::PSD0, &PS0_MAX_POWER.to_le_bytes());
        d
    }

    /// Identify Namespace (CNS 00h) for NSID 1: the share's size, one LBA format.
    pub fn namespace(&self) -> Vec<u8> {
        let mut d = vec![0u8; IDENTIFY_SIZE];
        for at in [ns::NSZE, ns::NCAP, ns::NUSE] {
            put(&mut d, at, &self.blocks.to_le_bytes());
        }
        d[ns::NLBAF] = 0;
        d[ns::FLBAS] = 0;
        put(&mut d, ns::EUI64, &self.ids.eui64);
        let lbaf0 = u32::from(self.block_shift) << 16;
        put(&mut d, ns::LBAF0, &lbaf0.to_le_bytes());
        d
    }

    /// Active Namespace ID list (CNS 02h): the active NSIDs above `after`.
    pub fn active_namespaces(&self, after: u32) -> Vec<u8> {
        let mut d = vec![0u8; IDENTIFY_SIZE];
        if after == 0 {
            put(&mut d, 0, &1u32.to_le_bytes());
        }
        d
    }

    /// Namespace Identification Descriptor list (CNS 03h) for NSID 1: EUI-64 and UUID.
    pub fn namespace_descriptors(&self) -> Vec<u8> {
        const EUI64: u8 = 1;
        const UUID: u8 = 3;
        let mut d = vec![0u8; IDENTIFY_SIZE];
        d[0] = EUI64;
        d[1] = 8;
        put(&mut d, 4, &self.ids.eui64);
        d[12] = UUID;
        d[13] = 16;
        put(&mut d, 16, &self.ids.uuid);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::config::tests::sample;

    fn u16_at(d: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(d[at..at + 2].try_into().unwrap())
    }
    fn u32_at(d: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
    }
    fn u64_at(d: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(d[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn controller_contents() {
        let d = Identity::new(&sample()).controller();
        assert_eq!(d.len(), 4096);
        assert_eq!(u16_at(&d, 0), 0x1b36);
        assert_eq!(&d[4..24], b"SLICE-web-0         ");
        assert_eq!(&d[24..64], b"microvisor NVMe slice                   ");
        assert_eq!(&d[64..72], b"0.1     ");
        assert_eq!(d[77], 7, "MDTS");
        assert_eq!(u16_at(&d, 78), 1, "CNTLID");
        assert_eq!(u32_at(&d, 80), 0x0001_0400, "VER 1.4");
        assert_eq!(
            u16_at(&d, 256),
            1 << 8,
            "OACS: Doorbell Buffer Config, no other optional admin command"
        );
        assert_eq!(d[259], 3, "AERL");
        assert_eq!(d[512], 0x66);
        assert_eq!(d[513], 0x44);
        assert_eq!(u16_at(&d, 514), 7, "MAXCMD: slots per queue");
        assert_eq!(u32_at(&d, 516), 1, "NN");
        assert_eq!(u16_at(&d, 520), 0b1100, "ONCS: DSM and Write Zeroes");
        assert_eq!(d[525], 0b111, "VWC present, broadcast flush");
        assert_eq!(u32_at(&d, 536), 0, "no SGLs");
        let nqn_end = d[768..1024].iter().position(|&b| b == 0).unwrap();
        let nqn = core::str::from_utf8(&d[768..768 + nqn_end]).unwrap();
        assert!(nqn.starts_with("nqn.2014-08.org.nvmexpress:uuid:"), "{nqn}");
        assert_eq!(nqn.len(), 32 + 36);
        assert_ne!(u16_at(&d, 2048), 0, "power state 0 has a maximum power");
    }

    #[test]
    fn controller_without_write_cache_and_given_nqn() {
        let mut config = sample();
        config.volatile_write_cache = false;
        config.physical_mdts = 5;
        config.subsystem_nqn = Some("nqn.2026-01.example:slice".into());
        let d = Identity::new(&config).controller();
        assert_eq!(d[525], 0);
        assert_eq!(d[77], 5);
        assert_eq!(&d[768..793], b"nqn.2026-01.example:slice");
        assert_eq!(d[793], 0);
    }

    #[test]
    fn namespace_contents() {
        let config = sample();
        let identity = Identity::new(&config);
        let d = identity.namespace();
        assert_eq!(u64_at(&d, 0), 0x800, "NSZE");
        assert_eq!(u64_at(&d, 8), 0x800, "NCAP");
        assert_eq!(u64_at(&d, 16), 0x800, "NUSE");
        assert_eq!(d[25], 0, "one LBA format");
        assert_eq!(d[26], 0, "FLBAS");
        assert_eq!(
            u32_at(&d, 128),
            9 << 16,
            "LBAF0: 512-byte blocks, no metadata"
        );
        assert_eq!(u32_at(&d, 132), 0, "no second format");
        let ids = NamespaceIds::from_serial(&config.serial);
        assert_eq!(&d[120..128], &ids.eui64);
    }

    #[test]
    fn active_namespace_list() {
        let identity = Identity::new(&sample());
        let d = identity.active_namespaces(0);
        assert_eq!(u32_at(&d, 0), 1);
        assert_eq!(u32_at(&d, 4), 0);
        assert!(identity.active_namespaces(1).iter().all(|&b| b == 0));
    }

    #[test]
    fn namespace_descriptors_match_identify_namespace() {
        let mut config = sample();
        let given = NamespaceIds {
            eui64: [1, 2, 3, 4, 5, 6, 7, 8],
            uuid: [9; 16],
        };
        config.namespace_ids = Some(given);
        let identity = Identity::new(&config);
        let d = identity.namespace_descriptors();
        assert_eq!(&d[0..4], &[1, 8, 0, 0]);
        assert_eq!(&d[4..12], &given.eui64);
        assert_eq!(&d[12..16], &[3, 16, 0, 0]);
        assert_eq!(&d[16..32], &given.uuid);
        assert_eq!(d[32], 0, "end of list");
        assert_eq!(&identity.namespace()[120..128], &given.eui64);
    }
}

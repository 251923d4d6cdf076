//! The GPIO character device's uAPI, version 2 (Linux `include/uapi/linux/gpio.h`), as far
//! as `powerkey` needs it: chip info, a line request with edge detection, line events.
//! Layouts are the kernel's (`repr(C)`, sizes checked by the tests).

/// `GPIO_MAX_NAME_SIZE`.
pub const MAX_NAME_SIZE: usize = 32;
/// `GPIO_V2_LINES_MAX`.
pub const LINES_MAX: usize = 64;
/// `GPIO_V2_LINE_NUM_ATTRS_MAX`.
pub const NUM_ATTRS_MAX: usize = 10;

/// `GPIO_V2_LINE_FLAG_INPUT`.
pub const LINE_FLAG_INPUT: u64 = 1 << 2;
/// `GPIO_V2_LINE_FLAG_EDGE_RISING`.
pub const LINE_FLAG_EDGE_RISING: u64 = 1 << 4;
/// `GPIO_V2_LINE_EVENT_RISING_EDGE`.
pub const EVENT_RISING_EDGE: u32 = 1;
/// `GPIO_V2_LINE_EVENT_FALLING_EDGE`.
pub const EVENT_FALLING_EDGE: u32 = 2;

/// `_IOC(dir, type, nr, size)` of asm-generic/ioctl.h: nr bits 0-7, type 8-15, size 16-29,
/// direction 30-31 (1 write, 2 read).
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (ty << 8) | nr
}

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;
/// The GPIO ioctls' type.
const GPIO_IOCTL_TYPE: u32 = 0xB4;

/// `GPIO_GET_CHIPINFO_IOCTL` = `_IOR(0xB4, 0x01, struct gpiochip_info)`.
pub const GPIO_GET_CHIPINFO_IOCTL: u32 =
    ioc(IOC_READ, GPIO_IOCTL_TYPE, 0x01, size_of::<ChipInfo>());
/// `GPIO_V2_GET_LINE_IOCTL` = `_IOWR(0xB4, 0x07, struct gpio_v2_line_request)`.
pub const GPIO_V2_GET_LINE_IOCTL: u32 = ioc(
    IOC_READ | IOC_WRITE,
    GPIO_IOCTL_TYPE,
    0x07,
    size_of::<LineRequest>(),
);

/// `struct gpiochip_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChipInfo {
    pub name: [u8; MAX_NAME_SIZE],
    pub label: [u8; MAX_NAME_SIZE],
    pub lines: u32,
}

impl Default for ChipInfo {
    fn default() -> Self {
        ChipInfo {
            name: [0; MAX_NAME_SIZE],
            label: [0; MAX_NAME_SIZE],
            lines: 0,
        }
    }
}

impl ChipInfo {
    /// `name` up to its NUL.
    pub fn name(&self) -> String {
        c_string(&self.name)
    }

    /// `label` up to its NUL (a PL061 on QEMU `virt`: `9030000.pl061`).
    pub fn label(&self) -> String {
        c_string(&self.label)
    }

    /// Whether this is the PL061 at 0x09030000 whose line 3 is the power key
    /// (docs/control.md, "Power key").
    pub fn is_power_key_chip(&self) -> bool {
        let label = self.label().to_ascii_lowercase();
        let name = self.name().to_ascii_lowercase();
        [label, name]
            .iter()
            .any(|s| s.contains("9030000") || s.contains("pl061"))
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// `struct gpio_v2_line_attribute` (the union of flags, values and debounce period as its
/// 64-bit member).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineAttribute {
    pub id: u32,
    pub padding: u32,
    pub value: u64,
}

/// `struct gpio_v2_line_config_attribute`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineConfigAttribute {
    pub attr: LineAttribute,
    pub mask: u64,
}

/// `struct gpio_v2_line_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineConfig {
    pub flags: u64,
    pub num_attrs: u32,
    pub padding: [u32; 5],
    pub attrs: [LineConfigAttribute; NUM_ATTRS_MAX],
}

/// `struct gpio_v2_line_request`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineRequest {
    pub offsets: [u32; LINES_MAX],
    pub consumer: [u8; MAX_NAME_SIZE],
    pub config: LineConfig,
    pub num_lines: u32,
    pub event_buffer_size: u32,
    pub padding: [u32; 5],
    /// Set by the kernel: the line descriptor.
    pub fd: i32,
}

impl LineRequest {
    /// A request for line `offset` with `flags`, consumer `consumer` (cut to 31 bytes).
    pub fn single(offset: u32, flags: u64, consumer: &str) -> Self {
        let mut request = LineRequest {
            offsets: [0; LINES_MAX],
            consumer: [0; MAX_NAME_SIZE],
            config: LineConfig {
                flags,
                ..LineConfig::default()
            },
            num_lines: 1,
            event_buffer_size: 0,
            padding: [0; 5],
            fd: -1,
        };
        request.offsets[0] = offset;
        let name = consumer.as_bytes();
        let n = name.len().min(MAX_NAME_SIZE - 1);
        request.consumer[..n].copy_from_slice(&name[..n]);
        request
    }
}

/// Bytes of `struct gpio_v2_line_event`.
pub const LINE_EVENT_LEN: usize = 48;

/// `struct gpio_v2_line_event`, read from a line descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineEvent {
    pub timestamp_ns: u64,
    /// [`EVENT_RISING_EDGE`] or [`EVENT_FALLING_EDGE`].
    pub id: u32,
    pub offset: u32,
    pub seqno: u32,
    pub line_seqno: u32,
}

impl LineEvent {
    /// The event in `bytes` (native byte order, as the kernel writes it).
    pub fn parse(bytes: &[u8; LINE_EVENT_LEN]) -> LineEvent {
        let u32_at = |at: usize| {
            u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let mut ts = [0; 8];
        ts.copy_from_slice(&bytes[0..8]);
        LineEvent {
            timestamp_ns: u64::from_ne_bytes(ts),
            id: u32_at(8),
            offset: u32_at(12),
            seqno: u32_at(16),
            line_seqno: u32_at(20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn structs_have_the_kernels_sizes_and_offsets() {
        assert_eq!(size_of::<ChipInfo>(), 68);
        assert_eq!(size_of::<LineAttribute>(), 16);
        assert_eq!(size_of::<LineConfigAttribute>(), 24);
        assert_eq!(size_of::<LineConfig>(), 272);
        assert_eq!(size_of::<LineRequest>(), 592);
        assert_eq!(offset_of!(LineRequest, consumer), 256);
        assert_eq!(offset_of!(LineRequest, config), 288);
        assert_eq!(offset_of!(LineRequest, num_lines), 560);
        assert_eq!(offset_of!(LineRequest, event_buffer_size), 564);
        assert_eq!(offset_of!(LineRequest, fd), 588);
        assert_eq!(offset_of!(LineConfig, attrs), 32);
        assert_eq!(align_of::<LineRequest>(), 8);
    }

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        assert_eq!(GPIO_GET_CHIPINFO_IOCTL, 0x8044_b401);
        assert_eq!(GPIO_V2_GET_LINE_IOCTL, 0xc250_b407);
    }

    #[test]
    fn a_single_line_request_is_filled_in() {
        let r = LineRequest::single(3, LINE_FLAG_INPUT | LINE_FLAG_EDGE_RISING, "powerkey");
        assert_eq!(r.offsets[0], 3);
        assert_eq!(r.num_lines, 1);
        assert_eq!(r.config.flags, 0x14);
        assert_eq!(&r.consumer[..9], b"powerkey\0");
        let long = LineRequest::single(0, 0, &"x".repeat(40));
        assert_eq!(long.consumer[31], 0, "NUL-terminated");
    }

    #[test]
    fn events_parse() {
        let mut bytes = [0u8; LINE_EVENT_LEN];
        bytes[0..8].copy_from_slice(&123u64.to_ne_bytes());
        bytes[8..12].copy_from_slice(&EVENT_RISING_EDGE.to_ne_bytes());
        bytes[12..16].copy_from_slice(&3u32.to_ne_bytes());
        bytes[16..20].copy_from_slice(&7u32.to_ne_bytes());
        let event = LineEvent::parse(&bytes);
        assert_eq!(event.timestamp_ns, 123);
        assert_eq!(event.id, EVENT_RISING_EDGE);
        assert_eq!(event.offset, 3);
        assert_eq!(event.seqno, 7);
    }

    #[test]
    fn the_pl061_is_recognised_by_label_or_name() {
        let mut info = ChipInfo::default();
        info.label[..13].copy_from_slice(b"9030000.pl061");
        assert!(info.is_power_key_chip());
        assert_eq!(info.label(), "9030000.pl061");
        let mut other = ChipInfo::default();
        other.label[..8].copy_from_slice(b"gpio-sim");
        assert!(!other.is_power_key_chip());
        other.name[..5].copy_from_slice(b"PL061");
        assert!(other.is_power_key_chip());
    }
}

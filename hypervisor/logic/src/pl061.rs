//! The emulated PL061 GPIO controller each slice sees at IPA 0x0903_0000, as on QEMU virt
//! (Arm PrimeCell GPIO (PL061) Technical Reference Manual, DDI 0190B, §3.2 register summary,
//! §3.3 register descriptions). Eight lines; the hypervisor drives the inputs (line 3 is the
//! slice's power key, [`POWER_KEY_LINE`]), the guest reads them and takes their interrupts.
//!
//! Every register is 8 bits wide in a 32-bit slot: accesses of any width at the slot's first
//! byte work, the slot's other bytes read as zero and ignore writes, as does every offset the
//! TRM does not name.

/// Size of the register block, and of the page the slice's stage-2 leaves unmapped for it.
pub const PL061_SIZE: u64 = 0x1000;
/// How many GPIO lines a PL061 has (TRM §1.1).
pub const LINES: u8 = 8;
/// The line QEMU virt wires its power button to, and the slice's power key.
pub const POWER_KEY_LINE: u8 = 3;

/// Register offsets (TRM Table 3-1).
mod offset {
    /// GPIODATA occupies 0x000-0x3fc: address bits [9:2] mask the access (TRM §3.3.1).
    pub const DATA_END: u64 = 0x400;
    pub const DIR: u64 = 0x400;
    pub const IS: u64 = 0x404;
    pub const IBE: u64 = 0x408;
    pub const IEV: u64 = 0x40c;
    pub const IE: u64 = 0x410;
    pub const RIS: u64 = 0x414;
    pub const MIS: u64 = 0x418;
    pub const IC: u64 = 0x41c;
    pub const AFSEL: u64 = 0x420;
    pub const ID_START: u64 = 0xfe0;
}

/// GPIOPeriphID0-3 then GPIOPCellID0-3 (TRM §3.3.11-18): part 0x061, designer 0x41 (Arm),
/// revision 0; the PrimeCell ID 0xb105f00d. Linux's amba bus matches 0x00041061.
const ID_REGISTERS: [u8; 8] = [0x61, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// One bit per line, bit `n` for line `n`.
pub type LineMask = u8;

/// The state of one emulated PL061.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VirtualPl061 {
    /// What the guest wrote to GPIODATA (driven on the lines that are outputs).
    data: LineMask,
    /// The levels the outside world drives on the lines ([`VirtualPl061::set_input`]).
    inputs: LineMask,
    /// GPIODIR: 1 = output.
    dir: LineMask,
    /// GPIOIS: 1 = level sensitive, 0 = edge.
    sense: LineMask,
    /// GPIOIBE: 1 = both edges (GPIOIEV ignored).
    both_edges: LineMask,
    /// GPIOIEV: 1 = rising edge / high level, 0 = falling edge / low level.
    event: LineMask,
    /// GPIOIE: 1 = the line's interrupt reaches GPIOINTR.
    enable: LineMask,
    /// GPIOAFSEL: kept, no effect (no alternate functions here).
    afsel: LineMask,
    /// Edges detected and not yet cleared through GPIOIC.
    edges: LineMask,
    /// The line levels when edges were last looked for.
    last_levels: LineMask,
}

impl VirtualPl061 {
    /// A PL061 in its reset state (TRM §3.3: every register 0, all lines inputs, all
    /// interrupts masked), every input low.
    pub const fn new() -> Self {
        Self {
            data: 0,
            inputs: 0,
            dir: 0,
            sense: 0,
            both_edges: 0,
            event: 0,
            enable: 0,
            afsel: 0,
            edges: 0,
            last_levels: 0,
        }
    }

    /// Reads the register at `offset` (see the module docs for widths and unknown offsets).
    pub fn read(&self, offset: u64) -> u32 {
        if !offset.is_multiple_of(4) {
            return 0;
        }
        let value = match offset {
            o if o < offset::DATA_END => self.levels() & address_mask(o),
            offset::DIR => self.dir,
            offset::IS => self.sense,
            offset::IBE => self.both_edges,
            offset::IEV => self.event,
            offset::IE => self.enable,
            offset::RIS => self.raw_status(),
            offset::MIS => self.raw_status() & self.enable,
            offset::AFSEL => self.afsel,
            o if (offset::ID_START..PL061_SIZE).contains(&o) => {
                ID_REGISTERS[((o - offset::ID_START) / 4) as usize]
            }
            _ => 0,
        };
        u32::from(value)
    }

    /// Writes the register at `offset` (see the module docs for widths and unknown offsets).
    pub fn write(&mut self, offset: u64, value: u32) {
        if !offset.is_multiple_of(4) {
            return;
        }
        let value = value as u8;
        match offset {
            o if o < offset::DATA_END => {
                let mask = address_mask(o);
                self.data = (self.data & !mask) | (value & mask);
            }
            offset::DIR => self.dir = value,
            offset::IS => self.sense = value,
            offset::IBE => self.both_edges = value,
            offset::IEV => self.event = value,
            offset::IE => self.enable = value,
            offset::IC => self.edges &= !value,
            offset::AFSEL => self.afsel = value,
            _ => {}
        }
        self.detect_edges();
    }

    /// The outside world drives input `line` high or low (lines past [`LINES`] are ignored;
    /// on a line the guest made an output, the level counts once it is an input again).
    pub fn set_input(&mut self, line: u8, high: bool) {
        if line >= LINES {
            return;
        }
        let bit = 1 << line;
        if high {
            self.inputs |= bit;
        } else {
            self.inputs &= !bit;
        }
        self.detect_edges();
    }

    /// Whether the controller's interrupt output (GPIOINTR) is asserted: GPIOMIS != 0.
    pub fn interrupt_pending(&self) -> bool {
        self.raw_status() & self.enable != 0
    }

    /// The level of every line: an output's is what the guest drives, an input's what the
    /// outside world drives.
    fn levels(&self) -> LineMask {
        (self.data & self.dir) | (self.inputs & !self.dir)
    }

    /// GPIORIS (TRM §3.3.7): latched edges on edge-sensitive lines, the current level on
    /// level-sensitive ones (high or low as GPIOIEV says).
    fn raw_status(&self) -> LineMask {
        let level_active = !(self.levels() ^ self.event);
        (self.edges & !self.sense) | (level_active & self.sense)
    }

    /// Latches the edges since the last look on the edge-sensitive lines: any edge with
    /// GPIOIBE, else the one GPIOIEV selects.
    fn detect_edges(&mut self) {
        let now = self.levels();
        let changed = now ^ self.last_levels;
        self.last_levels = now;
        let rising = changed & now;
        let falling = changed & !now;
        let wanted = (changed & self.both_edges)
            | (rising & self.event & !self.both_edges)
            | (falling & !self.event & !self.both_edges);
        self.edges |= wanted & !self.sense;
    }
}

/// The lines a GPIODATA access at `offset` touches: address bits [9:2].
fn address_mask(offset: u64) -> LineMask {
    (offset >> 2) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE3: u8 = 1 << 3;

    /// A controller whose line 3 interrupts as Linux sets up a rising edge: edge, rising,
    /// enabled.
    fn rising_edge_on_line3() -> VirtualPl061 {
        let mut gpio = VirtualPl061::new();
        gpio.write(offset::IS, 0);
        gpio.write(offset::IBE, 0);
        gpio.write(offset::IEV, LINE3.into());
        gpio.write(offset::IE, LINE3.into());
        gpio
    }

    #[test]
    fn identifies_as_a_pl061() {
        let gpio = VirtualPl061::new();
        let ids: [u32; 8] = core::array::from_fn(|i| gpio.read(0xfe0 + 4 * i as u64));
        assert_eq!(ids, [0x61, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
        let periph = ids[..4].iter().rev().fold(0, |v, b| v << 8 | b);
        assert_eq!(
            periph & 0x000f_ffff,
            0x0004_1061,
            "what Linux's pl061 driver matches"
        );
        assert_eq!(gpio.read(0xfd0), 0);
    }

    #[test]
    fn reset_state_is_all_inputs_low_and_masked() {
        let gpio = VirtualPl061::new();
        for reg in [
            offset::DIR,
            offset::IS,
            offset::IBE,
            offset::IEV,
            offset::IE,
            offset::RIS,
            offset::MIS,
            offset::AFSEL,
        ] {
            assert_eq!(gpio.read(reg), 0, "{reg:#x}");
        }
        assert_eq!(gpio.read(0x3fc), 0);
        assert!(!gpio.interrupt_pending());
    }

    #[test]
    fn data_reads_are_masked_by_address_bits() {
        let mut gpio = VirtualPl061::new();
        gpio.set_input(3, true);
        gpio.set_input(0, true);
        assert_eq!(gpio.read(0x3fc), 0b1001, "all lines");
        assert_eq!(gpio.read(1 << (3 + 2)), LINE3.into(), "line 3 only");
        assert_eq!(gpio.read(1 << (1 + 2)), 0, "line 1 only");
        assert_eq!(gpio.read(0), 0, "no line");
    }

    #[test]
    fn data_writes_drive_only_masked_output_lines() {
        let mut gpio = VirtualPl061::new();
        gpio.write(offset::DIR, 0x0f);
        assert_eq!(gpio.read(offset::DIR), 0x0f);
        // Writes through the mask of lines 0 and 1 only.
        gpio.write((0b11) << 2, 0xff);
        assert_eq!(gpio.read(0x3fc), 0b11);
        // Line 2 written through the mask of line 0 only: unchanged.
        gpio.write(1 << 2, 0b101);
        assert_eq!(gpio.read(0x3fc), 0b11);
        // Clear line 0 through its own mask.
        gpio.write(1 << 2, 0);
        assert_eq!(gpio.read(0x3fc), 0b10);
        // An input line reads what the outside drives, not what was written.
        gpio.write(0x3fc, 0xff);
        assert_eq!(gpio.read(0x3fc), 0x0f);
        gpio.set_input(7, true);
        assert_eq!(gpio.read(0x3fc), 0x8f);
    }

    #[test]
    fn an_output_line_ignores_its_input() {
        let mut gpio = VirtualPl061::new();
        gpio.write(offset::DIR, LINE3.into());
        gpio.set_input(3, true);
        assert_eq!(gpio.read(0x3fc), 0);
        gpio.write(offset::DIR, 0);
        assert_eq!(gpio.read(0x3fc), LINE3.into());
    }

    #[test]
    fn rising_edge_interrupts_until_cleared() {
        let mut gpio = rising_edge_on_line3();
        assert!(!gpio.interrupt_pending());
        gpio.set_input(3, true);
        assert!(gpio.interrupt_pending());
        assert_eq!(gpio.read(offset::RIS), LINE3.into());
        assert_eq!(gpio.read(offset::MIS), LINE3.into());
        gpio.write(offset::IC, LINE3.into());
        assert!(!gpio.interrupt_pending(), "edge cleared, line still high");
        assert_eq!(gpio.read(offset::RIS), 0);
        gpio.set_input(3, true);
        assert!(!gpio.interrupt_pending(), "no new edge while it stays high");
        gpio.set_input(3, false);
        assert!(!gpio.interrupt_pending(), "falling edge not selected");
    }

    #[test]
    fn clear_is_write_one_to_clear() {
        let mut gpio = rising_edge_on_line3();
        gpio.write(offset::IE, 0xff);
        gpio.write(offset::IEV, 0xff);
        gpio.set_input(3, true);
        gpio.set_input(5, true);
        gpio.write(offset::IC, 1 << 5);
        assert_eq!(gpio.read(offset::RIS), LINE3.into());
        gpio.write(offset::IC, 0);
        assert_eq!(gpio.read(offset::RIS), LINE3.into());
        assert_eq!(gpio.read(offset::IC), 0, "write only");
    }

    #[test]
    fn falling_edge_when_event_is_low() {
        let mut gpio = rising_edge_on_line3();
        gpio.write(offset::IEV, 0);
        gpio.set_input(3, true);
        assert!(!gpio.interrupt_pending());
        gpio.set_input(3, false);
        assert!(gpio.interrupt_pending());
    }

    #[test]
    fn both_edges_ignore_the_event_register() {
        let mut gpio = rising_edge_on_line3();
        gpio.write(offset::IBE, LINE3.into());
        gpio.write(offset::IEV, 0);
        gpio.set_input(3, true);
        assert!(gpio.interrupt_pending());
        gpio.write(offset::IC, LINE3.into());
        gpio.set_input(3, false);
        assert!(gpio.interrupt_pending());
    }

    #[test]
    fn level_interrupts_follow_the_line() {
        let mut gpio = VirtualPl061::new();
        gpio.write(offset::IS, LINE3.into());
        gpio.write(offset::IEV, LINE3.into());
        gpio.write(offset::IE, LINE3.into());
        assert!(!gpio.interrupt_pending());
        gpio.set_input(3, true);
        assert!(gpio.interrupt_pending());
        gpio.write(offset::IC, LINE3.into());
        assert!(gpio.interrupt_pending(), "a level is not cleared by GPIOIC");
        gpio.set_input(3, false);
        assert!(!gpio.interrupt_pending());
        // Low-level polarity.
        gpio.write(offset::IEV, 0);
        assert!(gpio.interrupt_pending());
        assert_eq!(gpio.read(offset::RIS), LINE3.into());
    }

    #[test]
    fn masked_lines_show_in_raw_status_only() {
        let mut gpio = rising_edge_on_line3();
        gpio.write(offset::IE, 0);
        gpio.set_input(3, true);
        assert_eq!(gpio.read(offset::RIS), LINE3.into());
        assert_eq!(gpio.read(offset::MIS), 0);
        assert!(!gpio.interrupt_pending());
        gpio.write(offset::IE, LINE3.into());
        assert!(gpio.interrupt_pending(), "unmasking a latched edge asserts");
    }

    #[test]
    fn output_lines_raise_edges_too() {
        let mut gpio = rising_edge_on_line3();
        gpio.write(offset::DIR, LINE3.into());
        gpio.write(1 << (3 + 2), 0xff);
        assert!(gpio.interrupt_pending());
    }

    #[test]
    fn afsel_is_kept() {
        let mut gpio = VirtualPl061::new();
        gpio.write(offset::AFSEL, 0xa5);
        assert_eq!(gpio.read(offset::AFSEL), 0xa5);
    }

    #[test]
    fn odd_offsets_lines_and_unknown_registers_are_ignored() {
        let mut gpio = VirtualPl061::new();
        gpio.write(offset::DIR + 1, 0xff);
        assert_eq!(gpio.read(offset::DIR), 0);
        assert_eq!(gpio.read(offset::IE + 2), 0);
        gpio.write(0x800, 0xffff_ffff);
        assert_eq!(gpio.read(0x800), 0);
        assert_eq!(gpio.read(0x1000), 0, "past the block");
        gpio.write(offset::DIR, 0x1ff);
        assert_eq!(gpio.read(offset::DIR), 0xff, "8-bit registers");
        let before = gpio.clone();
        gpio.set_input(LINES, true);
        gpio.set_input(200, true);
        assert_eq!(gpio, before);
    }
}

//! The emulated PL011 UART each slice sees at IPA 0x0900_0000 (Arm PrimeCell UART (PL011)
//! Technical Reference Manual r1p5, §3.2 register summary). Transmission is instantaneous:
//! every byte written to UARTDR goes to the slice's console line at once, so the transmit
//! FIFO is always empty. Received bytes wait in a 32-entry FIFO.

use tock_registers::{LocalRegisterCopy, register_bitfields};

/// Size of the register block, and of the page the slice's stage-2 leaves unmapped for it.
pub const PL011_SIZE: u64 = 0x1000;
/// Depth of the receive FIFO (PL011 TRM §2.4.3).
pub const RX_FIFO_DEPTH: usize = 32;

register_bitfields![u32,
    /// UARTFR, flag register (TRM §3.3.3).
    FR [
        BUSY OFFSET(3) NUMBITS(1) [],
        RXFE OFFSET(4) NUMBITS(1) [],
        TXFF OFFSET(5) NUMBITS(1) [],
        RXFF OFFSET(6) NUMBITS(1) [],
        TXFE OFFSET(7) NUMBITS(1) []
    ],
    /// UARTRIS / UARTMIS / UARTIMSC / UARTICR interrupt bits (TRM §3.3.12-15).
    INT [
        RX OFFSET(4) NUMBITS(1) [],
        TX OFFSET(5) NUMBITS(1) [],
        RT OFFSET(6) NUMBITS(1) []
    ]
];

/// Register offsets (TRM Table 3-1).
mod offset {
    pub const DR: u64 = 0x000;
    pub const RSR_ECR: u64 = 0x004;
    pub const FR: u64 = 0x018;
    pub const ILPR: u64 = 0x020;
    pub const IBRD: u64 = 0x024;
    pub const FBRD: u64 = 0x028;
    pub const LCR_H: u64 = 0x02c;
    pub const CR: u64 = 0x030;
    pub const IFLS: u64 = 0x034;
    pub const IMSC: u64 = 0x038;
    pub const RIS: u64 = 0x03c;
    pub const MIS: u64 = 0x040;
    pub const ICR: u64 = 0x044;
    pub const DMACR: u64 = 0x048;
    pub const ID_START: u64 = 0xfe0;
}

/// UARTPeriphID0-3 then UARTPCellID0-3 (TRM §3.3.14-21): a PL011 r1p5.
const ID_REGISTERS: [u32; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
/// UARTCR reset value: TXE | RXE.
const CR_RESET: u32 = 0x300;
/// UARTIFLS reset value: both FIFO levels at 1/2.
const IFLS_RESET: u32 = 0x12;

/// The state of one emulated PL011.
#[derive(Clone, Debug)]
pub struct VirtualPl011 {
    ilpr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    dmacr: u32,
    /// Raw interrupt status, without the receive bits (derived from the FIFO).
    tx_raw: bool,
    rx: [u8; RX_FIFO_DEPTH],
    rx_head: usize,
    rx_len: usize,
}

impl Default for VirtualPl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualPl011 {
    /// A UART in its reset state.
    pub const fn new() -> Self {
        Self {
            ilpr: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: CR_RESET,
            ifls: IFLS_RESET,
            imsc: 0,
            dmacr: 0,
            tx_raw: false,
            rx: [0; RX_FIFO_DEPTH],
            rx_head: 0,
            rx_len: 0,
        }
    }

    /// Reads the register at `offset` (any width; unknown offsets read as zero).
    pub fn read(&mut self, offset: u64) -> u32 {
        match offset & !3 {
            offset::DR => self.pop_rx().map_or(0, u32::from),
            offset::RSR_ECR => 0,
            offset::FR => self.flags().get(),
            offset::ILPR => self.ilpr,
            offset::IBRD => self.ibrd,
            offset::FBRD => self.fbrd,
            offset::LCR_H => self.lcr_h,
            offset::CR => self.cr,
            offset::IFLS => self.ifls,
            offset::IMSC => self.imsc,
            offset::RIS => self.raw_interrupts(),
            offset::MIS => self.raw_interrupts() & self.imsc,
            offset::DMACR => self.dmacr,
            o if o >= offset::ID_START => ID_REGISTERS[((o - offset::ID_START) / 4) as usize % 8],
            _ => 0,
        }
    }

    /// Writes the register at `offset`; returns the byte transmitted, if any.
    pub fn write(&mut self, offset: u64, value: u32) -> Option<u8> {
        match offset & !3 {
            offset::DR => {
                self.tx_raw = true;
                return Some(value as u8);
            }
            offset::ILPR => self.ilpr = value & 0xff,
            offset::IBRD => self.ibrd = value & 0xffff,
            offset::FBRD => self.fbrd = value & 0x3f,
            offset::LCR_H => self.lcr_h = value & 0xff,
            offset::CR => self.cr = value & 0xffff,
            offset::IFLS => self.ifls = value & 0x3f,
            offset::IMSC => self.imsc = value & 0x7ff,
            offset::ICR if value & INT::TX::SET.value != 0 => {
                self.tx_raw = false;
            }
            offset::DMACR => self.dmacr = value & 0x7,
            _ => {}
        }
        None
    }

    /// Queues a byte typed on the node console; false when the FIFO is full (byte dropped).
    pub fn receive(&mut self, byte: u8) -> bool {
        if self.rx_len == RX_FIFO_DEPTH {
            return false;
        }
        self.rx[(self.rx_head + self.rx_len) % RX_FIFO_DEPTH] = byte;
        self.rx_len += 1;
        true
    }

    /// Whether the UART's interrupt line is asserted (UARTMIS != 0).
    pub fn interrupt_pending(&self) -> bool {
        self.raw_interrupts() & self.imsc != 0
    }

    fn pop_rx(&mut self) -> Option<u8> {
        if self.rx_len == 0 {
            return None;
        }
        let byte = self.rx[self.rx_head];
        self.rx_head = (self.rx_head + 1) % RX_FIFO_DEPTH;
        self.rx_len -= 1;
        Some(byte)
    }

    fn flags(&self) -> LocalRegisterCopy<u32, FR::Register> {
        let mut fr = LocalRegisterCopy::new(0);
        fr.modify(FR::TXFE::SET);
        if self.rx_len == 0 {
            fr.modify(FR::RXFE::SET);
        }
        if self.rx_len == RX_FIFO_DEPTH {
            fr.modify(FR::RXFF::SET);
        }
        fr
    }

    fn raw_interrupts(&self) -> u32 {
        let mut ris = LocalRegisterCopy::<u32, INT::Register>::new(0);
        if self.tx_raw {
            ris.modify(INT::TX::SET);
        }
        if self.rx_len > 0 {
            // Data waiting is reported both as "FIFO level reached" and "receive timeout",
            // which is what a real PL011 shows once the line goes idle.
            ris.modify(INT::RX::SET + INT::RT::SET);
        }
        ris.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmits_bytes_and_reports_empty_fifo() {
        let mut uart = VirtualPl011::new();
        assert_eq!(uart.write(offset::DR, 0x141), Some(0x41));
        let fr = uart.read(offset::FR);
        assert_ne!(fr & (1 << 7), 0, "TXFE");
        assert_ne!(fr & (1 << 4), 0, "RXFE");
        assert_eq!(fr & (1 << 5), 0, "never TXFF");
    }

    #[test]
    fn identifies_as_a_pl011() {
        let mut uart = VirtualPl011::new();
        let ids: [u32; 8] = core::array::from_fn(|i| uart.read(0xfe0 + 4 * i as u64));
        assert_eq!(ids, [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
    }

    #[test]
    fn keeps_line_control_registers() {
        let mut uart = VirtualPl011::new();
        assert_eq!(uart.read(offset::CR), 0x300);
        for (reg, value) in [
            (offset::IBRD, 13),
            (offset::FBRD, 1),
            (offset::LCR_H, 0x70),
            (offset::CR, 0x301),
        ] {
            assert_eq!(uart.write(reg, value), None);
            assert_eq!(uart.read(reg), value);
        }
    }

    #[test]
    fn receive_fifo_and_interrupts() {
        let mut uart = VirtualPl011::new();
        uart.write(offset::IMSC, (1 << 4) | (1 << 6));
        assert!(!uart.interrupt_pending());
        assert!(uart.receive(b'x'));
        assert!(uart.interrupt_pending());
        assert_eq!(uart.read(offset::MIS), (1 << 4) | (1 << 6));
        assert_eq!(uart.read(offset::FR) & (1 << 4), 0, "RXFE clear");
        assert_eq!(uart.read(offset::DR), u32::from(b'x'));
        assert!(!uart.interrupt_pending());
        assert_eq!(uart.read(offset::DR), 0, "empty FIFO reads zero");
    }

    #[test]
    fn receive_fifo_overflow_drops() {
        let mut uart = VirtualPl011::new();
        for i in 0..RX_FIFO_DEPTH {
            assert!(uart.receive(i as u8));
        }
        assert!(!uart.receive(0xff));
        assert_ne!(uart.read(offset::FR) & (1 << 6), 0, "RXFF");
        for i in 0..RX_FIFO_DEPTH {
            assert_eq!(uart.read(offset::DR), i as u32);
        }
    }

    #[test]
    fn transmit_interrupt_until_cleared() {
        let mut uart = VirtualPl011::new();
        uart.write(offset::IMSC, 1 << 5);
        uart.write(offset::DR, b'a'.into());
        assert!(uart.interrupt_pending());
        uart.write(offset::ICR, 1 << 5);
        assert!(!uart.interrupt_pending());
    }

    #[test]
    fn unknown_offsets_are_raz_wi() {
        let mut uart = VirtualPl011::new();
        assert_eq!(uart.write(0x100, 0xffff_ffff), None);
        assert_eq!(uart.read(0x100), 0);
    }
}

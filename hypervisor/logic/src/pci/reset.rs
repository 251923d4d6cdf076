//! Resetting one function: Function Level Reset (PCIe Base 4.0 §6.6.2, Device Capabilities
//! §7.5.3.3, Device Control/Status §7.5.3.4-5), or for a function without FLR at least bus
//! mastering and decoding off; and saving and restoring what the hypervisor programmed into
//! the function (FLR clears it). Every wait is bounded by a [`Clock`].

use super::topology::vendor_absent;
use super::{Bdf, ConfigSpace, capability, find_capability, header};

/// Offsets inside the PCI Express capability (PCIe Base 4.0 §7.5.3).
pub mod express {
    /// Device Capabilities.
    pub const DEVICE_CAPABILITIES: u16 = 0x04;
    /// Device Control (15:0) and Device Status (31:16).
    pub const DEVICE_CONTROL_STATUS: u16 = 0x08;
    /// Device Capabilities: Function Level Reset Capability (§7.5.3.3).
    pub const FLR_CAPABLE: u32 = 1 << 28;
    /// Device Control: Initiate Function Level Reset (§7.5.3.4).
    pub const INITIATE_FLR: u32 = 1 << 15;
    /// Device Control: Enable No Snoop (§7.5.3.4): the function may mark transactions as
    /// needing no cache coherency.
    pub const ENABLE_NO_SNOOP: u32 = 1 << 11;
    /// Device Status: Transactions Pending (§7.5.3.5).
    pub const TRANSACTIONS_PENDING: u32 = 1 << (16 + 5);
}

/// How long the function may keep Transactions Pending set before the FLR is issued anyway
/// (§6.6.2 implementation note: the FLR then discards what is outstanding).
pub const PENDING_TIMEOUT_MS: u64 = 1000;
/// How long a function has to complete an FLR before software may touch it (§6.6.2).
pub const FLR_COMPLETION_MS: u64 = 100;
/// How long after that its Vendor ID may still read as invalid (not ready, or Configuration
/// Request Retry Status) before the reset counts as failed.
pub const READY_TIMEOUT_MS: u64 = 1000;

/// The time source for the waits.
pub trait Clock {
    /// Milliseconds since a fixed point in the past; never goes back.
    fn now_ms(&self) -> u64;
    /// Called on each turn of a polling loop (a spin hint on hardware; a test clock moves time
    /// on).
    fn pause(&self);
}

/// What [`flr`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetOutcome {
    /// The function was reset by FLR and answers again. `pending_cleared` is false when
    /// Transactions Pending was still set after [`PENDING_TIMEOUT_MS`] and the FLR was issued
    /// anyway.
    Flr { pending_cleared: bool },
    /// The function has no FLR (no PCIe capability, or FLR not in Device Capabilities): only
    /// bus mastering and memory and I/O decoding were turned off (its state is not reset).
    NoFlr,
}

/// Why [`flr`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetError {
    /// The function did not answer (Vendor ID invalid) before the reset.
    Absent(Bdf),
    /// After the FLR the Vendor ID still read invalid after [`FLR_COMPLETION_MS`] +
    /// [`READY_TIMEOUT_MS`].
    NotBackAfterFlr(Bdf),
}

impl core::fmt::Display for ResetOutcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Flr {
                pending_cleared: true,
            } => write!(f, "reset by FLR"),
            Self::Flr {
                pending_cleared: false,
            } => write!(
                f,
                "reset by FLR (transactions still pending after {PENDING_TIMEOUT_MS} ms)"
            ),
            Self::NoFlr => write!(f, "no FLR: bus master and decoding off only"),
        }
    }
}

impl core::fmt::Display for ResetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Absent(b) => write!(f, "{b}: no function answers"),
            Self::NotBackAfterFlr(b) => write!(
                f,
                "{b}: not back {} ms after FLR (Vendor ID invalid)",
                FLR_COMPLETION_MS + READY_TIMEOUT_MS
            ),
        }
    }
}

/// Polls `done` until it holds or `timeout_ms` passed on `clock`; whether it held.
fn wait(clock: &dyn Clock, timeout_ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let start = clock.now_ms();
    loop {
        if done() {
            return true;
        }
        if clock.now_ms().saturating_sub(start) >= timeout_ms {
            return done();
        }
        clock.pause();
    }
}

/// Turns off bus mastering and memory and I/O decoding of `bdf` (the rest of COMMAND kept).
pub fn quiesce(config: &mut dyn ConfigSpace, bdf: Bdf) {
    let command = config.read(bdf, header::COMMAND) & 0xffff;
    config.write(
        bdf,
        header::COMMAND,
        command & !(header::BUS_MASTER | header::MEMORY_SPACE | header::IO_SPACE),
    );
}

/// Resets function `bdf` (§6.6.2): bus mastering and decoding off; if it can do FLR, waits
/// (bounded) for Transactions Pending to clear, sets Initiate FLR, waits
/// [`FLR_COMPLETION_MS`], then polls until its Vendor ID reads valid again. FLR clears BARs
/// and COMMAND: save them first ([`SavedFunction`]).
pub fn flr(
    config: &mut dyn ConfigSpace,
    clock: &dyn Clock,
    bdf: Bdf,
) -> Result<ResetOutcome, ResetError> {
    if vendor_absent(config.read(bdf, header::VENDOR_DEVICE)) {
        return Err(ResetError::Absent(bdf));
    }
    quiesce(config, bdf);
    let Some(express) = find_capability(config, bdf, capability::PCI_EXPRESS) else {
        return Ok(ResetOutcome::NoFlr);
    };
    let capabilities = config.read(bdf, express + express::DEVICE_CAPABILITIES);
    if capabilities & express::FLR_CAPABLE == 0 {
        return Ok(ResetOutcome::NoFlr);
    }
    let control = express + express::DEVICE_CONTROL_STATUS;
    let pending_cleared = wait(clock, PENDING_TIMEOUT_MS, || {
        config.read(bdf, control) & express::TRANSACTIONS_PENDING == 0
    });
    // Device Status bits are cleared by writing ones: write only Device Control.
    let value = config.read(bdf, control) & 0xffff;
    config.write(bdf, control, value | express::INITIATE_FLR);
    let start = clock.now_ms();
    while clock.now_ms().saturating_sub(start) < FLR_COMPLETION_MS {
        clock.pause();
    }
    if !wait(clock, READY_TIMEOUT_MS, || {
        !vendor_absent(config.read(bdf, header::VENDOR_DEVICE))
    }) {
        return Err(ResetError::NotBackAfterFlr(bdf));
    }
    Ok(ResetOutcome::Flr { pending_cleared })
}

/// What the hypervisor programmed into a type-0 function, to put back after a reset: the six
/// BAR dwords, COMMAND, and Device Control (without Initiate FLR, and without Enable No
/// Snoop: see [`crate::pci::disable_no_snoop`]) when it has a PCIe capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SavedFunction {
    pub bdf: Bdf,
    pub bars: [u32; 6],
    pub command: u16,
    /// Offset of Device Control and its value.
    pub device_control: Option<(u16, u16)>,
}

impl SavedFunction {
    pub fn save(config: &mut dyn ConfigSpace, bdf: Bdf) -> SavedFunction {
        let mut bars = [0; 6];
        for (i, bar) in bars.iter_mut().enumerate() {
            *bar = config.read(bdf, header::BAR0 + 4 * i as u16);
        }
        let device_control = find_capability(config, bdf, capability::PCI_EXPRESS).map(|at| {
            let offset = at + express::DEVICE_CONTROL_STATUS;
            let value = config.read(bdf, offset) as u16
                & !(express::INITIATE_FLR as u16 | express::ENABLE_NO_SNOOP as u16);
            (offset, value)
        });
        SavedFunction {
            bdf,
            bars,
            command: config.read(bdf, header::COMMAND) as u16,
            device_control,
        }
    }

    /// Writes everything back: the BARs and Device Control, then COMMAND with `enable`'s bits
    /// of the saved COMMAND kept and memory decoding and bus mastering otherwise off (pass
    /// `header::MEMORY_SPACE | header::BUS_MASTER` to restore them exactly as saved).
    pub fn restore(&self, config: &mut dyn ConfigSpace, enable: u32) {
        let bdf = self.bdf;
        for (i, bar) in self.bars.iter().enumerate() {
            config.write(bdf, header::BAR0 + 4 * i as u16, *bar);
        }
        if let Some((offset, value)) = self.device_control {
            config.write(bdf, offset, u32::from(value));
        }
        let switched = header::MEMORY_SPACE | header::BUS_MASTER;
        let command = u32::from(self.command) & !(switched & !enable);
        config.write(bdf, header::COMMAND, command);
    }
}

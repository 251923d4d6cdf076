//! Accesses that may fault and then return the fault instead of parking the
//! CPU: the `probe_guarded_*` routines in entry.rs, whose synchronous
//! exceptions the EL1 vector turns into an error return. The GIC attacks use
//! them for registers that may be absent (natively: an external abort past
//! QEMU's redistributors, UNDEFINED ICC registers without a GICv3 CPU
//! interface). Under the microvisor an access outside the slice's devices
//! stops the slice before anything returns.

use aarch64_cpu::registers::{FAR_EL1, Readable};

pub use microvisor_probe::fault::Fault;

use super::mmu;

/// x0/x1 of a guarded routine (AAPCS64 returns a 16-byte composite there).
#[repr(C)]
struct Outcome {
    value: u64,
    fault: u64,
}

/// Set in [`Outcome::fault`] by `probe_guarded_fault`, with ESR_EL1 below.
const FAULTED: u64 = 1 << 63;

unsafe extern "C" {
    fn probe_guarded_read32(addr: u64) -> Outcome;
    fn probe_guarded_read64(addr: u64) -> Outcome;
    fn probe_guarded_write32(addr: u64, value: u32) -> Outcome;
    fn probe_guarded_write64(addr: u64, value: u64) -> Outcome;
    fn probe_guarded_read8(addr: u64) -> Outcome;
    fn probe_guarded_read16(addr: u64) -> Outcome;
    fn probe_guarded_write8(addr: u64, value: u8) -> Outcome;
    fn probe_guarded_write16(addr: u64, value: u16) -> Outcome;
    fn probe_guarded_read_icc_sre_el1() -> Outcome;
    fn probe_guarded_write_icc_sre_el1(value: u64) -> Outcome;
    fn probe_guarded_write_icc_sgi1r_el1(value: u64) -> Outcome;
}

fn result(outcome: Outcome) -> Result<u64, Fault> {
    if outcome.fault & FAULTED != 0 {
        Err(Fault::Exception {
            esr: outcome.fault & !FAULTED,
            far: FAR_EL1.get(),
        })
    } else {
        Ok(outcome.value)
    }
}

fn map(addr: u64) -> Result<(), Fault> {
    if mmu::map_for_access(addr) {
        Ok(())
    } else {
        Err(Fault::Unaddressable)
    }
}

/// 4-byte read at `addr & !3`.
///
/// # Safety
/// The address must not hold any Rust object (it is a device register, or
/// memory outside the probe's footprint that nothing else uses).
pub unsafe fn read32(addr: u64) -> Result<u32, Fault> {
    let addr = addr & !3;
    map(addr)?;
    // SAFETY: the address is mapped (above) and aligned; per the caller's
    // contract it aliases no Rust object. A fault returns through
    // probe_guarded_fault; the routine touches nothing else.
    result(unsafe { probe_guarded_read32(addr) }).map(|v| v as u32)
}

/// 1-byte read at `addr` (virtio common configuration fields have their own widths).
///
/// # Safety
/// As for [`read32`].
pub unsafe fn read8(addr: u64) -> Result<u8, Fault> {
    map(addr)?;
    // SAFETY: as in `read32`; a byte access is always aligned.
    result(unsafe { probe_guarded_read8(addr) }).map(|v| v as u8)
}

/// 2-byte read at `addr & !1`.
///
/// # Safety
/// As for [`read32`].
pub unsafe fn read16(addr: u64) -> Result<u16, Fault> {
    let addr = addr & !1;
    map(addr)?;
    // SAFETY: as in `read32`, 2-byte aligned.
    result(unsafe { probe_guarded_read16(addr) }).map(|v| v as u16)
}

/// 1-byte write at `addr`.
///
/// # Safety
/// As for [`write32`].
pub unsafe fn write8(addr: u64, value: u8) -> Result<(), Fault> {
    map(addr)?;
    // SAFETY: as in `write32`.
    result(unsafe { probe_guarded_write8(addr, value) }).map(drop)
}

/// 2-byte write at `addr & !1`.
///
/// # Safety
/// As for [`write32`].
pub unsafe fn write16(addr: u64, value: u16) -> Result<(), Fault> {
    let addr = addr & !1;
    map(addr)?;
    // SAFETY: as in `write32`, 2-byte aligned.
    result(unsafe { probe_guarded_write16(addr, value) }).map(drop)
}

/// 8-byte read at `addr & !7`.
///
/// # Safety
/// As for [`read32`].
pub unsafe fn read64(addr: u64) -> Result<u64, Fault> {
    let addr = addr & !7;
    map(addr)?;
    // SAFETY: as in `read32`, 8-byte aligned.
    result(unsafe { probe_guarded_read64(addr) })
}

/// 4-byte write at `addr & !3`.
///
/// # Safety
/// As for [`read32`]: no Rust object changes under the compiler's feet.
pub unsafe fn write32(addr: u64, value: u32) -> Result<(), Fault> {
    let addr = addr & !3;
    map(addr)?;
    // SAFETY: as in `read32`; the store hits no Rust object.
    result(unsafe { probe_guarded_write32(addr, value) }).map(drop)
}

/// 8-byte write at `addr & !7`.
///
/// # Safety
/// As for [`write32`].
pub unsafe fn write64(addr: u64, value: u64) -> Result<(), Fault> {
    let addr = addr & !7;
    map(addr)?;
    // SAFETY: as in `write32`, 8-byte aligned.
    result(unsafe { probe_guarded_write64(addr, value) }).map(drop)
}

/// Reads ICC_SRE_EL1 (UNDEFINED without a GICv3 CPU interface).
pub fn read_icc_sre_el1() -> Result<u64, Fault> {
    // SAFETY: a system-register read; it touches no memory, and a trap
    // returns through probe_guarded_fault.
    result(unsafe { probe_guarded_read_icc_sre_el1() })
}

/// Writes ICC_SRE_EL1, then ISB.
pub fn write_icc_sre_el1(value: u64) -> Result<(), Fault> {
    // SAFETY: enabling the GIC system-register interface changes which
    // registers later ICC accesses reach, nothing in memory.
    result(unsafe { probe_guarded_write_icc_sre_el1(value) }).map(drop)
}

/// Writes ICC_SGI1R_EL1 (DSB ISHST before, ISB after): generates an SGI.
pub fn write_icc_sgi1r_el1(value: u64) -> Result<(), Fault> {
    // SAFETY: generating an SGI touches no memory of ours; an IRQ it causes
    // is taken only where IRQs are unmasked (see bare/gic.rs).
    result(unsafe { probe_guarded_write_icc_sgi1r_el1(value) }).map(drop)
}

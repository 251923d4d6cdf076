//! Accesses that may fault and then return the fault instead of parking the
//! CPU: the `probe_guarded_*` routines in entry.rs, whose synchronous
//! exceptions the EL1 vector turns into an error return. The GIC attacks use
//! them for registers that may be absent (natively: an external abort past
//! QEMU's redistributors, UNDEFINED ICC registers without a GICv3 CPU
//! interface). Under the microvisor an access outside the slice's RAM and
//! devices takes the same synchronous external abort as on hardware (the
//! default `on-fault = "exception"`) and returns here; under
//! `on-fault = "stop"` the slice stops before anything returns.

use aarch64_cpu::registers::{FAR_EL1, Readable, SCTLR_EL1};

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
    fn probe_guarded_read_impdef() -> Outcome;
    fn probe_guarded_patched(value: u64) -> Outcome;
    fn probe_guarded_hvc(fid: u64, a1: u64, a2: u64, a3: u64) -> Outcome;
    fn probe_guarded_smc(fid: u64, a1: u64, a2: u64, a3: u64) -> Outcome;
    fn probe_guarded_ldp(addr: u64) -> Outcome;
    fn probe_guarded_stp(addr: u64, value: u64) -> Outcome;
    fn probe_guarded_ldar(addr: u64) -> Outcome;
    fn probe_guarded_stlr(addr: u64, value: u64) -> Outcome;
    fn probe_guarded_ldxr(addr: u64) -> Outcome;
    fn probe_guarded_stxr(addr: u64, value: u64) -> Outcome;
    fn probe_guarded_fetch(addr: u64) -> Outcome;
    fn probe_guarded_mmu_off_read64(addr: u64, unused: u64, off: u64, on: u64) -> Outcome;
    fn probe_guarded_mmu_off_write64(addr: u64, value: u64, off: u64, on: u64) -> Outcome;
    fn probe_guarded_mmu_off_read32(addr: u64, unused: u64, off: u64, on: u64) -> Outcome;
    fn probe_guarded_mmu_off_write32(addr: u64, value: u64, off: u64, on: u64) -> Outcome;
    fn probe_guarded_mmu_off_fetch(addr: u64, unused: u64, off: u64, on: u64) -> Outcome;
    fn probe_el0_call(entry: u64, x0: u64, x1: u64) -> Outcome;
    fn probe_el0_ldr();
    fn probe_el0_str();
    fn probe_el0_mrs();
    fn probe_el0_hvc();
    fn probe_el0_smc();
    fn probe_el0_sgi();
    /// The one instruction `probe_guarded_patched` executes (entry.rs).
    static mut probe_guarded_slot: u32;
}

/// A sweep access that needs more than a plain load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// LDP x0, x2.
    Ldp,
    /// STP of the value twice.
    Stp,
    /// LDAR.
    Ldar,
    /// STLR.
    Stlr,
    /// LDXR (then CLREX).
    Ldxr,
    /// CLREX, then STXR: returns its status.
    Stxr,
    /// BLR to the address.
    Fetch,
}

/// `special` at `addr` (mapped first); the value loaded, STXR's status, or 0.
///
/// # Safety
/// As for [`write64`]; a fetch must aim at an address that cannot hold code the probe could
/// run (nothing backs it, so it faults).
pub unsafe fn special(special: Special, addr: u64, value: u64) -> Result<u64, Fault> {
    map(addr)?;
    // SAFETY: the address is mapped and, per the caller's contract, aliases no Rust object;
    // each routine is a leaf (the fetch one saves x30 in x2) whose fault returns through
    // probe_guarded_fault.
    result(unsafe {
        match special {
            Special::Ldp => probe_guarded_ldp(addr & !15),
            Special::Stp => probe_guarded_stp(addr & !15, value),
            Special::Ldar => probe_guarded_ldar(addr & !7),
            Special::Stlr => probe_guarded_stlr(addr & !7, value),
            Special::Ldxr => probe_guarded_ldxr(addr & !7),
            Special::Stxr => probe_guarded_stxr(addr & !7, value),
            Special::Fetch => probe_guarded_fetch(addr & !3),
        }
    })
}

/// A plain access with the stage-1 MMU off on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuOff {
    /// LDR x.
    Read64,
    /// STR x.
    Write64,
    /// LDR w.
    Read32,
    /// STR w.
    Write32,
    /// BLR.
    Fetch,
}

/// `access` at `addr` with SCTLR_EL1.M cleared for the one access (and put back, also when it
/// faults).
///
/// # Safety
/// As for [`special`]; the caller runs with interrupts masked (they are, outside the probe's
/// own short windows).
pub unsafe fn mmu_off(access: MmuOff, addr: u64, value: u64) -> Result<u64, Fault> {
    let on = SCTLR_EL1.get();
    let off = on & !1;
    // SAFETY: the routines touch only the target while the MMU is off (no stack, the code is
    // identity mapped, so it runs at the same address); probe_guarded_fault restores
    // SCTLR_EL1 from x3 if a fault left the MMU off.
    result(unsafe {
        match access {
            MmuOff::Read64 => probe_guarded_mmu_off_read64(addr & !7, 0, off, on),
            MmuOff::Write64 => probe_guarded_mmu_off_write64(addr & !7, value, off, on),
            MmuOff::Read32 => probe_guarded_mmu_off_read32(addr & !3, 0, off, on),
            MmuOff::Write32 => probe_guarded_mmu_off_write32(addr & !3, value, off, on),
            MmuOff::Fetch => probe_guarded_mmu_off_fetch(addr & !3, 0, off, on),
        }
    })
}

/// An SMCCC call through `hvc #0` (`smc` false) or `smc #0`, guarded: where nothing answers
/// the conduit the instruction is UNDEFINED, and that comes back as a fault.
pub fn smccc(smc: bool, fid: u64, a1: u64, a2: u64, a3: u64) -> Result<i64, Fault> {
    // SAFETY: an SMCCC call: the callee may clobber x0-x17, all caller-saved under the C ABI
    // the routine is called with; it accesses no memory of ours (none of the swept functions
    // is defined to).
    result(unsafe {
        if smc {
            probe_guarded_smc(fid, a1, a2, a3)
        } else {
            probe_guarded_hvc(fid, a1, a2, a3)
        }
    })
    .map(|x0| x0 as i64)
}

/// The EL0 code pieces of entry.rs, each one instruction and SVC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum El0Code {
    /// LDR x0, [x0].
    Ldr,
    /// STR x1, [x0].
    Str,
    /// MRS x0, S3_0_C15_C0_0.
    Mrs,
    /// HVC #0.
    Hvc,
    /// SMC #0.
    Smc,
    /// MSR ICC_SGI1R_EL1, XZR.
    Sgi,
}

/// Physical (= EL1 virtual) address of `code`.
pub fn el0_code(code: El0Code) -> u64 {
    let f: unsafe extern "C" fn() = match code {
        El0Code::Ldr => probe_el0_ldr,
        El0Code::Str => probe_el0_str,
        El0Code::Mrs => probe_el0_mrs,
        El0Code::Hvc => probe_el0_hvc,
        El0Code::Smc => probe_el0_smc,
        El0Code::Sgi => probe_el0_sgi,
    };
    f as usize as u64
}

/// Runs EL0 code at the EL0 address `entry` with x0, x1 = `x0`, `x1`, interrupts masked:
/// its x0 when it ends with SVC, else the exception it took (ESR_EL1, FAR_EL1).
///
/// # Safety
/// `entry` must be EL0-executable code of the probe that ends with SVC (or an address whose
/// fetch faults), and whatever it accesses must hold no Rust object.
pub unsafe fn el0(entry: u64, x0: u64, x1: u64) -> Result<u64, Fault> {
    // SAFETY: probe_el0_call saves x29/x30 on our stack, drops to EL0 with DAIF masked and
    // comes back through the sync-el0 vector to its own epilogue; EL0 code clobbers only x0/x1,
    // the vector x9/x10, all caller-saved. Per the caller's contract nothing of ours is touched.
    result(unsafe { probe_el0_call(entry, x0, x1) })
}

/// Address of the patched instruction slot.
pub fn slot_address() -> u64 {
    core::ptr::addr_of_mut!(probe_guarded_slot) as u64
}

/// Writes `instruction` into the slot and makes it visible to instruction fetches of every
/// CPU (clean to PoU, invalidate the I-cache line, ISB).
pub fn patch(instruction: u32) {
    let slot = slot_address();
    // SAFETY: the slot is a word of the probe's text that only `probe_guarded_patched`
    // executes; the text is mapped writable (Normal, EL1 RW, no WXN). The maintenance makes
    // the new word visible to instruction fetches; no Rust object lives there.
    unsafe {
        (slot as *mut u32).write_volatile(instruction);
        core::arch::asm!(
            "dc cvau, {a}",
            "dsb ish",
            "ic ivau, {a}",
            "dsb ish",
            "isb",
            a = in(reg) slot,
            options(nostack, preserves_flags)
        );
    }
}

/// Executes the slot's instruction with x0 = `value`; returns x0 afterwards.
pub fn run_patched(value: u64) -> Result<u64, Fault> {
    // SAFETY: the slot holds an MRS/MSR written by [`patch`] (or a NOP): it touches no memory;
    // what the register access does is the attack, and a trap returns through
    // probe_guarded_fault.
    result(unsafe { probe_guarded_patched(value) })
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

/// Reads the IMPLEMENTATION DEFINED register S3_0_C15_C0_0 (HCR_EL2.TIDCP traps it to a
/// hypervisor; a core without it gives Undefined Instruction).
pub fn read_impdef_sysreg() -> Result<u64, Fault> {
    // SAFETY: a system-register read; it touches no memory, and a trap
    // returns through probe_guarded_fault.
    result(unsafe { probe_guarded_read_impdef() })
}

/// Writes ICC_SGI1R_EL1 (DSB ISHST before, ISB after): generates an SGI.
pub fn write_icc_sgi1r_el1(value: u64) -> Result<(), Fault> {
    // SAFETY: generating an SGI touches no memory of ours; an IRQ it causes
    // is taken only where IRQs are unmasked (see bare/gic.rs).
    result(unsafe { probe_guarded_write_icc_sgi1r_el1(value) }).map(drop)
}

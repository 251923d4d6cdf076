//! The core's vector units for the hypervisor's own bulk work (`microvisor_logic::simd` says
//! what may be used): SHA-256 with the SHA-256 instructions (FEAT_SHA256, Arm ARM C7.2.268-271)
//! and the RAM scrub with SVE loads, each behind a safe function that falls back to plain
//! code where the core lacks the feature or cannot use it right now.
//!
//! The hypervisor is built soft-float: the compiler never touches the FP/SIMD/SVE registers,
//! and a guest's may be live on the core (a vCPU's registers stay in the core while EL2
//! handles its exits). Every routine here therefore stores the registers it uses on its
//! stack first and loads them back before it returns, and puts CPTR_EL2 back as it found it.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{CPTR_EL2, ID_AA64ISAR0_EL1, ID_AA64PFR0_EL1, ID_AA64PFR1_EL1};
use tock_registers::interfaces::{Readable, Writeable};

use microvisor_logic::simd::{SVCR_SM, SimdFeatures};
use microvisor_plan::sha256::{self, Compress, ROUND_CONSTANTS};

/// This core's vector features.
pub fn features() -> SimdFeatures {
    SimdFeatures::from_id_registers(
        ID_AA64PFR0_EL1.get(),
        ID_AA64PFR1_EL1.get(),
        ID_AA64ISAR0_EL1.get(),
    )
}

/// SVCR (Arm ARM D24.2.168): PSTATE.SM and PSTATE.ZA. Readable at EL2 when the core has SME
/// and CPTR_EL2.TSM is clear.
fn svcr() -> u64 {
    let value;
    // SAFETY: only called within an [`Access`], which checked that the core has SME and
    // cleared CPTR_EL2.TSM; reading SVCR has no side effects.
    unsafe { core::arch::asm!("mrs {}, S3_3_C4_C2_2", out(reg) value, options(nomem, nostack)) };
    value
}

/// Permission to execute Advanced SIMD (and, if asked for, SVE) instructions at EL2 on this
/// core, in non-streaming mode, until dropped: CPTR_EL2's traps opened as needed and put back
/// on drop.
struct Access {
    /// CPTR_EL2 as it was, when it had to change.
    restore: Option<u64>,
}

impl Access {
    /// `None` when the core lacks the feature or is in Streaming SVE mode (a guest's
    /// PSTATE.SM stays set while EL2 runs; Advanced SIMD is illegal there).
    fn open(features: SimdFeatures, sve: bool) -> Option<Access> {
        let current = CPTR_EL2.get();
        let wanted = features.cptr_for(current, sve)?;
        let access = Access {
            restore: (wanted != current).then_some(current),
        };
        if access.restore.is_some() {
            CPTR_EL2.set(wanted);
            barrier::isb(barrier::SY);
        }
        if features.sme && svcr() & SVCR_SM != 0 {
            return None;
        }
        Some(access)
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        if let Some(cptr) = self.restore {
            CPTR_EL2.set(cptr);
            barrier::isb(barrier::SY);
        }
    }
}

/// Zeroes the vector state a guest may have left on this core: Streaming SVE mode and ZA off
/// (SMSTOP, which zeroes the Z, P and FFR registers as it leaves streaming mode) and
/// TPIDR2_EL0, V0-V31 (an Advanced SIMD write also zeroes the rest of its Z register),
/// P0-P15 and FFR where SVE is present, FPCR and FPSR. Called whenever a vCPU's EL1 state is reset (`virt::reset_el1`).
pub fn clear_guest_vector_state() {
    let features = features();
    if features.sme {
        let current = CPTR_EL2.get();
        let open = current & !CPTR_EL2_TSM;
        if open != current {
            CPTR_EL2.set(open);
            barrier::isb(barrier::SY);
        }
        // SAFETY: the core has SME and CPTR_EL2.TSM is clear; SMSTOP only leaves streaming
        // mode and turns ZA off (PSTATE.SM and PSTATE.ZA), touching no memory.
        unsafe {
            core::arch::asm!(".arch_extension sme", "smstop", options(nomem, nostack));
        }
        // SAFETY: TPIDR2_EL0 exists with SME; it holds a pointer of the guest's (its lazy ZA
        // save buffer) and nothing the hypervisor uses.
        unsafe { core::arch::asm!("msr S3_3_C13_C0_5, xzr", options(nomem, nostack)) };
        if open != current {
            CPTR_EL2.set(current);
            barrier::isb(barrier::SY);
        }
    }
    let Some(_access) = Access::open(features, features.sve) else {
        return;
    };
    // SAFETY: Advanced SIMD is available and not trapped (`Access`); only vector and FP
    // control registers are written, no memory.
    unsafe {
        core::arch::asm!(
            ".arch_extension simd",
            ".arch_extension fp",
            "movi v0.16b, #0",
            "movi v1.16b, #0",
            "movi v2.16b, #0",
            "movi v3.16b, #0",
            "movi v4.16b, #0",
            "movi v5.16b, #0",
            "movi v6.16b, #0",
            "movi v7.16b, #0",
            "movi v8.16b, #0",
            "movi v9.16b, #0",
            "movi v10.16b, #0",
            "movi v11.16b, #0",
            "movi v12.16b, #0",
            "movi v13.16b, #0",
            "movi v14.16b, #0",
            "movi v15.16b, #0",
            "movi v16.16b, #0",
            "movi v17.16b, #0",
            "movi v18.16b, #0",
            "movi v19.16b, #0",
            "movi v20.16b, #0",
            "movi v21.16b, #0",
            "movi v22.16b, #0",
            "movi v23.16b, #0",
            "movi v24.16b, #0",
            "movi v25.16b, #0",
            "movi v26.16b, #0",
            "movi v27.16b, #0",
            "movi v28.16b, #0",
            "movi v29.16b, #0",
            "movi v30.16b, #0",
            "movi v31.16b, #0",
            "msr fpcr, xzr",
            "msr fpsr, xzr",
            options(nomem, nostack),
        );
    }
    if features.sve {
        // SAFETY: SVE is available and not trapped (`Access` asked for it); only predicate
        // registers and FFR are written.
        unsafe {
            core::arch::asm!(
                ".arch_extension sve",
                "pfalse p0.b",
                "pfalse p1.b",
                "pfalse p2.b",
                "pfalse p3.b",
                "pfalse p4.b",
                "pfalse p5.b",
                "pfalse p6.b",
                "pfalse p7.b",
                "pfalse p8.b",
                "pfalse p9.b",
                "pfalse p10.b",
                "pfalse p11.b",
                "pfalse p12.b",
                "pfalse p13.b",
                "pfalse p14.b",
                "pfalse p15.b",
                "wrffr p0.b",
                options(nomem, nostack),
            );
        }
    }
}

/// CPTR_EL2.TSM (E2H = 0): SME traps.
const CPTR_EL2_TSM: u64 = 1 << 12;

/// SHA-256's compression function with the CPU's SHA-256 instructions, when this core has them
/// and they give the same result as the software one on a test block (checked here, once per
/// call: a few hundred instructions); `None` otherwise. Where the instructions cannot be used
/// at the moment of a call (Streaming SVE mode), that call uses the software function.
pub fn sha256_compression() -> Option<Compress> {
    if !features().sha256 {
        return None;
    }
    let block: [[u8; 64]; 1] = [core::array::from_fn(|i| (i as u8).wrapping_mul(151))];
    let (mut hardware, mut software) = (sha256::INITIAL_STATE, sha256::INITIAL_STATE);
    sha256_with_instructions(&mut hardware, &block);
    sha256::software(&mut software, &block);
    (hardware == software).then_some(sha256_with_instructions as Compress)
}

/// The block loop of the SHA-256 compression with the SHA-256 instructions: x registers
/// `state` (8 words), `data` (blocks), `n` (their count, not 0) and `k` (the 64 round
/// constants); uses v0-v9 and v16-v19. Per block: the message words byte-swapped, 16 groups of
/// four rounds (SHA256H, SHA256H2), the message schedule for the next 48 words (SHA256SU0,
/// SHA256SU1), the state added back.
macro_rules! sha256_block_loop {
    () => {
        concat!(
            "ld1 {{v0.4s, v1.4s}}, [{state}]\n",
            "2:\n",
            "ld1 {{v4.16b-v7.16b}}, [{data}], #64\n",
            "rev32 v4.16b, v4.16b\n",
            "rev32 v5.16b, v5.16b\n",
            "rev32 v6.16b, v6.16b\n",
            "rev32 v7.16b, v7.16b\n",
            "mov v2.16b, v0.16b\n",
            "mov v3.16b, v1.16b\n",
            sha256_sixteen_rounds_and_schedule!(),
            sha256_sixteen_rounds_and_schedule!(),
            sha256_sixteen_rounds_and_schedule!(),
            "ld1 {{v16.4s-v19.4s}}, [{k}], #64\n",
            sha256_four_rounds!(4, 16),
            sha256_four_rounds!(5, 17),
            sha256_four_rounds!(6, 18),
            sha256_four_rounds!(7, 19),
            "add v0.4s, v0.4s, v2.4s\n",
            "add v1.4s, v1.4s, v3.4s\n",
            "sub {k}, {k}, #256\n",
            "subs {n}, {n}, #1\n",
            "b.ne 2b\n",
            "st1 {{v0.4s, v1.4s}}, [{state}]\n",
        )
    };
}

/// Four rounds on the state in v0/v1 with message words v`w` plus round constants v`k`.
macro_rules! sha256_four_rounds {
    ($w:literal, $k:literal) => {
        concat!(
            "add v8.4s, v",
            $w,
            ".4s, v",
            $k,
            ".4s\n",
            "mov v9.16b, v0.16b\n",
            "sha256h q0, q1, v8.4s\n",
            "sha256h2 q1, q9, v8.4s\n",
        )
    };
}

/// Sixteen rounds with the words in v4-v7 and the next 16 round constants (loaded into
/// v16-v19), each group of four followed by the schedule of its words' successors.
macro_rules! sha256_sixteen_rounds_and_schedule {
    () => {
        concat!(
            "ld1 {{v16.4s-v19.4s}}, [{k}], #64\n",
            sha256_four_rounds_and_schedule!(4, 5, 6, 7, 16),
            sha256_four_rounds_and_schedule!(5, 6, 7, 4, 17),
            sha256_four_rounds_and_schedule!(6, 7, 4, 5, 18),
            sha256_four_rounds_and_schedule!(7, 4, 5, 6, 19),
        )
    };
}

/// [`sha256_four_rounds`], then v`w` becomes the message words 16 on (SHA256SU0 with v`x`,
/// SHA256SU1 with v`y` and v`z`).
macro_rules! sha256_four_rounds_and_schedule {
    ($w:literal, $x:literal, $y:literal, $z:literal, $k:literal) => {
        concat!(
            sha256_four_rounds!($w, $k),
            "sha256su0 v",
            $w,
            ".4s, v",
            $x,
            ".4s\n",
            "sha256su1 v",
            $w,
            ".4s, v",
            $y,
            ".4s, v",
            $z,
            ".4s\n",
        )
    };
}

/// `op` (`str` or `ldr`) of the vector registers the SHA-256 routine uses (z0-z9, z16-z19),
/// whole, to or from `{save}`.
macro_rules! sha256_z_registers {
    ($op:literal) => {
        concat!(
            $op,
            " z0, [{save}, #0, mul vl]\n",
            $op,
            " z1, [{save}, #1, mul vl]\n",
            $op,
            " z2, [{save}, #2, mul vl]\n",
            $op,
            " z3, [{save}, #3, mul vl]\n",
            $op,
            " z4, [{save}, #4, mul vl]\n",
            $op,
            " z5, [{save}, #5, mul vl]\n",
            $op,
            " z6, [{save}, #6, mul vl]\n",
            $op,
            " z7, [{save}, #7, mul vl]\n",
            $op,
            " z8, [{save}, #8, mul vl]\n",
            $op,
            " z9, [{save}, #9, mul vl]\n",
            $op,
            " z16, [{save}, #10, mul vl]\n",
            $op,
            " z17, [{save}, #11, mul vl]\n",
            $op,
            " z18, [{save}, #12, mul vl]\n",
            $op,
            " z19, [{save}, #13, mul vl]\n",
        )
    };
}

/// `op` (`stp` or `ldp`) of the same registers as Q registers, to or from `{save}`.
macro_rules! sha256_q_registers {
    ($op:literal) => {
        concat!(
            $op,
            " q0, q1, [{save}, #0]\n",
            $op,
            " q2, q3, [{save}, #32]\n",
            $op,
            " q4, q5, [{save}, #64]\n",
            $op,
            " q6, q7, [{save}, #96]\n",
            $op,
            " q8, q9, [{save}, #128]\n",
            $op,
            " q16, q17, [{save}, #160]\n",
            $op,
            " q18, q19, [{save}, #192]\n",
        )
    };
}

/// Bytes of the save area for the SHA-256 routine: the 14 vector registers it uses, as Z
/// registers at the largest vector length the architecture allows (2048 bits).
const SHA256_SAVE_BYTES: usize = 14 * 256;

/// [`Compress`] with the SHA-256 instructions (the software function if they cannot be used).
fn sha256_with_instructions(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
    let features = features();
    // With SVE, an Advanced SIMD write clears the Z register's bits above 128: the registers
    // are saved and restored whole, as Z registers, so SVE must be usable too.
    let Some(_access) = Access::open(features, features.sve).filter(|_| features.sha256) else {
        return sha256::software(state, blocks);
    };
    if blocks.is_empty() {
        return;
    }
    let mut save = [0u8; SHA256_SAVE_BYTES];
    if features.sve {
        // SAFETY: the instructions and SVE are available and not trapped (`Access`). The
        // routine reads `blocks.len()` whole blocks at `blocks`, the 64 round constants and
        // the state, writes the state and `save` (14 Z registers of at most 256 bytes), and
        // leaves every vector register it used (z0-z9, z16-z19) as it found it. The pointers
        // come from references alive for the call.
        unsafe {
            core::arch::asm!(
                ".arch_extension fp",
                ".arch_extension simd",
                ".arch_extension sha2",
                ".arch_extension sve",
                sha256_z_registers!("str"),
                sha256_block_loop!(),
                sha256_z_registers!("ldr"),
                state = in(reg) state.as_mut_ptr(),
                data = inout(reg) blocks.as_ptr() => _,
                n = inout(reg) blocks.len() => _,
                k = inout(reg) ROUND_CONSTANTS.as_ptr() => _,
                save = in(reg) save.as_mut_ptr(),
                options(nostack),
            );
        }
    } else {
        // SAFETY: as above, with the registers saved and restored as Q registers (the whole
        // of them without SVE): 14 x 16 bytes of `save`.
        unsafe {
            core::arch::asm!(
                ".arch_extension fp",
                ".arch_extension simd",
                ".arch_extension sha2",
                sha256_q_registers!("stp"),
                sha256_block_loop!(),
                sha256_q_registers!("ldp"),
                state = in(reg) state.as_mut_ptr(),
                data = inout(reg) blocks.as_ptr() => _,
                n = inout(reg) blocks.len() => _,
                k = inout(reg) ROUND_CONSTANTS.as_ptr() => _,
                save = in(reg) save.as_mut_ptr(),
                options(nostack),
            );
        }
    }
}

/// Bytes of the save area for the SVE scrub: z0-z8 and p0-p1 at the largest vector length the
/// architecture allows (2048 bits).
const SVE_SAVE_BYTES: usize = 9 * 256 + 2 * 32;

/// Scrubs with SVE: reads `[dst, dst + len)` eight vectors at a time and writes zeros over
/// each group of eight that is not all zero. Covers the largest multiple of eight vector
/// lengths that fits in `len` and returns (bytes covered, 64-byte blocks written), or `None`
/// when SVE cannot be used on this core now.
///
/// # Safety
/// `dst` must be valid for reads and writes of `len` bytes of Normal memory that no Rust
/// reference covers.
pub unsafe fn scrub_with_sve(dst: u64, len: u64) -> Option<(u64, u64)> {
    let _access = Access::open(features(), true)?;
    let vector: u64;
    // SAFETY: SVE is available and not trapped (`Access`); RDVL only reads the vector length.
    unsafe {
        core::arch::asm!(
            ".arch_extension sve",
            "rdvl {}, #1",
            out(reg) vector,
            options(nomem, nostack),
        )
    };
    let group = 8 * vector;
    let groups = len / group.max(1);
    if vector == 0 || vector > 256 || groups == 0 {
        return Some((0, 0));
    }
    let mut save = [0u8; SVE_SAVE_BYTES];
    let mut written: u64 = 0;
    // SAFETY: SVE is available and not trapped (`Access`). The loop reads and writes exactly
    // `groups * 8` vectors from `dst`, inside the range the caller vouches for. z0-z8 and
    // p0-p1 are stored into `save` (9 vectors and 2 predicates of at most 256 and 32 bytes)
    // first and loaded back last.
    unsafe {
        core::arch::asm!(
            ".arch_extension sve",
            "str z0, [{save}, #0, mul vl]",
            "str z1, [{save}, #1, mul vl]",
            "str z2, [{save}, #2, mul vl]",
            "str z3, [{save}, #3, mul vl]",
            "str z4, [{save}, #4, mul vl]",
            "str z5, [{save}, #5, mul vl]",
            "str z6, [{save}, #6, mul vl]",
            "str z7, [{save}, #7, mul vl]",
            "str z8, [{save}, #8, mul vl]",
            "addvl {p}, {save}, #9",
            "str p0, [{p}, #0, mul vl]",
            "str p1, [{p}, #1, mul vl]",
            "ptrue p0.d",
            "mov z8.d, #0",
            "2:",
            "ldr z0, [{dst}, #0, mul vl]",
            "ldr z1, [{dst}, #1, mul vl]",
            "ldr z2, [{dst}, #2, mul vl]",
            "ldr z3, [{dst}, #3, mul vl]",
            "ldr z4, [{dst}, #4, mul vl]",
            "ldr z5, [{dst}, #5, mul vl]",
            "ldr z6, [{dst}, #6, mul vl]",
            "ldr z7, [{dst}, #7, mul vl]",
            "orr z0.d, z0.d, z1.d",
            "orr z2.d, z2.d, z3.d",
            "orr z4.d, z4.d, z5.d",
            "orr z6.d, z6.d, z7.d",
            "orr z0.d, z0.d, z2.d",
            "orr z4.d, z4.d, z6.d",
            "orr z0.d, z0.d, z4.d",
            "cmpne p1.d, p0/z, z0.d, #0",
            "b.none 3f",
            "str z8, [{dst}, #0, mul vl]",
            "str z8, [{dst}, #1, mul vl]",
            "str z8, [{dst}, #2, mul vl]",
            "str z8, [{dst}, #3, mul vl]",
            "str z8, [{dst}, #4, mul vl]",
            "str z8, [{dst}, #5, mul vl]",
            "str z8, [{dst}, #6, mul vl]",
            "str z8, [{dst}, #7, mul vl]",
            "add {w}, {w}, #1",
            "3:",
            "addvl {dst}, {dst}, #8",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            "ldr p0, [{p}, #0, mul vl]",
            "ldr p1, [{p}, #1, mul vl]",
            "ldr z0, [{save}, #0, mul vl]",
            "ldr z1, [{save}, #1, mul vl]",
            "ldr z2, [{save}, #2, mul vl]",
            "ldr z3, [{save}, #3, mul vl]",
            "ldr z4, [{save}, #4, mul vl]",
            "ldr z5, [{save}, #5, mul vl]",
            "ldr z6, [{save}, #6, mul vl]",
            "ldr z7, [{save}, #7, mul vl]",
            "ldr z8, [{save}, #8, mul vl]",
            dst = inout(reg) dst => _,
            n = inout(reg) groups => _,
            w = inout(reg) written,
            save = in(reg) save.as_mut_ptr(),
            p = out(reg) _,
            options(nostack),
        );
    }
    Some((groups * group, written * group / 64))
}

/// Copies with SVE: eight vectors from `src` to `dst` at a time, each byte read once and
/// written once. Covers the largest multiple of eight vector lengths that fits in `len` and
/// returns the bytes covered, or `None` when SVE cannot be used on this core now.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes, the ranges must not
/// overlap, and both must be Normal memory.
pub unsafe fn copy_with_sve(dst: u64, src: u64, len: u64) -> Option<u64> {
    let _access = Access::open(features(), true)?;
    let vector: u64;
    // SAFETY: SVE is available and not trapped (`Access`); RDVL only reads the vector length.
    unsafe {
        core::arch::asm!(
            ".arch_extension sve",
            "rdvl {}, #1",
            out(reg) vector,
            options(nomem, nostack),
        )
    };
    let group = 8 * vector;
    let groups = len / group.max(1);
    if vector == 0 || vector > 256 || groups == 0 {
        return Some(0);
    }
    let mut save = [0u8; 8 * 256];
    // SAFETY: SVE is available and not trapped (`Access`). The loop reads `groups * 8`
    // vectors from `src` and writes them to `dst`, inside the ranges the caller vouches for;
    // z0-z7 are stored into `save` (8 vectors of at most 256 bytes) first and loaded back last.
    unsafe {
        core::arch::asm!(
            ".arch_extension sve",
            "str z0, [{save}, #0, mul vl]",
            "str z1, [{save}, #1, mul vl]",
            "str z2, [{save}, #2, mul vl]",
            "str z3, [{save}, #3, mul vl]",
            "str z4, [{save}, #4, mul vl]",
            "str z5, [{save}, #5, mul vl]",
            "str z6, [{save}, #6, mul vl]",
            "str z7, [{save}, #7, mul vl]",
            "2:",
            "ldr z0, [{src}, #0, mul vl]",
            "ldr z1, [{src}, #1, mul vl]",
            "ldr z2, [{src}, #2, mul vl]",
            "ldr z3, [{src}, #3, mul vl]",
            "ldr z4, [{src}, #4, mul vl]",
            "ldr z5, [{src}, #5, mul vl]",
            "ldr z6, [{src}, #6, mul vl]",
            "ldr z7, [{src}, #7, mul vl]",
            "str z0, [{dst}, #0, mul vl]",
            "str z1, [{dst}, #1, mul vl]",
            "str z2, [{dst}, #2, mul vl]",
            "str z3, [{dst}, #3, mul vl]",
            "str z4, [{dst}, #4, mul vl]",
            "str z5, [{dst}, #5, mul vl]",
            "str z6, [{dst}, #6, mul vl]",
            "str z7, [{dst}, #7, mul vl]",
            "addvl {src}, {src}, #8",
            "addvl {dst}, {dst}, #8",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            "ldr z0, [{save}, #0, mul vl]",
            "ldr z1, [{save}, #1, mul vl]",
            "ldr z2, [{save}, #2, mul vl]",
            "ldr z3, [{save}, #3, mul vl]",
            "ldr z4, [{save}, #4, mul vl]",
            "ldr z5, [{save}, #5, mul vl]",
            "ldr z6, [{save}, #6, mul vl]",
            "ldr z7, [{save}, #7, mul vl]",
            dst = inout(reg) dst => _,
            src = inout(reg) src => _,
            n = inout(reg) groups => _,
            save = in(reg) save.as_mut_ptr(),
            options(nostack),
        );
    }
    Some(groups * group)
}

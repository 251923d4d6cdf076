//! Entry code: the arm64 `Image` header (Linux `Documentation/arch/arm64/
//! booting.rst`), the boot CPU's start (move to the link address, drop to
//! EL1 if entered at EL2, stacks, bss), the secondary CPUs' PSCI entry point,
//! the EL1 exception vectors (Arm ARM D1.3.1), the handlers that report
//! unexpected exceptions and panics, the guarded accesses whose faults
//! return to the caller, and the IRQ entry.
//!
//! All the assembly of the probe except single instructions lives here.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use aarch64_cpu::registers::{ELR_EL1, ESR_EL1, FAR_EL1, Readable, TPIDR_EL1, Writeable};

use super::{console, mmu};
use microvisor_probe::MAX_CPUS;
use microvisor_probe::fault::exception_class_name;

/// Stack of the boot CPU.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;
/// Stack of each secondary CPU (indexed by vCPU number).
pub const CPU_STACK_SIZE: usize = 16 * 1024;

/// `SCTLR_EL1` bits that are RES1 in Armv8.0 (EOS, TSCXT, EIS, SPAN, nTLSMD,
/// LSMAOE); set whenever the probe writes the register.
pub const SCTLR_EL1_RES1: u64 =
    (1 << 11) | (1 << 20) | (1 << 22) | (1 << 23) | (1 << 28) | (1 << 29);

core::arch::global_asm!(
    r#"
    /* Drops from EL2 (a native boot with virtualization=on) to EL1h with
       EL1 in AArch64, counters accessible and no FP/SIMD traps, leaving a
       stub at EL2 that answers every HVC with NOT_SUPPORTED. At EL1 it
       does nothing. Clobbers x9. */
    .macro drop_to_el1
        mrs     x9, CurrentEL
        cmp     x9, #(2 << 2)
        b.ne    1f
        ldr     x9, =probe_el2_stub_vectors
        msr     vbar_el2, x9
        mov     x9, #(1 << 31)              /* HCR_EL2.RW: EL1 is AArch64 */
        msr     hcr_el2, x9
        mov     x9, #3                      /* CNTHCTL_EL2: EL1PCTEN | EL1PCEN */
        msr     cnthctl_el2, x9
        msr     cntvoff_el2, xzr
        mov     x9, #0x33ff                 /* CPTR_EL2: no traps */
        msr     cptr_el2, x9
        mrs     x9, id_aa64pfr0_el1         /* GIC system registers? */
        ubfx    x9, x9, #24, #4
        cbz     x9, 2f
        mov     x9, #0xf                    /* ICC_SRE_EL2: Enable, DIB, DFB, SRE */
        msr     icc_sre_el2, x9
        isb
    2:
        ldr     x9, ={sctlr_res1}
        msr     sctlr_el1, x9               /* EL1 MMU and caches off */
        mov     x9, #0x3c5                  /* SPSR: EL1h, DAIF masked */
        msr     spsr_el2, x9
        adr     x9, 1f
        msr     elr_el2, x9
        eret
    1:
    .endm

    /* Per-CPU setup common to all CPUs: SP_EL1, FP/SIMD on, vectors,
       TPIDR_EL1 (exception nesting flags) clear. Clobbers x9. */
    .macro cpu_setup
        msr     spsel, #1
        mov     x9, #(3 << 20)              /* CPACR_EL1.FPEN: no FP/SIMD traps */
        msr     cpacr_el1, x9
        ldr     x9, =probe_vectors
        msr     vbar_el1, x9
        msr     tpidr_el1, xzr
        isb
    .endm

    .section .text.head, "ax"
    .global _start
_start:
    /* arm64 Image header, 64 bytes. */
    b       primary_entry                   /* code0 */
    .long   0                               /* code1 */
    .quad   0                               /* text_offset */
    .quad   __image_size                    /* image_size: whole footprint */
    .quad   0xa                             /* flags: LE, 4 KiB pages, anywhere */
    .quad   0                               /* res2 */
    .quad   0                               /* res3 */
    .quad   0                               /* res4 */
    .long   0x644d5241                      /* magic "ARM\x64" */
    .long   0                               /* res5 */

primary_entry:
    mrs     x24, cntvct_el0                 /* first instruction: bench=boot */
    msr     daifset, #0xf
    mov     x19, x0                         /* DTB */
    mov     x23, #0                         /* DTB address dropped for overlap */

    /* If the DTB overlaps our footprint at the link address, moving or
       zeroing would destroy it: drop it and report that later. */
    cbz     x19, 3f
    tst     x19, #7
    b.ne    3f
    ldr     w4, [x19, #4]                   /* totalsize, big-endian */
    rev     w4, w4
    add     x4, x19, x4
    ldr     x5, =__image_start
    ldr     x6, =__image_end
    cmp     x19, x6
    b.hs    3f
    cmp     x4, x5
    b.ls    3f
    mov     x23, x19
    mov     x19, #0
3:
    /* Move the file contents to the link address if loaded elsewhere
       (QEMU loads a text_offset-0 Image at RAM + 2 MiB). PC-relative until
       the absolute branch below. */
    adr     x20, _start                     /* where we run */
    ldr     x21, =__image_start             /* where we are linked */
    cmp     x20, x21
    b.eq    6f
    ldr     x22, =__file_end
    sub     x22, x22, x21                   /* bytes, multiple of 16 */
    b.lo    4f                              /* flags of cmp x20, x21 */
    mov     x3, #0                          /* forwards: destination below */
1:  add     x6, x20, x3
    add     x7, x21, x3
    ldp     x4, x5, [x6]
    stp     x4, x5, [x7]
    add     x3, x3, #16
    cmp     x3, x22
    b.lo    1b
    b       5f
4:  mov     x3, x22                         /* backwards: destination above */
2:  sub     x3, x3, #16
    add     x6, x20, x3
    add     x7, x21, x3
    ldp     x4, x5, [x6]
    stp     x4, x5, [x7]
    cbnz    x3, 2b
5:  dsb     sy
    ic      iallu
    dsb     sy
    isb
6:  ldr     x9, =linked_entry
    br      x9

linked_entry:
    drop_to_el1
    cpu_setup
    ldr     x9, =boot_stack_top
    mov     sp, x9
    ldr     x0, =__bss_start
    ldr     x1, =__bss_end
7:  cmp     x0, x1
    b.hs    8f
    stp     xzr, xzr, [x0], #16
    b       7b
8:  mov     x0, x19                         /* DTB (0 if dropped) */
    mov     x1, x20                         /* load address */
    mov     x2, x23                         /* dropped DTB address */
    mov     x3, x24                         /* counter at the first instruction */
    bl      {boot_main}
    b       probe_park

    /* PSCI CPU_ON entry of the secondary CPUs; x0 = context id = vCPU index.
       The MMU is turned on before the stack is touched, with the register
       values the boot CPU published (cleaned to PoC) in SECONDARY_MMU, so no
       stack line is ever written with two different memory types. */
    .global probe_secondary_entry
probe_secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    drop_to_el1
    cpu_setup
    cmp     x19, #{max_cpus}
    b.hs    probe_park
    ldr     x9, ={secondary_mmu}
    ldp     x10, x11, [x9]                  /* MAIR_EL1, TCR_EL1 */
    ldp     x12, x13, [x9, #16]             /* TTBR0_EL1, SCTLR_EL1 */
    msr     mair_el1, x10
    msr     tcr_el1, x11
    msr     ttbr0_el1, x12
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    msr     sctlr_el1, x13
    isb
    ic      iallu
    dsb     nsh
    isb
    ldr     x9, =cpu_stacks
    add     x10, x19, #1
    mov     x11, #{cpu_stack_size}
    madd    x9, x10, x11, x9
    mov     sp, x9
    mov     x0, x19
    bl      {secondary_main}
    b       probe_park

    /* Parks a CPU for good; also the entry point handed out by the
       cpu-on-outside attack, so a CPU started there does nothing. */
    .global probe_park
probe_park:
    msr     daifset, #0xf
9:  wfi
    b       9b

    /* EL1 vector table: 16 entries of 0x80 bytes; x0 = entry index. Two
       entries differ: a synchronous exception at EL1h taken by an
       instruction between probe_guarded_start and probe_guarded_end, or
       while x30 points there (an instruction fetch a guarded routine made
       with BLR), returns to probe_guarded_fault (clobbering x9, x10: the
       guarded routines are called with the C ABI, for which both are
       scratch), and an IRQ at EL1h goes to probe_irq. */
    .section .text.vectors, "ax"
    .balign 2048
probe_vectors:
    .irp    i, 0, 1, 2, 3
    .balign 128
    mov     x0, #\i
    b       10f
    .endr
    .balign 128                             /* 4: sync-el1h */
    mrs     x9, elr_el1
    adrp    x10, probe_guarded_start
    add     x10, x10, :lo12:probe_guarded_start
    cmp     x9, x10
    b.lo    12f
    adrp    x10, probe_guarded_end
    add     x10, x10, :lo12:probe_guarded_end
    cmp     x9, x10
    b.lo    13f
12: adrp    x10, probe_guarded_start            /* a BLR out of a guarded routine */
    add     x10, x10, :lo12:probe_guarded_start
    cmp     x30, x10
    b.lo    11f
    adrp    x10, probe_guarded_end
    add     x10, x10, :lo12:probe_guarded_end
    cmp     x30, x10
    b.hs    11f
13: adrp    x10, probe_guarded_fault
    add     x10, x10, :lo12:probe_guarded_fault
    msr     elr_el1, x10
    eret
11: mov     x0, #4
    b       10f
    .balign 128                             /* 5: irq-el1h */
    b       probe_irq
    .irp    i, 6, 7
    .balign 128
    mov     x0, #\i
    b       10f
    .endr
    .balign 128                             /* 8: sync-el0 */
    mrs     x9, tpidr_el1                   /* inside probe_el0_call? */
    tbz     x9, #2, 15f
    bic     x9, x9, #4
    msr     tpidr_el1, x9
    b       probe_el0_return
15: mov     x0, #8
    b       10f
    .irp    i, 9, 10, 11, 12, 13, 14, 15
    .balign 128
    mov     x0, #\i
    b       10f
    .endr
10: bl      {exception}
    b       probe_park

    /* One trip to EL0 (bare/guarded.rs `el0`): x0 = the EL0 address to run,
       x1, x2 = its x0, x1. Sets TPIDR_EL1 bit 2 so the sync-el0 vector comes
       back to probe_el0_return, which returns to our caller: x0 = the EL0
       code's x0 and x1 = 0 if it ended with SVC, else x0 = 0 and
       x1 = ESR_EL1 | 1 << 63. SP_EL1 is left as it was at the ERET, so the
       frame pushed here is popped there. */
    .section .text.el0call, "ax"
    .balign 4
    .global probe_el0_call
probe_el0_call:
    stp     x29, x30, [sp, #-16]!
    mrs     x9, tpidr_el1
    orr     x9, x9, #4
    msr     tpidr_el1, x9
    msr     elr_el1, x0
    mov     x9, #0x3c0                      /* SPSR: EL0t, DAIF masked */
    msr     spsr_el1, x9
    mov     x0, x1
    mov     x1, x2
    eret
probe_el0_return:
    mrs     x9, esr_el1
    lsr     x10, x9, #26
    cmp     x10, #0x15                      /* SVC from AArch64: it finished */
    b.ne    16f
    mov     x1, #0
    b       17f
16: orr     x1, x9, #(1 << 63)
    mov     x0, #0
17: ldp     x29, x30, [sp], #16
    ret

    /* The EL0 code of the el0-* attacks, run through an EL0 alias of its
       GiB (mmu::el0_alias); each ends with SVC. */
    .balign 16
    .global probe_el0_ldr
probe_el0_ldr:
    ldr     x0, [x0]
    svc     #0
    .global probe_el0_str
probe_el0_str:
    str     x1, [x0]
    svc     #0
    .global probe_el0_mrs
probe_el0_mrs:
    mrs     x0, S3_0_C15_C0_0
    svc     #0
    .global probe_el0_hvc
probe_el0_hvc:
    hvc     #0
    svc     #0
    .global probe_el0_smc
probe_el0_smc:
    smc     #0
    svc     #0
    .global probe_el0_sgi
probe_el0_sgi:
    msr     icc_sgi1r_el1, xzr
    svc     #0

    /* IRQ at EL1h: saves the registers the C ABI lets {irq} clobber
       (x0-x18, x30) and ELR/SPSR, calls it, restores, returns. FP/SIMD
       registers are not saved: IRQs are only ever unmasked inside asm
       that declares them clobbered (bare/gic.rs). */
probe_irq:
    sub     sp, sp, #(22 * 8)
    stp     x0, x1, [sp, #(16 * 0)]
    mrs     x0, cntvct_el0                  /* bench=timer-irq latency */
    adrp    x1, {irq_ticks}
    str     x0, [x1, :lo12:{irq_ticks}]
    stp     x2, x3, [sp, #(16 * 1)]
    stp     x4, x5, [sp, #(16 * 2)]
    stp     x6, x7, [sp, #(16 * 3)]
    stp     x8, x9, [sp, #(16 * 4)]
    stp     x10, x11, [sp, #(16 * 5)]
    stp     x12, x13, [sp, #(16 * 6)]
    stp     x14, x15, [sp, #(16 * 7)]
    stp     x16, x17, [sp, #(16 * 8)]
    stp     x18, x30, [sp, #(16 * 9)]
    mrs     x0, elr_el1
    mrs     x1, spsr_el1
    stp     x0, x1, [sp, #(16 * 10)]
    bl      {irq}
    ldp     x0, x1, [sp, #(16 * 10)]
    msr     elr_el1, x0
    msr     spsr_el1, x1
    ldp     x0, x1, [sp, #(16 * 0)]
    ldp     x2, x3, [sp, #(16 * 1)]
    ldp     x4, x5, [sp, #(16 * 2)]
    ldp     x6, x7, [sp, #(16 * 3)]
    ldp     x8, x9, [sp, #(16 * 4)]
    ldp     x10, x11, [sp, #(16 * 5)]
    ldp     x12, x13, [sp, #(16 * 6)]
    ldp     x14, x15, [sp, #(16 * 7)]
    ldp     x16, x17, [sp, #(16 * 8)]
    ldp     x18, x30, [sp, #(16 * 9)]
    add     sp, sp, #(22 * 8)
    eret

    /* Guarded accesses (bare/guarded.rs), C ABI leaf functions. They
       return x0 = the value read (else 0) and x1 = 0; if the access takes
       a synchronous exception, the vector above resumes at
       probe_guarded_fault, which returns x0 = 0 and x1 = ESR_EL1 | 1 << 63.
       Only these routines lie between start and end. */
    .section .text.guarded, "ax"
    .balign 4
probe_guarded_start:
    .global probe_guarded_read32
probe_guarded_read32:                       /* (address) */
    mov     x1, #0
    ldr     w0, [x0]
    ret
    .global probe_guarded_read64
probe_guarded_read64:                       /* (address) */
    mov     x1, #0
    ldr     x0, [x0]
    ret
    .global probe_guarded_write32
probe_guarded_write32:                      /* (address, value) */
    str     w1, [x0]
    mov     x0, #0
    mov     x1, #0
    ret
    .global probe_guarded_write64
probe_guarded_write64:                      /* (address, value) */
    str     x1, [x0]
    mov     x0, #0
    mov     x1, #0
    ret
    .global probe_guarded_read8
probe_guarded_read8:                        /* (address) */
    mov     x1, #0
    ldrb    w0, [x0]
    ret
    .global probe_guarded_read16
probe_guarded_read16:                       /* (address) */
    mov     x1, #0
    ldrh    w0, [x0]
    ret
    .global probe_guarded_write8
probe_guarded_write8:                       /* (address, value) */
    strb    w1, [x0]
    mov     x0, #0
    mov     x1, #0
    ret
    .global probe_guarded_write16
probe_guarded_write16:                      /* (address, value) */
    strh    w1, [x0]
    mov     x0, #0
    mov     x1, #0
    ret
    .global probe_guarded_read_icc_sre_el1
probe_guarded_read_icc_sre_el1:             /* () */
    mov     x1, #0
    mrs     x0, icc_sre_el1
    ret
    .global probe_guarded_write_icc_sre_el1
probe_guarded_write_icc_sre_el1:            /* (value) */
    msr     icc_sre_el1, x0
    isb
    mov     x0, #0
    mov     x1, #0
    ret
    .global probe_guarded_read_impdef
probe_guarded_read_impdef:                  /* () */
    mov     x1, #0
    mrs     x0, S3_0_C15_C0_0
    ret
    .global probe_guarded_write_icc_sgi1r_el1
probe_guarded_write_icc_sgi1r_el1:          /* (value) */
    dsb     ishst                           /* earlier stores before the SGI */
    msr     icc_sgi1r_el1, x0
    isb
    mov     x0, #0
    mov     x1, #0
    ret
    /* The attack sweeps' accesses (bare/sweep.rs). */
    .global probe_guarded_patched
probe_guarded_patched:                      /* (x0): runs the instruction in the slot */
    mov     x1, #0
    .global probe_guarded_slot
probe_guarded_slot:
    nop                                     /* patched: MRS x0 / MSR x0 */
    ret
    .global probe_guarded_hvc
probe_guarded_hvc:                          /* (fid, a1, a2, a3) -> x0 */
    hvc     #0
    mov     x1, #0
    ret
    .global probe_guarded_smc
probe_guarded_smc:                          /* (fid, a1, a2, a3) -> x0 */
    smc     #0
    mov     x1, #0
    ret
    .global probe_guarded_ldp
probe_guarded_ldp:                          /* (address) */
    mov     x1, #0
    ldp     x0, x2, [x0]
    ret
    .global probe_guarded_stp
probe_guarded_stp:                          /* (address, value) */
    stp     x1, x1, [x0]
    mov     x0, #0
    mov     x1, #0
    ret
    .global probe_guarded_ldar
probe_guarded_ldar:                         /* (address) */
    mov     x1, #0
    ldar    x0, [x0]
    ret
    .global probe_guarded_stlr
probe_guarded_stlr:                         /* (address, value) */
    stlr    x1, [x0]
    mov     x0, #0
    mov     x1, #0
    ret
    .global probe_guarded_ldxr
probe_guarded_ldxr:                         /* (address) */
    mov     x1, #0
    ldxr    x0, [x0]
    clrex
    ret
    .global probe_guarded_stxr
probe_guarded_stxr:                         /* (address, value) -> status */
    mov     x2, x0
    clrex
    stxr    w0, x1, [x2]
    mov     x1, #0
    ret
    .global probe_guarded_fetch
probe_guarded_fetch:                        /* (address): BLR there */
    mov     x1, #0
    mov     x2, x30
    blr     x0
    mov     x30, x2
    ret
    /* The same with the stage-1 MMU off: x2 = SCTLR_EL1 without M, x3 = as it
       was (probe_guarded_fault puts x3 back if it finds the MMU off). Nothing
       but the target is accessed while it is off. */
    .global probe_guarded_mmu_off_read64
probe_guarded_mmu_off_read64:               /* (address, -, off, on) */
    mov     x1, #0
    msr     sctlr_el1, x2
    isb
    ldr     x0, [x0]
    msr     sctlr_el1, x3
    isb
    ret
    .global probe_guarded_mmu_off_write64
probe_guarded_mmu_off_write64:              /* (address, value, off, on) */
    msr     sctlr_el1, x2
    isb
    str     x1, [x0]
    msr     sctlr_el1, x3
    isb
    mov     x0, #0
    mov     x1, #0
    ret
    .global probe_guarded_mmu_off_read32
probe_guarded_mmu_off_read32:               /* (address, -, off, on) */
    mov     x1, #0
    msr     sctlr_el1, x2
    isb
    ldr     w0, [x0]
    msr     sctlr_el1, x3
    isb
    ret
    .global probe_guarded_mmu_off_write32
probe_guarded_mmu_off_write32:              /* (address, value, off, on) */
    msr     sctlr_el1, x2
    isb
    str     w1, [x0]
    msr     sctlr_el1, x3
    isb
    mov     x0, #0
    mov     x1, #0
    ret
    .global probe_guarded_mmu_off_fetch
probe_guarded_mmu_off_fetch:                /* (address, -, off, on) */
    mov     x1, #0
    mov     x4, x30
    msr     sctlr_el1, x2
    isb
    blr     x0
    msr     sctlr_el1, x3
    isb
    mov     x30, x4
    ret
probe_guarded_end:
probe_guarded_fault:
    mrs     x9, sctlr_el1                   /* a fault with the MMU off: back on */
    tbnz    x9, #0, 14f
    msr     sctlr_el1, x3
    isb
14: mrs     x1, esr_el1
    orr     x1, x1, #(1 << 63)
    mov     x0, #0
    ret

    /* EL2 vectors left behind by drop_to_el1: x0 = -1 (NOT_SUPPORTED) and
       return, for whatever reaches EL2 (only HVC can: HCR_EL2 traps nothing
       else). */
    .balign 2048
probe_el2_stub_vectors:
    .rept   16
    .balign 128
    mov     x0, #-1
    eret
    .endr

    .section .stacks, "aw", %nobits
    .balign 4096
boot_stack_bottom:
    .space  {boot_stack_size}
boot_stack_top:
    .balign 4096
cpu_stacks:
    .space  {cpu_stack_size} * {max_cpus}
"#,
    sctlr_res1 = const SCTLR_EL1_RES1,
    max_cpus = const MAX_CPUS,
    boot_stack_size = const BOOT_STACK_SIZE,
    cpu_stack_size = const CPU_STACK_SIZE,
    secondary_mmu = sym mmu::SECONDARY_MMU,
    boot_main = sym super::boot_main,
    secondary_main = sym super::smp::secondary_main,
    exception = sym exception,
    irq = sym super::gic::irq,
    irq_ticks = sym super::bench::PROBE_IRQ_ENTRY_TICKS,
);

unsafe extern "C" {
    /// PSCI CPU_ON entry point of the secondary CPUs (x0 = vCPU index).
    fn probe_secondary_entry() -> !;
    /// Parks the calling CPU in a `wfi` loop with interrupts masked.
    fn probe_park() -> !;
}

/// Physical (= virtual, identity-mapped) address of the secondary entry.
pub fn secondary_entry_address() -> u64 {
    probe_secondary_entry as *const () as u64
}

/// Address of the parking loop (a harmless CPU_ON entry point).
pub fn park_address() -> u64 {
    probe_park as *const () as u64
}

/// Stops the calling CPU for good (interrupts masked, `wfi` loop).
pub fn park() -> ! {
    // SAFETY: probe_park only masks interrupts and loops on wfi; it touches
    // no memory and never returns, which matches the `-> !` signature.
    unsafe { probe_park() }
}

/// Names of the 16 vector entries: exception type and where it came from
/// (`el1t` = EL1 with SP_EL0, `el1h` = EL1 with SP_EL1, `el0` = lower EL).
#[rustfmt::skip]
const VECTOR_NAMES: [&str; 16] = [
    "sync-el1t", "irq-el1t", "fiq-el1t", "serror-el1t",
    "sync-el1h", "irq-el1h", "fiq-el1h", "serror-el1h",
    "sync-el0", "irq-el0", "fiq-el0", "serror-el0",
    "sync-el0-aarch32", "irq-el0-aarch32", "fiq-el0-aarch32", "serror-el0-aarch32",
];

/// Set by any CPU that took an unexpected exception, so the boot CPU stops
/// waiting for it.
static EXCEPTION_TAKEN: AtomicBool = AtomicBool::new(false);

/// Whether some CPU took an unexpected exception (and is parked).
pub fn exception_taken() -> bool {
    EXCEPTION_TAKEN.load(Ordering::Acquire)
}

/// TPIDR_EL1 flag: this CPU is printing an exception report.
const IN_EXCEPTION: u64 = 1 << 0;
/// TPIDR_EL1 flag: this CPU faulted while printing one.
const NESTED_EXCEPTION: u64 = 1 << 1;

/// Reports an unexpected exception and parks the CPU:
/// `PROBE EXCEPTION <kind> esr=0x.. far=0x.. elr=0x..`, where kind is the
/// vector name and, for synchronous exceptions, the ESR exception class,
/// e.g. `sync-el1h:data-abort`.
extern "C" fn exception(vector: u64) -> ! {
    let nesting = TPIDR_EL1.get();
    if nesting & NESTED_EXCEPTION != 0 {
        park();
    }
    if nesting & IN_EXCEPTION != 0 {
        // The report itself faulted (a bad UART address from the tree?):
        // try once more on the default UART, then give up.
        TPIDR_EL1.set(nesting | NESTED_EXCEPTION);
        console::use_default_uart();
    } else {
        TPIDR_EL1.set(IN_EXCEPTION);
    }
    EXCEPTION_TAKEN.store(true, Ordering::Release);
    let (esr, far, elr) = (ESR_EL1.get(), FAR_EL1.get(), ELR_EL1.get());
    let name = VECTOR_NAMES
        .get(vector as usize)
        .copied()
        .unwrap_or("unknown");
    let mut kind = microvisor_probe::text::Text::<48>::new();
    let _ = write!(kind, "{name}");
    if name.starts_with("sync") {
        let _ = write!(kind, ":{}", exception_class_name(esr));
    }
    console::line_forced(format_args!(
        "PROBE EXCEPTION {} esr={esr:#x} far={far:#x} elr={elr:#x}",
        kind.as_str().unwrap_or(name)
    ));
    park()
}

/// Prints `PROBE PANIC <file>:<line> <message>` and parks the CPU.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let (file, line) = info.location().map_or(("?", 0), |l| (l.file(), l.line()));
    console::line_forced(format_args!("PROBE PANIC {file}:{line} {}", info.message()));
    park()
}

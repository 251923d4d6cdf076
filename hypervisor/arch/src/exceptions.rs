//! The EL2 exception vector table (Arm ARM D1.3.1) and guest entry/exit.
//!
//! Every exception from a guest saves the guest's general-purpose registers, ELR_EL2 and
//! SPSR_EL2 into a [`GuestFrame`] on this core's stack, calls the handler the kernel
//! installed, and returns to the guest with whatever the frame then holds (ERET). The
//! handler may rewrite the frame completely, e.g. to restart the vCPU at a new entry point.
//! Exceptions taken from EL2 itself are hypervisor bugs: they go to the fatal handler, on this
//! core's emergency stack (the stack in use may be the one that overflowed into its guard
//! page, with no room for a frame), with the stack pointer they were taken with.

use aarch64_cpu::registers::{
    ELR_EL1, ELR_EL2, ESR_EL1, ESR_EL2, FAR_EL1, FAR_EL2, HPFAR_EL2, ID_AA64MMFR1_EL1,
    ID_AA64PFR1_EL1, SCTLR_EL1, SPSR_EL1, VBAR_EL1, VBAR_EL2,
};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU64, Ordering};
use microvisor_logic::inject::{self, EntryFeatures, GuestException, Trapped, Undeliverable};
use spin::Once;
use tock_registers::interfaces::{Readable, Writeable};

use microvisor_logic::inventory::MAX_CPUS;

use crate::smp;

/// A guest's general-purpose registers and return state, as saved on exception entry.
#[repr(C)]
#[derive(Clone, Debug, Default)]
pub struct GuestFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// Where the guest resumes (ELR_EL2).
    pub pc: u64,
    /// Guest PSTATE on resume (SPSR_EL2).
    pub pstate: u64,
    _padding: u64,
}

/// Size of a saved frame, used by the assembly below.
const FRAME_SIZE: usize = core::mem::size_of::<GuestFrame>();
const _: () = assert!(FRAME_SIZE == 272 && FRAME_SIZE.is_multiple_of(16));

impl GuestFrame {
    /// A frame that enters a guest at `pc` in EL1h with all of DAIF masked and `x0 = arg`
    /// (the Linux arm64 boot protocol entry, and PSCI CPU_ON's entry).
    pub fn entry(pc: u64, arg: u64) -> Self {
        let mut frame = GuestFrame {
            pc,
            pstate: PSTATE_EL1H_MASKED,
            ..Default::default()
        };
        frame.x[0] = arg;
        frame
    }

    /// Reads guest register `n` (31 is XZR and reads as zero).
    pub fn reg(&self, n: u8) -> u64 {
        self.x.get(usize::from(n)).copied().unwrap_or(0)
    }

    /// Writes guest register `n` (writes to 31, XZR, are discarded).
    pub fn set_reg(&mut self, n: u8, value: u64) {
        if let Some(r) = self.x.get_mut(usize::from(n)) {
            *r = value;
        }
    }

    /// Moves the guest past the 4-byte instruction that trapped.
    pub fn skip_instruction(&mut self) {
        self.pc = self.pc.wrapping_add(4);
    }
}

/// What the exit path of a guest's HVC saves: the registers a call may clobber (x0-x18, x30)
/// and the return state, at the offsets a [`GuestFrame`] has them. x19-x29 are never stored:
/// the handler is a C-ABI function, which preserves them, so they are still the guest's when
/// the vector returns (a handler that never returns, parking the vCPU, does not need them
/// either); their slots hold whatever the stack held. Only what an SMCCC call reads and
/// writes is reachable: arguments x0-x3 and the result in x0.
#[repr(C)]
pub struct CallFrame {
    /// x0..x18.
    x: [u64; 19],
    /// Where x19..x29 would be: not saved.
    _unsaved: [MaybeUninit<u64>; 11],
    x30: u64,
    /// ELR_EL2: where the guest resumes (after the HVC).
    pc: u64,
    /// SPSR_EL2.
    pstate: u64,
    _padding: MaybeUninit<u64>,
}

const _: () = {
    assert!(core::mem::size_of::<CallFrame>() == FRAME_SIZE);
    assert!(core::mem::offset_of!(CallFrame, x30) == core::mem::offset_of!(GuestFrame, x) + 30 * 8);
    assert!(core::mem::offset_of!(CallFrame, pc) == core::mem::offset_of!(GuestFrame, pc));
    assert!(core::mem::offset_of!(CallFrame, pstate) == core::mem::offset_of!(GuestFrame, pstate));
};

impl CallFrame {
    /// The call's function ID and first three arguments (x0-x3).
    pub fn args(&self) -> [u64; 4] {
        [self.x[0], self.x[1], self.x[2], self.x[3]]
    }

    /// The result the guest finds in x0.
    pub fn set_result(&mut self, x0: u64) {
        self.x[0] = x0;
    }

    /// Where the guest resumes (after the HVC).
    pub fn pc(&self) -> u64 {
        self.pc
    }
}

/// SPSR value for EL1h (M = 0b0101) with D, A, I and F masked.
pub const PSTATE_EL1H_MASKED: u64 = 0x3c5;

/// What an exception from EL2 itself looked like (a hypervisor bug).
#[derive(Clone, Copy, Debug)]
pub struct HypervisorFault {
    pub kind: &'static str,
    pub esr: u64,
    pub elr: u64,
    pub far: u64,
    /// The stack pointer when it was taken, when known.
    pub sp: Option<u64>,
}

/// Syndrome registers of the current exception from a guest.
#[derive(Clone, Copy, Debug)]
pub struct Syndrome {
    pub esr: u64,
    pub far: u64,
    pub hpfar: u64,
}

/// Reads ESR_EL2 alone (valid inside a guest exception handler): enough to tell the exits
/// apart.
#[inline]
pub fn exception_syndrome() -> u64 {
    ESR_EL2.get()
}

/// Reads ESR_EL2, FAR_EL2 and HPFAR_EL2 (valid inside a guest exception handler).
pub fn syndrome() -> Syndrome {
    Syndrome {
        esr: ESR_EL2.get(),
        far: FAR_EL2.get(),
        hpfar: HPFAR_EL2.get(),
    }
}

/// ESR_EL2.IL: the trapped instruction was a 32-bit one.
const ESR_IL: u64 = 1 << 25;

/// Takes `exception` on the guest's behalf at the instruction `frame` stopped at, as the PE
/// would have (`microvisor_logic::inject`): the guest's EL1 exception registers are written
/// here (they are the live EL1 registers: the hypervisor runs non-VHE and never switches
/// them) and the frame resumes at the guest's vector. `syndrome` is the current exit's; for an
/// abort its FAR_EL2 is the faulting virtual address.
pub fn deliver_to_guest(
    frame: &mut GuestFrame,
    exception: GuestException,
    syndrome: &Syndrome,
) -> Result<(), Undeliverable> {
    let trapped = Trapped {
        pc: frame.pc,
        pstate: frame.pstate,
        instruction_32bit: syndrome.esr & ESR_IL != 0,
        vbar: VBAR_EL1.get(),
        sctlr: SCTLR_EL1.get(),
    };
    let features = EntryFeatures::from_id_registers(ID_AA64MMFR1_EL1.get(), ID_AA64PFR1_EL1.get());
    let entry = inject::entry(exception, trapped, syndrome.far, features)?;
    ESR_EL1.set(entry.esr);
    if let Some(far) = entry.far {
        FAR_EL1.set(far);
    }
    ELR_EL1.set(entry.elr);
    SPSR_EL1.set(entry.spsr);
    frame.pc = entry.pc;
    frame.pstate = entry.pstate;
    Ok(())
}

/// The kernel's handlers. The ones that run on every exit are C-ABI functions: the vectors
/// call them directly (`GUEST_ENTRIES`), without a dispatch function in between. An HVC and
/// an IRQ save only the registers a C function may clobber (see [`CallFrame`]); every other
/// exception from a guest saves the whole [`GuestFrame`].
#[derive(Clone, Copy)]
pub struct Handlers {
    /// A synchronous exception from a guest other than HVC (SMC, aborts, traps).
    pub guest_sync: extern "C" fn(&mut GuestFrame),
    /// An HVC from a guest.
    pub guest_call: extern "C" fn(&mut CallFrame),
    /// A physical IRQ taken while a guest ran (the guest's registers are not the handler's
    /// to see).
    pub guest_irq: extern "C" fn(),
    /// FIQ or SError from a guest.
    pub guest_other: fn(&mut GuestFrame, &'static str),
    /// An exception taken from EL2: never returns.
    pub fatal: fn(&HypervisorFault) -> !,
}

static HANDLERS: Once<Handlers> = Once::new();

/// The handlers of a lower EL's synchronous exception, IRQ and HVC, as addresses the vector
/// code loads (0: not installed yet; `el2_dispatch` halts).
static GUEST_ENTRIES: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

/// Installs the kernel's handlers (once, on the boot core, before any vector is live).
pub fn set_handlers(handlers: Handlers) {
    let handlers = HANDLERS.call_once(|| handlers);
    GUEST_ENTRIES[0].store(handlers.guest_sync as usize as u64, Ordering::Release);
    GUEST_ENTRIES[1].store(handlers.guest_irq as usize as u64, Ordering::Release);
    GUEST_ENTRIES[2].store(handlers.guest_call as usize as u64, Ordering::Release);
}

/// Points this core's VBAR_EL2 at the vector table.
pub fn install_vectors() {
    unsafe extern "C" {
        static el2_vectors: u8;
    }
    let base = core::ptr::addr_of!(el2_vectors) as u64;
    VBAR_EL2.set(base);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Top of each core's emergency stack, by physical core index (0: none yet, the fatal
/// vectors keep the stack they find). Read by the vectors below.
static EMERGENCY_TOPS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
const _: () = assert!(MAX_CPUS.is_power_of_two());

/// Records where core `core`'s emergency stack ends (16-byte aligned).
pub(crate) fn set_emergency_stack(core: usize, top: u64) {
    EMERGENCY_TOPS[core % MAX_CPUS].store(top & !15, Ordering::Relaxed);
}

/// Counts exceptions taken from EL2 itself, so that a fault inside the fatal path cannot loop.
static NESTED_FATAL: AtomicU64 = AtomicU64::new(0);

const KIND_NAMES: [&str; 16] = [
    "sync (EL2, SP0)",
    "irq (EL2, SP0)",
    "fiq (EL2, SP0)",
    "serror (EL2, SP0)",
    "sync (EL2)",
    "irq (EL2)",
    "fiq (EL2)",
    "serror (EL2)",
    "sync (guest)",
    "irq (guest)",
    "fiq (guest)",
    "serror (guest)",
    "sync (guest AArch32)",
    "irq (guest AArch32)",
    "fiq (guest AArch32)",
    "serror (guest AArch32)",
];

/// The exception being taken now, for a vector table other than this module's (the early one
/// in `boot/`): `kind` is the vector's index in the table (0..16), the rest is read from
/// ESR_EL2, ELR_EL2 and FAR_EL2.
pub fn current_fault(kind: u64) -> HypervisorFault {
    HypervisorFault {
        kind: KIND_NAMES[(kind & 15) as usize],
        esr: ESR_EL2.get(),
        elr: ELR_EL2.get(),
        far: FAR_EL2.get(),
        sp: None,
    }
}

/// Called by the EL2 vectors (0..8) on this core's emergency stack with the vector index and
/// the stack pointer the exception was taken with.
#[unsafe(no_mangle)]
extern "C" fn el2_fatal(kind: u64, sp: u64) -> ! {
    let Some(handlers) = HANDLERS.get() else {
        crate::cpu::halt()
    };
    if NESTED_FATAL.fetch_add(1, Ordering::Relaxed) > 4 {
        crate::cpu::halt();
    }
    let fault = HypervisorFault {
        sp: Some(sp),
        ..current_fault(kind)
    };
    (handlers.fatal)(&fault)
}

/// Called by the vector stubs with the vector index (0..16) and the saved frame, for every
/// exception but a guest's synchronous one or IRQ once the handlers are installed.
#[unsafe(no_mangle)]
extern "C" fn el2_dispatch(kind: u64, frame: &mut GuestFrame) {
    let Some(handlers) = HANDLERS.get() else {
        crate::cpu::halt()
    };
    let name = KIND_NAMES[(kind & 15) as usize];
    match kind {
        8 => (handlers.guest_sync)(frame),
        9 => (handlers.guest_irq)(),
        10..=15 => (handlers.guest_other)(frame, name),
        _ => {
            if NESTED_FATAL.fetch_add(1, Ordering::Relaxed) > 4 {
                crate::cpu::halt();
            }
            let fault = HypervisorFault {
                kind: name,
                esr: ESR_EL2.get(),
                elr: frame.pc,
                far: FAR_EL2.get(),
                sp: None,
            };
            (handlers.fatal)(&fault)
        }
    }
}

/// Enters the guest described by `frame` on this core, discarding everything on this core's
/// hypervisor stack (nothing on it is ever returned to): the next exception from the guest
/// finds an empty stack.
pub fn enter_guest(frame: &GuestFrame) -> ! {
    let top = smp::stack_top();
    // SAFETY: `el2_enter_guest` only reads the frame (before any store to the stack, so it may
    // live anywhere, including on this stack) and resets SP to the top of this core's own
    // stack, which `smp` reserved for this core alone; all Rust frames on it are abandoned.
    unsafe {
        core::arch::asm!(
            "b el2_enter_guest",
            in("x0") frame as *const GuestFrame,
            in("x1") top,
            options(noreturn),
        )
    }
}

/// Calls `entry` on this core with an empty hypervisor stack, discarding every frame on it
/// (none is ever returned to; values in them are leaked, never dropped). A core leaves a
/// guest exit this way to go back to its run loop, so the loop never nests.
pub fn run_on_fresh_stack(entry: extern "C" fn() -> !) -> ! {
    let top = smp::stack_top();
    // SAFETY: SP becomes the top of this core's own stack, which `smp` reserved for this core
    // alone; the Rust frames on it are abandoned, never returned to, and `entry` starts a new
    // call chain from there. No argument is read from the old stack after the switch.
    unsafe {
        core::arch::asm!(
            "mov sp, x0",
            "mov x29, xzr",
            "mov x30, xzr",
            "br x1",
            in("x0") top,
            in("x1") entry,
            options(noreturn),
        )
    }
}

core::arch::global_asm!(
    r#"
.macro VECTOR kind
    .balign 0x80
    sub sp, sp, #{frame}
    stp x0, x1, [sp, #0]
    mov x0, #\kind
    b el2_save_and_dispatch
.endm

// An exception from EL2 itself: x0 = vector index, x1 = SP as taken, on this core's emergency
// stack when it has one (TPIDR_EL2 holds the core index). General registers are not saved: the
// fatal handler never returns.
.macro FATAL_VECTOR kind
    .balign 0x80
    mov x1, sp
    mrs x0, tpidr_el2
    and x0, x0, #{core_mask}
    adrp x2, {emergency}
    add x2, x2, :lo12:{emergency}
    ldr x2, [x2, x0, lsl #3]
    cbz x2, 1f
    mov sp, x2
1:  mov x0, #\kind
    mov x29, xzr
    mov x30, xzr
    bl el2_fatal
.endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global el2_vectors
el2_vectors:
    FATAL_VECTOR 0
    FATAL_VECTOR 1
    FATAL_VECTOR 2
    FATAL_VECTOR 3
    FATAL_VECTOR 4
    FATAL_VECTOR 5
    FATAL_VECTOR 6
    FATAL_VECTOR 7

    // 8: synchronous from a lower EL. An HVC (ESR_EL2.EC 0x16) saves only what its C
    // handler may clobber; everything else the whole frame.
    .balign 0x80
    sub sp, sp, #{frame}
    stp x0, x1, [sp, #0]
    mrs x0, esr_el2
    lsr x0, x0, #26
    cmp x0, #0x16
    mov x0, #2
    b.eq el2_save_caller_saved
    mov x0, #8
    b el2_save_and_dispatch

    // 9: IRQ from a lower EL: its handler never looks at the guest's registers.
    .balign 0x80
    sub sp, sp, #{frame}
    stp x0, x1, [sp, #0]
    mov x0, #1
    b el2_save_caller_saved

    VECTOR 10
    VECTOR 11
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

// x0 = the GUEST_ENTRIES index (1: IRQ, 2: HVC), x0 and x1 saved. Saves x2-x18, x30, ELR
// and SPSR (x19-x29 stay live: the C handler preserves them), calls the handler with the
// frame, restores the same registers and returns to the guest.
el2_save_caller_saved:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    str x18, [sp, #144]
    mrs x2, elr_el2
    mrs x3, spsr_el2
    stp x30, x2, [sp, #240]
    str x3, [sp, #256]
    adrp x2, {entries}
    add x2, x2, :lo12:{entries}
    ldr x2, [x2, x0, lsl #3]
    cbz x2, 2f
    mov x0, sp
    blr x2
    ldp x30, x2, [sp, #240]
    ldr x3, [sp, #256]
    msr elr_el2, x2
    msr spsr_el2, x3
    ldp x0, x1, [sp, #0]
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x8, x9, [sp, #64]
    ldp x10, x11, [sp, #80]
    ldp x12, x13, [sp, #96]
    ldp x14, x15, [sp, #112]
    ldp x16, x17, [sp, #128]
    ldr x18, [sp, #144]
    add sp, sp, #{frame}
    eret
    // No handler installed yet: the whole frame and the dispatcher (which halts).
2:  stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    cmp x0, #1
    mov x0, #8
    cinc x0, x0, eq
    mov x1, sp
    bl el2_dispatch
    b el2_restore_and_eret

el2_save_and_dispatch:
    stp x2, x3, [sp, #16]
    stp x4, x5, [sp, #32]
    stp x6, x7, [sp, #48]
    stp x8, x9, [sp, #64]
    stp x10, x11, [sp, #80]
    stp x12, x13, [sp, #96]
    stp x14, x15, [sp, #112]
    stp x16, x17, [sp, #128]
    stp x18, x19, [sp, #144]
    stp x20, x21, [sp, #160]
    stp x22, x23, [sp, #176]
    stp x24, x25, [sp, #192]
    stp x26, x27, [sp, #208]
    stp x28, x29, [sp, #224]
    mrs x2, elr_el2
    mrs x3, spsr_el2
    stp x30, x2, [sp, #240]
    str x3, [sp, #256]
    mov x1, sp
    // A guest's synchronous exception (8) goes straight to its kernel handler.
    cmp x0, #8
    b.ne 1f
    adrp x2, {entries}
    ldr x2, [x2, :lo12:{entries}]
    cbz x2, 1f
    mov x0, x1
    blr x2
    b el2_restore_and_eret
1:  bl el2_dispatch

    .global el2_restore_and_eret
el2_restore_and_eret:
    ldp x30, x2, [sp, #240]
    ldr x3, [sp, #256]
    msr elr_el2, x2
    msr spsr_el2, x3
    ldp x0, x1, [sp, #0]
    ldp x2, x3, [sp, #16]
    ldp x4, x5, [sp, #32]
    ldp x6, x7, [sp, #48]
    ldp x8, x9, [sp, #64]
    ldp x10, x11, [sp, #80]
    ldp x12, x13, [sp, #96]
    ldp x14, x15, [sp, #112]
    ldp x16, x17, [sp, #128]
    ldp x18, x19, [sp, #144]
    ldp x20, x21, [sp, #160]
    ldp x22, x23, [sp, #176]
    ldp x24, x25, [sp, #192]
    ldp x26, x27, [sp, #208]
    ldp x28, x29, [sp, #224]
    add sp, sp, #{frame}
    eret

// x0 = &GuestFrame, x1 = the stack pointer to leave behind.
    .global el2_enter_guest
el2_enter_guest:
    mov sp, x1
    ldp x2, x3, [x0, #248]
    msr elr_el2, x2
    msr spsr_el2, x3
    ldp x2, x3, [x0, #16]
    ldp x4, x5, [x0, #32]
    ldp x6, x7, [x0, #48]
    ldp x8, x9, [x0, #64]
    ldp x10, x11, [x0, #80]
    ldp x12, x13, [x0, #96]
    ldp x14, x15, [x0, #112]
    ldp x16, x17, [x0, #128]
    ldp x18, x19, [x0, #144]
    ldp x20, x21, [x0, #160]
    ldp x22, x23, [x0, #176]
    ldp x24, x25, [x0, #192]
    ldp x26, x27, [x0, #208]
    ldp x28, x29, [x0, #224]
    ldr x30, [x0, #240]
    ldp x0, x1, [x0, #0]
    eret
"#,
    frame = const FRAME_SIZE,
    core_mask = const MAX_CPUS - 1,
    emergency = sym EMERGENCY_TOPS,
    entries = sym GUEST_ENTRIES,
);

//! Guest exits: decode once (`microvisor_logic::trap`), count, and dispatch to PSCI, the
//! slice's devices or its fault policy. Nothing a guest does here can stop the hypervisor:
//! an access nothing answers gets the exception hardware would raise (DESIGN.md §4,
//! "Faults"), or, under `on-fault = "stop"/"restart"` and where no exception can answer it,
//! ends that slice's run.

use alloc::format;
use alloc::string::String;
use microvisor_arch::exceptions::{
    self, CallFrame, GuestFrame, Handlers, HypervisorFault, Syndrome,
};
use microvisor_arch::virt;
use microvisor_arch::{cpu, firmware};
use microvisor_logic::exits::ExitCause;
use microvisor_logic::inject::GuestException;
use microvisor_logic::stacks;
use microvisor_logic::trap::{self, Exit, MmioAccess, SysRegAccess, SysRegEncoding};
use microvisor_plan::layout::GUEST_RAM_BASE;
use microvisor_plan::model::OnFault;

use crate::node::Node;
use crate::slice::{Attention, Ending, Next, Slice};
use crate::vcpu::Vcpu;
use crate::{irq, output, psci, run};

/// The handlers the vector table calls.
pub fn handlers() -> Handlers {
    Handlers {
        guest_sync,
        guest_call,
        guest_irq,
        guest_other,
        fatal,
    }
}

/// The slice and vCPU this core runs.
#[inline] // on an exit path: inlined even under the image's lower inline threshold
fn current() -> (&'static Slice, &'static Vcpu) {
    match run::here() {
        Some(here) => here,
        None => no_vcpu(),
    }
}

#[cold]
fn no_vcpu() -> ! {
    output::fatal(format_args!(
        "guest exit on core {} which runs no vCPU",
        cpu::core_index()
    ));
    cpu::halt()
}

extern "C" fn guest_sync(frame: &mut GuestFrame) {
    let (slice, vcpu) = current();
    // The two exits that happen at run time (calls, emulated devices) each have their own
    // path; everything else is rare and out of line. Each path ends the exit itself, so
    // this function is a dispatcher with no frame of its own.
    let esr = exceptions::exception_syndrome();
    match trap::exception_class(esr) {
        trap::class::DATA_ABORT_LOWER => data_abort(slice, vcpu, frame),
        trap::class::MSR_MRS => trapped_register(slice, vcpu, frame, esr),
        _ => rare(slice, vcpu, frame),
    }
}

/// A trapped MSR/MRS: the guest's IPIs (ICC_SGI1R_EL1 writes) have their own path.
#[inline(never)]
fn trapped_register(slice: &Slice, vcpu: &Vcpu, frame: &mut GuestFrame, esr: u64) {
    match trap::written_register(esr, SGI1R) {
        Some(register) => {
            send_sgi(slice, vcpu, frame, register);
            resume(slice, vcpu);
        }
        None => rare(slice, vcpu, frame),
    }
}

/// ICC_SGI1R_EL1 written: an SGI to vCPUs of the same slice (`VirtualGic::send_sgi` drops
/// every other target).
#[inline(always)]
fn send_sgi(slice: &Slice, vcpu: &Vcpu, frame: &mut GuestFrame, register: u8) {
    vcpu.exits.count(ExitCause::Sgi);
    let value = frame.reg(register);
    slice.gic.change(|gic| gic.send_sgi(vcpu.index, value));
    frame.skip_instruction();
}

/// A data abort: emulated MMIO when it has a syndrome, else rare.
#[inline(never)]
fn data_abort(slice: &Slice, vcpu: &Vcpu, frame: &mut GuestFrame) {
    let syndrome = exceptions::syndrome();
    match trap::mmio_access(syndrome.esr, syndrome.far, syndrome.hpfar) {
        Some(access) => {
            let next = mmio(slice, vcpu, frame, access);
            finish(slice, vcpu, next);
        }
        None => rare(slice, vcpu, frame),
    }
}

/// Every other synchronous exit.
#[cold]
#[inline(never)]
fn rare(slice: &Slice, vcpu: &Vcpu, frame: &mut GuestFrame) {
    let syndrome = exceptions::syndrome();
    let exit = trap::decode(syndrome.esr, syndrome.far, syndrome.hpfar);
    let next = rare_sync(slice, vcpu, frame, &syndrome, exit);
    finish(slice, vcpu, next);
}

/// HVC: PSCI and the microvisor's calls (the vector saved only the registers a call may
/// change, see `CallFrame`).
extern "C" fn guest_call(frame: &mut CallFrame) {
    let (slice, vcpu) = current();
    vcpu.exits.count(ExitCause::Hypercall);
    match psci::handle(slice, frame.args()) {
        psci::Outcome::Return(x0) => {
            frame.set_result(x0);
            resume(slice, vcpu);
        }
        outcome => leave(slice, vcpu, outcome.into()),
    }
}

/// The synchronous exits other than HVC and emulated MMIO.
#[inline(always)]
fn rare_sync(
    slice: &Slice,
    vcpu: &Vcpu,
    frame: &mut GuestFrame,
    syndrome: &Syndrome,
    exit: Exit,
) -> Next {
    match exit {
        Exit::Hypercall { .. } | Exit::SecureMonitorCall { .. } => {
            // HVCs come here only before the handlers are installed (never, in practice).
            let cause = match exit {
                Exit::Hypercall { .. } => ExitCause::Hypercall,
                _ => ExitCause::SecureMonitorCall,
            };
            vcpu.exits.count(cause);
            if cause == ExitCause::SecureMonitorCall {
                frame.skip_instruction();
            }
            let outcome = psci::handle(slice, [frame.x[0], frame.x[1], frame.x[2], frame.x[3]]);
            if let psci::Outcome::Return(x0) = outcome {
                frame.x[0] = x0;
            }
            outcome.into()
        }
        Exit::Mmio(access) => mmio(slice, vcpu, frame, access),
        Exit::DataAbort {
            ipa,
            page_walk: true,
            write,
            ..
        } => ram_fault(slice, vcpu, frame, syndrome, ipa, write, None).unwrap_or_else(|| {
            // The guest's own stage-1 walk reached an address outside its RAM: the abort
            // hardware would raise names the walk's level, which stage 2 does not tell. (A
            // walk inside its RAM that faulted while a block of it was being split is
            // retried above.)
            vcpu.exits.count(ExitCause::Fault);
            Next::End(Ending::Fault(format!(
                "stage-1 page table walk at IPA {ipa:#x} outside its RAM (pc {:#x}, vCPU {})",
                frame.pc, vcpu.index
            )))
        }),
        Exit::DataAbort { ipa, write, .. } => {
            ram_fault(slice, vcpu, frame, syndrome, ipa, write, None).unwrap_or_else(|| {
                let exception = GuestException::DataAbort { write };
                outside(slice, vcpu, frame, syndrome, exception, ipa)
            })
        }
        Exit::InstructionAbort { ipa, .. } => {
            ram_fault(slice, vcpu, frame, syndrome, ipa, false, None).unwrap_or_else(|| {
                let exception = GuestException::InstructionAbort;
                outside(slice, vcpu, frame, syndrome, exception, ipa)
            })
        }
        Exit::SystemRegister(access) => system_register(slice, vcpu, frame, syndrome, access),
        Exit::Coprocessor { class } => {
            // A core without the register rejects the instruction: Undefined Instruction.
            let pc = frame.pc;
            fault(
                slice,
                vcpu,
                frame,
                syndrome,
                GuestException::Undefined,
                || {
                    format!(
                        "undefined AArch32 coprocessor access (class {class:#x}, pc {pc:#x}, vCPU {})",
                        vcpu.index
                    )
                },
            )
        }
        Exit::Other { class } => {
            vcpu.exits.count(ExitCause::Other);
            Next::End(Ending::Fault(format!(
                "unexpected exception class {class:#x} (ESR {:#x}, pc {:#x}, vCPU {})",
                syndrome.esr, frame.pc, vcpu.index
            )))
        }
    }
}

/// Every path back into the guest goes through here: park if the vCPU stopped or the slice
/// is stopping (never returning), else bring the list registers up to date.
#[inline(always)]
fn finish(slice: &Slice, vcpu: &Vcpu, next: Next) {
    if !matches!(next, Next::Resume) {
        leave(slice, vcpu, next);
    }
    resume(slice, vcpu);
}

/// Back to the guest: unless the slice asks this vCPU to park or end its run, with the list
/// registers up to date.
#[inline(always)]
fn resume(slice: &Slice, vcpu: &Vcpu) {
    if slice.needs_attention() {
        attend(slice, vcpu);
    }
    slice.gic.sync(vcpu.index);
}

/// The vCPU stops here: CPU_OFF, or the end of the slice's run.
#[cold]
#[inline(never)]
fn leave(slice: &Slice, vcpu: &Vcpu, next: Next) {
    match next {
        Next::Resume => {}
        Next::CpuOff => run::park(slice, vcpu),
        Next::End(ending) => run::end_run(slice, vcpu, ending),
    }
}

/// Parks or ends the run if the slice asks for it (never returning then).
#[cold]
#[inline(never)]
fn attend(slice: &Slice, vcpu: &Vcpu) {
    match slice.attention() {
        Attention::None => {}
        Attention::Park => run::park(slice, vcpu),
        Attention::End(ending) => run::end_run(slice, vcpu, ending),
    }
}

/// Emulated MMIO through the slice's bus; an access nothing answers is an external abort.
#[inline(always)]
fn mmio(slice: &Slice, vcpu: &Vcpu, frame: &mut GuestFrame, access: MmioAccess) -> Next {
    let write = access
        .write
        .then(|| access.write_value(frame.reg(access.register)));
    let context = slice.context();
    let Some(read) = slice
        .devices
        .access(&context, &vcpu.exits, access.ipa, access.width, write)
    else {
        return unclaimed(slice, vcpu, frame);
    };
    if write.is_none() {
        frame.set_reg(access.register, access.read_result(read));
    }
    frame.skip_instruction();
    Next::Resume
}

/// An access no device of the slice answers: a stage-2 fault in its RAM (`ram_fault`), else
/// an external abort. Out of line, decoding the syndrome registers again (nothing at EL2 has
/// changed them since the exit), so that the device path above keeps nothing live across
/// its call: passing the access and the syndrome here cost every emulated MMIO access 17
/// instructions of spills (`tools/exitprof/exitprof.py --bench mmio-read --functions`).
#[cold]
#[inline(never)]
fn unclaimed(slice: &Slice, vcpu: &Vcpu, frame: &mut GuestFrame) -> Next {
    let syndrome = exceptions::syndrome();
    let Some(access) = trap::mmio_access(syndrome.esr, syndrome.far, syndrome.hpfar) else {
        // `mmio` decoded this very syndrome; kept as an answer rather than a panic.
        vcpu.exits.count(ExitCause::Fault);
        return Next::End(Ending::Fault(format!(
            "MMIO syndrome changed during its exit (pc {:#x}, vCPU {})",
            frame.pc, vcpu.index
        )));
    };
    let write = access
        .write
        .then(|| access.write_value(frame.reg(access.register)));
    let store = write.map(|value| (&access, value));
    if let Some(next) = ram_fault(
        slice,
        vcpu,
        frame,
        &syndrome,
        access.ipa,
        access.write,
        store,
    ) {
        return next;
    }
    let exception = GuestException::DataAbort {
        write: access.write,
    };
    outside(slice, vcpu, frame, &syndrome, exception, access.ipa)
}

/// A stage-2 fault at `ipa` in the slice's RAM, which its stage 2 maps whole, writable,
/// but for the pages of its direct NVMe CQs (read-only while the controller writes them,
/// docs/decisions/0005-nvme-completions-without-exits.md) and while a block of it is being
/// split for one (break-before-make). An access the stage 2 allows now is retried; a store
/// with a syndrome (`store`: the access and its value) into a read-only page is done for the
/// guest outside the CQ's bytes and dropped inside them (the controller's alone). `None`
/// for anything else: an address outside the RAM, or a store without a syndrome into a
/// read-only page, which gets the external abort of `outside`.
#[cold]
fn ram_fault(
    slice: &Slice,
    vcpu: &Vcpu,
    frame: &mut GuestFrame,
    syndrome: &Syndrome,
    ipa: u64,
    write: bool,
    store: Option<(&MmioAccess, u64)>,
) -> Option<Next> {
    // Only stage-2 translation and permission faults (DFSC 0b0001xx, 0b0011xx): an external
    // abort or anything else on RAM is not ours to retry (it would fault again forever).
    if !matches!(syndrome.esr & 0x3c, 0x04 | 0x0c) {
        return None;
    }
    let ctx = slice.context();
    let offset = ipa
        .checked_sub(GUEST_RAM_BASE)
        .filter(|&offset| offset < ctx.ram.region().size)?;
    let retry = || {
        // This core may still hold the translation that faulted (a page made writable again
        // from another core): drop it, then retry.
        virt::invalidate_guest_ipas(ipa & !0xfff, 0x1000);
        vcpu.exits.count(ExitCause::Other);
        Next::Resume
    };
    if ctx.stage2.allows(ipa, write) {
        return Some(retry());
    }
    let (access, value) = store?;
    let width = u64::from(access.width);
    // Aligned, so inside one page.
    if !ipa.is_multiple_of(width) {
        return None;
    }
    let Some(protected) = ctx.stage2.protected(ipa, width) else {
        // The page stopped being read-only since the first look.
        return ctx.stage2.allows(ipa, write).then(retry);
    };
    if !protected {
        let bytes = value.to_le_bytes();
        // Inside the RAM: the store lies in one page of it (aligned, at most 8 bytes).
        let _ = ctx.ram.write(offset, &bytes[..usize::from(access.width)]);
    }
    vcpu.exits.count(ExitCause::Other);
    frame.skip_instruction();
    Some(Next::Resume)
}

/// The guest touched `ipa`, which is neither its RAM nor one of its devices: a synchronous
/// external abort, as on a machine where nothing decodes that address.
fn outside(
    slice: &Slice,
    vcpu: &Vcpu,
    frame: &mut GuestFrame,
    syndrome: &Syndrome,
    exception: GuestException,
    ipa: u64,
) -> Next {
    let what = match exception {
        GuestException::InstructionAbort => "instruction fetch",
        GuestException::DataAbort { write: true } => "write",
        _ => "read",
    };
    let pc = frame.pc;
    fault(slice, vcpu, frame, syndrome, exception, || {
        format!(
            "{what} at IPA {ipa:#x} outside its RAM and devices (pc {pc:#x}, vCPU {})",
            vcpu.index
        )
    })
}

/// A guest access the hypervisor does not answer: `exception` is delivered to the guest
/// under the default `on-fault = "exception"` (counted, and printed rate-limited), else, or
/// where it cannot be delivered, the run ends with `describe()` as the reason.
fn fault(
    slice: &Slice,
    vcpu: &Vcpu,
    frame: &mut GuestFrame,
    syndrome: &Syndrome,
    exception: GuestException,
    describe: impl FnOnce() -> String,
) -> Next {
    if slice.on_fault != OnFault::Exception {
        vcpu.exits.count(ExitCause::Fault);
        return Next::End(Ending::Fault(describe()));
    }
    match exceptions::deliver_to_guest(frame, exception, syndrome) {
        Ok(()) => {
            vcpu.exits.count(match exception {
                GuestException::Undefined => ExitCause::Undefined,
                _ => ExitCause::Abort,
            });
            slice.report_delivered(format_args!(
                "{} delivered: {}",
                exception.name(),
                describe()
            ));
            Next::Resume
        }
        Err(why) => {
            vcpu.exits.count(ExitCause::Fault);
            Next::End(Ending::Fault(format!("{}; {why}", describe())))
        }
    }
}

/// ICC_SGI1R_EL1 (S3_0_C12_C11_5): an IPI to vCPUs of the same slice.
const SGI1R: SysRegEncoding = (3, 0, 12, 11, 5);
/// ICC_ASGI1R_EL1 and ICC_SGI0R_EL1: other SGI generators, not used by a non-secure guest.
const OTHER_SGI_GENERATORS: [SysRegEncoding; 2] = [(3, 0, 12, 11, 6), (3, 0, 12, 11, 7)];
fn system_register(
    slice: &Slice,
    vcpu: &Vcpu,
    frame: &mut GuestFrame,
    syndrome: &Syndrome,
    access: SysRegAccess,
) -> Next {
    if access.is_write_to(SGI1R) {
        send_sgi(slice, vcpu, frame, access.register);
        return Next::Resume;
    }
    if OTHER_SGI_GENERATORS
        .iter()
        .any(|&encoding| access.is_write_to(encoding))
    {
        vcpu.exits.count(ExitCause::SystemRegister);
        frame.skip_instruction();
        return Next::Resume;
    }
    // Whatever else traps is a register the slice does not have (implementation defined
    // ones under HCR_EL2.TIDCP, ...): Undefined Instruction, as on a core without it.
    let pc = frame.pc;
    fault(
        slice,
        vcpu,
        frame,
        syndrome,
        GuestException::Undefined,
        || {
            format!(
                "undefined system register: {access} (pc {pc:#x}, vCPU {})",
                vcpu.index
            )
        },
    )
}

/// The manager's interrupts also check every slice's graceful shutdown.
#[inline(never)]
fn poll_control(node: &Node, slice: &Slice) {
    if let Some(control) = &node.control
        && control.manager == slice.index
    {
        control.poll(&node.slices);
    }
}

extern "C" fn guest_irq() {
    let (slice, vcpu) = current();
    let node = run::node();
    let handled = irq::handle_pending(node, Some((slice, vcpu)));
    vcpu.exits
        .count(handled.first.unwrap_or(ExitCause::OtherInterrupt));
    if handled.maintenance {
        // Its condition (list registers drained, or a level interrupt deactivated) lasts
        // until a pass over the list registers.
        slice.gic.resync(vcpu.index);
    }
    // Graceful shutdowns whose time ran out: each slice checks its own on its interrupts,
    // the manager all of them (docs/control.md, "Power key").
    slice.check_shutdown();
    if slice.role.is_manager() {
        poll_control(node, slice);
    }
    if slice.needs_attention() {
        // Parking or ending never returns: the maintenance interrupt is finished first (if
        // the request was already taken, it fires once more after the sync, harmlessly).
        irq::finish_maintenance(handled);
        attend(slice, vcpu);
        slice.gic.sync(vcpu.index);
        return;
    }
    slice.gic.sync(vcpu.index);
    irq::finish_maintenance(handled);
}

fn guest_other(frame: &mut GuestFrame, kind: &'static str) {
    let (slice, vcpu) = current();
    vcpu.exits.count(ExitCause::Other);
    let ending = Ending::Fault(format!(
        "{kind} exception (pc {:#x}, vCPU {})",
        frame.pc, vcpu.index
    ));
    leave(slice, vcpu, Next::End(ending));
}

/// An exception taken from EL2 itself (a hypervisor bug). A stack overflow (the access or SP
/// in a guard page) is named as one and stops the node: `[hv] FATAL stack overflow on core
/// <n> (SP <sp>, guard page <a>-<b>) ...`, then PSCI SYSTEM_OFF. Anything else is reported and
/// stops this core.
fn fatal(fault: &HypervisorFault) -> ! {
    let core = cpu::core_index();
    let far = stacks::el2_fault_address(fault.esr, fault.far);
    let overflow = fault
        .sp
        .and_then(|sp| Some((sp, run::overflowed_guard(core, sp, far)?)));
    if let Some((sp, guard)) = overflow {
        output::fatal(format_args!(
            "stack overflow on core {core} (SP {sp:#x}, guard page {:#x}-{:#x}): ESR {:#x} ELR {:#x} FAR {:#x}; stopping the node",
            guard.base,
            guard.end(),
            fault.esr,
            fault.elr,
            fault.far
        ));
        if let Some(node) = run::published() {
            firmware::system_off(node.conduit)
        }
        cpu::halt()
    }
    output::fatal(format_args!(
        "hypervisor exception {} on core {}: ESR {:#x} ELR {:#x} FAR {:#x}",
        fault.kind, core, fault.esr, fault.elr, fault.far
    ));
    cpu::halt()
}

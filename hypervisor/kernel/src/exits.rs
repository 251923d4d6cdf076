//! Guest exits: decode once (`microvisor_logic::trap`), count, and dispatch to PSCI, the
//! slice's devices or its fault policy. Nothing a guest does here can stop the hypervisor:
//! every unexpected case ends that slice's run.

use alloc::format;
use microvisor_arch::cpu;
use microvisor_arch::exceptions::{self, GuestFrame, Handlers, HypervisorFault};
use microvisor_logic::exits::ExitCause;
use microvisor_logic::trap::{self, Exit, MmioAccess, SysRegAccess};

use crate::node::Node;
use crate::slice::{Attention, Ending, Next, Slice};
use crate::vcpu::Vcpu;
use crate::{irq, output, psci, run};

/// The handlers the vector table calls.
pub fn handlers() -> Handlers {
    Handlers {
        guest_sync,
        guest_irq,
        guest_other,
        fatal,
    }
}

/// The node, and the slice and vCPU this core runs.
fn current() -> (&'static Node, &'static Slice, &'static Vcpu) {
    let node = run::node();
    match node.assigned(cpu::core_index()) {
        Some((slice, vcpu)) => (node, slice, vcpu),
        None => {
            output::fatal(format_args!(
                "guest exit on core {} which runs no vCPU",
                cpu::core_index()
            ));
            cpu::halt()
        }
    }
}

fn guest_sync(frame: &mut GuestFrame) {
    let (_, slice, vcpu) = current();
    let syndrome = exceptions::syndrome();
    let exit = trap::decode(syndrome.esr, syndrome.far, syndrome.hpfar);
    let next = match exit {
        Exit::Hypercall { .. } => {
            vcpu.exits.count(ExitCause::Hypercall);
            psci::handle(slice, frame)
        }
        Exit::SecureMonitorCall { .. } => {
            vcpu.exits.count(ExitCause::SecureMonitorCall);
            frame.skip_instruction();
            psci::handle(slice, frame)
        }
        Exit::Mmio(access) => mmio(slice, vcpu, frame, access),
        Exit::DataAbort {
            ipa,
            write,
            page_walk,
            ..
        } => {
            let what = if page_walk {
                "stage-1 page table walk"
            } else if write {
                "write"
            } else {
                "read"
            };
            outside(what, ipa, frame, vcpu)
        }
        Exit::InstructionAbort { ipa, .. } => {
            vcpu.exits.count(ExitCause::Fault);
            Next::End(Ending::Fault(format!(
                "instruction fetch at IPA {ipa:#x} outside its RAM (vCPU {})",
                vcpu.index
            )))
        }
        Exit::SystemRegister(access) => system_register(slice, vcpu, frame, access),
        Exit::Other { class } => {
            vcpu.exits.count(ExitCause::Other);
            Next::End(Ending::Fault(format!(
                "unexpected exception class {class:#x} (ESR {:#x}, pc {:#x}, vCPU {})",
                syndrome.esr, frame.pc, vcpu.index
            )))
        }
    };
    finish(slice, vcpu, next);
}

/// Every path back into the guest goes through here: park if the vCPU stopped or the slice
/// is stopping (never returning), else bring the list registers up to date.
fn finish(slice: &Slice, vcpu: &Vcpu, next: Next) {
    match next {
        Next::Resume => {}
        Next::CpuOff => run::park(slice, vcpu),
        Next::End(ending) => {
            slice.end(vcpu, ending);
            run::back_to_loop()
        }
    }
    attend(slice, vcpu);
    slice.gic.sync(vcpu.index);
}

/// Parks or ends the run if the slice asks for it (never returning then).
fn attend(slice: &Slice, vcpu: &Vcpu) {
    match slice.attention() {
        Attention::None => {}
        Attention::Park => run::park(slice, vcpu),
        Attention::End(ending) => {
            slice.end(vcpu, ending);
            run::back_to_loop()
        }
    }
}

/// Emulated MMIO through the slice's bus; an access nothing answers ends the run.
fn mmio(slice: &Slice, vcpu: &Vcpu, frame: &mut GuestFrame, access: MmioAccess) -> Next {
    let write = access
        .write
        .then(|| access.write_value(frame.reg(access.register)));
    let context = slice.context();
    let Some(read) = slice
        .devices
        .access(&context, &vcpu.exits, access.ipa, access.width, write)
    else {
        let what = if access.write { "write" } else { "read" };
        return outside(what, access.ipa, frame, vcpu);
    };
    if write.is_none() {
        frame.set_reg(access.register, access.read_result(read));
    }
    frame.skip_instruction();
    Next::Resume
}

/// The run ends: the guest touched `ipa`, which is neither its RAM nor one of its devices.
fn outside(what: &str, ipa: u64, frame: &GuestFrame, vcpu: &Vcpu) -> Next {
    vcpu.exits.count(ExitCause::Fault);
    Next::End(Ending::Fault(format!(
        "{what} at IPA {ipa:#x} outside its RAM and devices (pc {:#x}, vCPU {})",
        frame.pc, vcpu.index
    )))
}

/// ICC_SGI1R_EL1 (S3_0_C12_C11_5): an IPI to vCPUs of the same slice.
const SGI1R: (u8, u8, u8, u8, u8) = (3, 0, 12, 11, 5);
/// ICC_ASGI1R_EL1 and ICC_SGI0R_EL1: other SGI generators, not used by a non-secure guest.
const OTHER_SGI_GENERATORS: [(u8, u8, u8, u8, u8); 2] = [(3, 0, 12, 11, 6), (3, 0, 12, 11, 7)];
/// CNTP_* (S3_3_C14_C2_x): the EL1 physical timer, which slices do not have.
const PHYSICAL_TIMER: (u8, u8, u8, u8) = (3, 3, 14, 2);

fn system_register(
    slice: &Slice,
    vcpu: &Vcpu,
    frame: &mut GuestFrame,
    access: SysRegAccess,
) -> Next {
    let encoding = (access.op0, access.op1, access.crn, access.crm, access.op2);
    if encoding == SGI1R && !access.read {
        vcpu.exits.count(ExitCause::Sgi);
        let value = frame.reg(access.register);
        slice.gic.change(|gic| gic.send_sgi(vcpu.index, value));
        frame.skip_instruction();
        return Next::Resume;
    }
    vcpu.exits.count(ExitCause::SystemRegister);
    if OTHER_SGI_GENERATORS.contains(&encoding) && !access.read {
        frame.skip_instruction();
        return Next::Resume;
    }
    let what = if (access.op0, access.op1, access.crn, access.crm) == PHYSICAL_TIMER {
        "EL1 physical timer (slices have the virtual timer only)"
    } else {
        "undefined system register"
    };
    Next::End(Ending::Fault(format!(
        "{what}: {access} (pc {:#x}, vCPU {})",
        frame.pc, vcpu.index
    )))
}

fn guest_irq(_frame: &mut GuestFrame) {
    let (node, slice, vcpu) = current();
    let handled = irq::handle_pending(node, Some((slice, vcpu)));
    vcpu.exits
        .count(handled.first.unwrap_or(ExitCause::OtherInterrupt));
    // Graceful shutdowns whose time ran out: each slice checks its own on its interrupts,
    // the manager all of them (docs/control.md, "Power key").
    slice.check_shutdown();
    if let Some(control) = &node.control
        && control.manager == slice.index
    {
        control.poll(&node.slices);
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
    let (_, slice, vcpu) = current();
    vcpu.exits.count(ExitCause::Other);
    let ending = Ending::Fault(format!(
        "{kind} exception (pc {:#x}, vCPU {})",
        frame.pc, vcpu.index
    ));
    finish(slice, vcpu, Next::End(ending));
}

fn fatal(fault: &HypervisorFault) -> ! {
    output::fatal(format_args!(
        "hypervisor exception {} on core {}: ESR {:#x} ELR {:#x} FAR {:#x}",
        fault.kind,
        cpu::core_index(),
        fault.esr,
        fault.elr,
        fault.far
    ));
    cpu::halt()
}

//! Guest exits: decode once (`microvisor_logic::trap`), count, and dispatch to PSCI, device
//! emulation or the slice's fault policy. Nothing a guest does here can stop the hypervisor:
//! every unexpected case ends that slice's run.

use alloc::format;
use microvisor_arch::exceptions::{self, GuestFrame, Handlers, HypervisorFault};
use microvisor_arch::{cpu, gic};
use microvisor_logic::exits::ExitCause;
use microvisor_logic::guest_dt::map;
use microvisor_logic::pl011::PL011_SIZE;
use microvisor_logic::trap::{self, Exit, MmioAccess};

use crate::node;
use crate::psci;
use crate::slice::{Ending, Slice, Vcpu};

/// The handlers the vector table calls.
pub fn handlers() -> Handlers {
    Handlers { guest_sync, guest_irq, guest_other, fatal }
}

fn current() -> (&'static Slice, &'static Vcpu) {
    match node::current() {
        Some(pair) => pair,
        None => {
            crate::console::fatal(format_args!("guest exit on core {} which runs no vCPU", cpu::core_index()));
            cpu::halt()
        }
    }
}

fn guest_sync(frame: &mut GuestFrame) {
    let (slice, vcpu) = current();
    let syndrome = exceptions::syndrome();
    let exit = trap::decode(syndrome.esr, syndrome.far, syndrome.hpfar);
    let outcome = match exit {
        Exit::Hypercall { .. } => {
            vcpu.count(ExitCause::Hypercall);
            psci::handle(slice, frame)
        }
        Exit::SecureMonitorCall { .. } => {
            vcpu.count(ExitCause::SecureMonitorCall);
            frame.skip_instruction();
            psci::handle(slice, frame)
        }
        Exit::Mmio(access) => mmio(slice, vcpu, frame, access),
        Exit::DataAbort { ipa, write, page_walk, .. } => {
            vcpu.count(ExitCause::Fault);
            let what = if page_walk {
                "stage-1 page table walk"
            } else if write {
                "write"
            } else {
                "read"
            };
            Outcome::End(Ending::Fault(format!(
                "{what} at IPA {ipa:#x} outside its RAM and devices (pc {:#x}, vCPU {})",
                frame.pc, vcpu.index
            )))
        }
        Exit::InstructionAbort { ipa, .. } => {
            vcpu.count(ExitCause::Fault);
            Outcome::End(Ending::Fault(format!(
                "instruction fetch at IPA {ipa:#x} outside its RAM (vCPU {})",
                vcpu.index
            )))
        }
        Exit::SystemRegister(access) => {
            vcpu.count(ExitCause::SystemRegister);
            Outcome::End(Ending::Fault(format!(
                "undefined system register {access} (pc {:#x}, vCPU {})",
                frame.pc, vcpu.index
            )))
        }
        Exit::Other { class } => {
            vcpu.count(ExitCause::Other);
            Outcome::End(Ending::Fault(format!(
                "unexpected exception class {class:#x} (ESR {:#x}, pc {:#x}, vCPU {})",
                syndrome.esr, frame.pc, vcpu.index
            )))
        }
    };
    finish(slice, vcpu, frame, outcome);
}

/// What the guest does after an exit has been handled.
pub enum Outcome {
    /// Resume at `frame`.
    Resume,
    /// This vCPU powered itself off (PSCI CPU_OFF).
    CpuOff,
    /// The slice's run ends.
    End(Ending),
}

fn finish(slice: &Slice, vcpu: &Vcpu, frame: &mut GuestFrame, outcome: Outcome) {
    match outcome {
        Outcome::Resume => {}
        Outcome::CpuOff => slice.park(vcpu, frame),
        Outcome::End(ending) => slice.end(vcpu, ending, frame),
    }
    slice.check_stop(vcpu, frame);
}

/// Emulated MMIO: the slice's PL011; anything else ends the run.
fn mmio(slice: &Slice, vcpu: &Vcpu, frame: &mut GuestFrame, access: MmioAccess) -> Outcome {
    let Some(offset) = access.ipa.checked_sub(map::UART).filter(|&o| o < PL011_SIZE) else {
        vcpu.count(ExitCause::Fault);
        let what = if access.write { "write" } else { "read" };
        return Outcome::End(Ending::Fault(format!(
            "{what} at IPA {:#x} outside its RAM and devices (pc {:#x}, vCPU {})",
            access.ipa, frame.pc, vcpu.index
        )));
    };
    vcpu.count(ExitCause::Uart);
    if access.write {
        let value = access.write_value(frame.reg(access.register));
        slice.uart_access(offset, Some(value));
    } else {
        let value = slice.uart_access(offset, None);
        frame.set_reg(access.register, access.read_result(value));
    }
    frame.skip_instruction();
    Outcome::Resume
}

fn guest_irq(frame: &mut GuestFrame) {
    let (slice, vcpu) = current();
    vcpu.count(ExitCause::Interrupt);
    gic::drain();
    slice.check_stop(vcpu, frame);
}

fn guest_other(frame: &mut GuestFrame, kind: &'static str) {
    let (slice, vcpu) = current();
    vcpu.count(ExitCause::Other);
    let ending = Ending::Fault(format!("{kind} exception (pc {:#x}, vCPU {})", frame.pc, vcpu.index));
    finish(slice, vcpu, frame, Outcome::End(ending));
}

fn fatal(fault: &HypervisorFault) -> ! {
    crate::console::fatal(format_args!(
        "hypervisor exception {} on core {}: ESR {:#x} ELR {:#x} FAR {:#x}",
        fault.kind,
        cpu::core_index(),
        fault.esr,
        fault.elr,
        fault.far
    ));
    cpu::halt()
}

//! Guest exits: decode once (`microvisor_logic::trap`), count, and dispatch to PSCI, device
//! emulation or the slice's fault policy. Nothing a guest does here can stop the hypervisor:
//! every unexpected case ends that slice's run.

use alloc::format;
use microvisor_arch::cpu;
use microvisor_arch::exceptions::{self, GuestFrame, Handlers, HypervisorFault};
use microvisor_logic::exits::ExitCause;
use microvisor_logic::guest_dt::{Device, device_at};
use microvisor_logic::trap::{self, Exit, MmioAccess, SysRegAccess};

use crate::node;
use crate::psci;
use crate::slice::{Ending, Slice, Vcpu};

/// The handlers the vector table calls.
pub fn handlers() -> Handlers {
    Handlers {
        guest_sync,
        guest_irq,
        guest_other,
        fatal,
    }
}

fn current() -> (&'static Slice, &'static Vcpu) {
    match node::current() {
        Some(pair) => pair,
        None => {
            crate::console::fatal(format_args!(
                "guest exit on core {} which runs no vCPU",
                cpu::core_index()
            ));
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
        Exit::DataAbort {
            ipa,
            write,
            page_walk,
            ..
        } => {
            vcpu.count(ExitCause::Fault);
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
            vcpu.count(ExitCause::Fault);
            Outcome::End(Ending::Fault(format!(
                "instruction fetch at IPA {ipa:#x} outside its RAM (vCPU {})",
                vcpu.index
            )))
        }
        Exit::SystemRegister(access) => system_register(slice, vcpu, frame, access),
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

/// Every path back into the guest goes through here: park or end the run if asked, then
/// bring the list registers up to date.
fn finish(slice: &Slice, vcpu: &Vcpu, frame: &mut GuestFrame, outcome: Outcome) {
    match outcome {
        Outcome::Resume => {}
        Outcome::CpuOff => slice.park(vcpu, frame),
        Outcome::End(ending) => slice.end(vcpu, ending, frame),
    }
    slice.check_stop(vcpu, frame);
    slice.sync_interrupts(vcpu);
}

/// Emulated MMIO, dispatched by device (`guest_dt::device_at`); anything else ends the run.
fn mmio(slice: &Slice, vcpu: &Vcpu, frame: &mut GuestFrame, access: MmioAccess) -> Outcome {
    let write = access
        .write
        .then(|| access.write_value(frame.reg(access.register)));
    let read = match device_at(access.ipa, slice.vcpus.len(), slice.disk.is_some()) {
        Some((device, offset)) => emulate(slice, vcpu, device, offset, access.width, write),
        None => match slice.nvme_access(access.ipa, access.width, write) {
            Some(read) => {
                vcpu.count(ExitCause::Nvme);
                read
            }
            None => {
                vcpu.count(ExitCause::Fault);
                let what = if access.write { "write" } else { "read" };
                return outside(what, access.ipa, frame, vcpu);
            }
        },
    };
    if write.is_none() {
        frame.set_reg(access.register, access.read_result(read));
    }
    frame.skip_instruction();
    Outcome::Resume
}

/// The run ends: the guest touched `ipa`, which is neither its RAM nor one of its devices.
fn outside(what: &str, ipa: u64, frame: &GuestFrame, vcpu: &Vcpu) -> Outcome {
    Outcome::End(Ending::Fault(format!(
        "{what} at IPA {ipa:#x} outside its RAM and devices (pc {:#x}, vCPU {})",
        frame.pc, vcpu.index
    )))
}

/// An access to an emulated device at `offset`; returns the value read (0 for a write).
fn emulate(
    slice: &Slice,
    vcpu: &Vcpu,
    device: Device,
    offset: u64,
    width: u8,
    write: Option<u64>,
) -> u64 {
    match device {
        Device::Uart => {
            vcpu.count(ExitCause::Uart);
            slice.uart_access(offset, write)
        }
        Device::PciConfig => {
            vcpu.count(ExitCause::PciConfig);
            slice.pci_config_access(offset, width, write)
        }
        Device::Distributor | Device::Redistributor { .. } => {
            vcpu.count(ExitCause::Gic);
            let mut value = 0;
            slice.with_gic(|gic| match (device, write) {
                (Device::Distributor, Some(v)) => gic.distributor_write(offset, width, v),
                (Device::Distributor, None) => {
                    value = gic.distributor_read(offset, width);
                    Default::default()
                }
                (Device::Redistributor { vcpu }, Some(v)) => {
                    gic.redistributor_write(vcpu, offset, width, v)
                }
                (Device::Redistributor { vcpu }, None) => {
                    value = gic.redistributor_read(vcpu, offset, width);
                    Default::default()
                }
                (Device::Uart | Device::PciConfig, _) => Default::default(),
            });
            value
        }
    }
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
) -> Outcome {
    let encoding = (access.op0, access.op1, access.crn, access.crm, access.op2);
    if encoding == SGI1R && !access.read {
        vcpu.count(ExitCause::Sgi);
        let value = frame.reg(access.register);
        slice.with_gic(|gic| gic.send_sgi(vcpu.index, value));
        frame.skip_instruction();
        return Outcome::Resume;
    }
    vcpu.count(ExitCause::SystemRegister);
    if OTHER_SGI_GENERATORS.contains(&encoding) && !access.read {
        frame.skip_instruction();
        return Outcome::Resume;
    }
    let what = if (access.op0, access.op1, access.crn, access.crm) == PHYSICAL_TIMER {
        "EL1 physical timer (slices have the virtual timer only)"
    } else {
        "undefined system register"
    };
    Outcome::End(Ending::Fault(format!(
        "{what}: {access} (pc {:#x}, vCPU {})",
        frame.pc, vcpu.index
    )))
}

fn guest_irq(frame: &mut GuestFrame) {
    let (slice, vcpu) = current();
    let handled = crate::irq::handle_pending(Some((slice, vcpu)));
    vcpu.count(handled.first.unwrap_or(ExitCause::OtherInterrupt));
    slice.check_stop(vcpu, frame);
    slice.sync_interrupts(vcpu);
    crate::irq::finish_maintenance(handled);
}

fn guest_other(frame: &mut GuestFrame, kind: &'static str) {
    let (slice, vcpu) = current();
    vcpu.count(ExitCause::Other);
    let ending = Ending::Fault(format!(
        "{kind} exception (pc {:#x}, vCPU {})",
        frame.pc, vcpu.index
    ));
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

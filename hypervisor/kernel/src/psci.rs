//! PSCI for guests (DESIGN §4): CPU_ON/OFF and AFFINITY_INFO only within the slice,
//! SYSTEM_OFF/RESET end the slice's run, everything else is NOT_SUPPORTED. Calls arrive by HVC
//! or by SMC (trapped); neither ever reaches the firmware.

use microvisor_arch::exceptions::GuestFrame;
use microvisor_logic::psci::{self, AffinityState, Call, status};
use microvisor_plan::layout::GUEST_RAM_BASE;

use crate::exits::Outcome;
use crate::slice::{Ending, Power, Slice};

/// PSCI INVALID_ADDRESS (DEN0022 §5.2.2).
const INVALID_ADDRESS: i64 = -9;

/// Handles the call in the guest's x0..x3; the result goes to x0.
pub fn handle(slice: &Slice, frame: &mut GuestFrame) -> Outcome {
    let call = psci::decode([frame.x[0], frame.x[1], frame.x[2], frame.x[3]]);
    let result: i64 = match call {
        Call::Version => psci::PSCI_VERSION_1_1 as i64,
        Call::SmcccVersion => psci::SMCCC_VERSION_1_1 as i64,
        Call::Features { function } => psci::features(function),
        Call::SmcccArchFeatures { .. } => status::NOT_SUPPORTED,
        Call::MigrateInfoType => psci::MIGRATE_NOT_REQUIRED as i64,
        Call::CpuOn {
            target,
            entry,
            context,
        } => cpu_on(slice, target, entry, context),
        Call::AffinityInfo {
            target,
            lowest_level,
        } => affinity_info(slice, target, lowest_level),
        Call::CpuOff => return Outcome::CpuOff,
        Call::SystemOff => return Outcome::End(Ending::PowerOff),
        Call::SystemReset => return Outcome::End(Ending::Reset),
        Call::MicrovisorNull => 0,
        Call::MicrovisorExits { cause } => exits(slice, cause) as i64,
        Call::Unknown { .. } => status::NOT_SUPPORTED,
    };
    frame.x[0] = result as u64;
    Outcome::Resume
}

/// The slice's exit counter `cause` (an `ExitCause` index, `EXITS_TOTAL` or
/// `EXITS_INJECTED`) summed over its vCPUs; all-ones for an unknown selector.
fn exits(slice: &Slice, cause: u64) -> u64 {
    use microvisor_logic::exits::ExitCause;
    let sum = |pick: &dyn Fn(&crate::slice::Vcpu) -> u64| slice.vcpus.iter().map(pick).sum();
    match cause {
        psci::EXITS_TOTAL => sum(&|v| v.exit_counts().iter().sum()),
        psci::EXITS_INJECTED => sum(&|v| v.injected()),
        c if (c as usize) < ExitCause::COUNT => sum(&|v| v.exit_counts()[c as usize]),
        _ => u64::MAX,
    }
}

fn cpu_on(slice: &Slice, target: u64, entry: u64, context: u64) -> i64 {
    let Some(index) = psci::vcpu_index(target, slice.vcpus.len()) else {
        return status::INVALID_PARAMETERS;
    };
    let memory = slice.ram().size;
    if entry < GUEST_RAM_BASE || entry - GUEST_RAM_BASE >= memory {
        return INVALID_ADDRESS;
    }
    match slice.power_on(&slice.vcpus[index], entry, context) {
        Ok(()) => status::SUCCESS,
        Err(code) => code,
    }
}

fn affinity_info(slice: &Slice, target: u64, lowest_level: u64) -> i64 {
    if lowest_level != 0 {
        return status::INVALID_PARAMETERS;
    }
    let Some(index) = psci::vcpu_index(target, slice.vcpus.len()) else {
        return status::INVALID_PARAMETERS;
    };
    let state = match slice.vcpus[index].power() {
        Power::On => AffinityState::On,
        Power::Off => AffinityState::Off,
        Power::OnPending { .. } => AffinityState::OnPending,
    };
    state as i64
}

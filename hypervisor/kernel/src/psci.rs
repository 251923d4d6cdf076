//! PSCI for guests (docs/architecture.md, "Exits"): CPU_ON/OFF and AFFINITY_INFO only within
//! the slice, SYSTEM_OFF/RESET end the slice's run, everything else is NOT_SUPPORTED. Calls
//! arrive by HVC or by SMC (trapped); neither ever reaches the firmware.

use microvisor_logic::psci::{self, AffinityState, Call, status};
use microvisor_plan::layout::GUEST_RAM_BASE;

use crate::slice::{Ending, Next, Slice};
use crate::vcpu::Power;

/// PSCI INVALID_ADDRESS (DEN0022 §5.2.2).
const INVALID_ADDRESS: i64 = -9;

/// What a call leaves the calling vCPU to do (small, so the call path returns it in
/// registers; [`Next`] for the rest of the exit path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Back to the guest with this result in x0.
    Return(u64),
    CpuOff,
    SystemOff,
    SystemReset,
}

impl From<Outcome> for Next {
    fn from(outcome: Outcome) -> Next {
        match outcome {
            Outcome::Return(_) => Next::Resume,
            Outcome::CpuOff => Next::CpuOff,
            Outcome::SystemOff => Next::End(Ending::PowerOff),
            Outcome::SystemReset => Next::End(Ending::Reset),
        }
    }
}

/// Handles the call whose x0..x3 are `args`; for [`Outcome::Return`] the caller puts the
/// result in x0.
pub fn handle(slice: &Slice, args: [u64; 4]) -> Outcome {
    let call = psci::decode(args);
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
        Call::SystemOff => return Outcome::SystemOff,
        Call::SystemReset => return Outcome::SystemReset,
        Call::MicrovisorNull => 0,
        // All-ones for an unknown selector.
        Call::MicrovisorExits { cause } => slice.exit_count(cause).unwrap_or(u64::MAX) as i64,
        Call::Unknown { .. } => status::NOT_SUPPORTED,
    };
    Outcome::Return(result as u64)
}

fn cpu_on(slice: &Slice, target: u64, entry: u64, context: u64) -> i64 {
    let Some(index) = psci::vcpu_index(target, slice.vcpus.len()) else {
        return status::INVALID_PARAMETERS;
    };
    if !psci::entry_point_valid(entry, GUEST_RAM_BASE, slice.ram().size) {
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

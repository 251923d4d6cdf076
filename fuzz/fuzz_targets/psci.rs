//! PSCI and SMCCC call decoding (`logic::psci`): any x0..x3, any MPIDR target, any vCPU count.
//!
//! Invariants (Arm DEN0022 PSCI 1.1 §5, DEN0028 SMCCC §7):
//! - a function ID with bits [63:32] set is never a call (`Unknown`), and `Unknown` carries
//!   x0[31:0];
//! - SMC32 calls (0x84.../0x80...) see only the low 32 bits of each argument; SMC64 ones all
//!   64 bits; each argument lands in the field its register names;
//! - `features` answers SUCCESS or NOT_SUPPORTED only, and SUCCESS only for functions that
//!   decode to an implemented call;
//! - `vcpu_index` names only a vCPU the slice has (index < vcpus), equal to Aff0, and only
//!   when Aff1..Aff3 are zero.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use microvisor_logic::psci::{Call, decode, features, function::*, status, vcpu_index};

/// Function IDs worth hitting, and neighbours.
const FUNCTIONS: [u32; 20] = [
    PSCI_VERSION,
    CPU_SUSPEND_32,
    CPU_SUSPEND_64,
    CPU_OFF,
    CPU_ON_32,
    CPU_ON_64,
    AFFINITY_INFO_32,
    AFFINITY_INFO_64,
    MIGRATE_INFO_TYPE,
    SYSTEM_OFF,
    SYSTEM_RESET,
    PSCI_FEATURES,
    SMCCC_VERSION,
    SMCCC_ARCH_FEATURES,
    MICROVISOR_NULL,
    MICROVISOR_EXITS,
    0x8400_0005,
    0xC400_000A,
    0x8600_0001,
    0xC600_0003,
];

#[derive(Arbitrary, Debug)]
struct Input {
    /// Pick x0 from `FUNCTIONS` (else keep the raw one).
    function: Option<(u8, bool)>,
    x: [u64; 4],
    vcpus: u8,
}

fn check(input: Input) {
    let mut x = input.x;
    if let Some((i, high)) = input.function {
        let id = u64::from(FUNCTIONS[usize::from(i) % FUNCTIONS.len()]);
        x[0] = if high { x[0] & !0xffff_ffff | id } else { id };
    }
    let id = x[0] as u32;
    let smc32 = id & 0x4000_0000 == 0;
    let narrow = |v: u64| if smc32 { v & 0xffff_ffff } else { v };
    let call = decode(x);
    if x[0] >> 32 != 0 {
        assert_eq!(call, Call::Unknown { function: id });
    }
    match call {
        Call::CpuOn {
            target,
            entry,
            context,
        } => {
            assert!(id == CPU_ON_32 || id == CPU_ON_64);
            assert_eq!(
                (target, entry, context),
                (narrow(x[1]), narrow(x[2]), narrow(x[3]))
            );
        }
        Call::AffinityInfo {
            target,
            lowest_level,
        } => {
            assert!(id == AFFINITY_INFO_32 || id == AFFINITY_INFO_64);
            assert_eq!((target, lowest_level), (narrow(x[1]), narrow(x[2])));
        }
        Call::Features { function } | Call::SmcccArchFeatures { function } => {
            assert_eq!(function, x[1] as u32);
        }
        Call::MicrovisorExits { cause } => assert_eq!(cause, x[1]),
        Call::Unknown { function } => assert_eq!(function, id),
        _ => {}
    }
    let answer = features(id);
    assert!(answer == status::SUCCESS || answer == status::NOT_SUPPORTED);
    if answer == status::SUCCESS {
        let plain = decode([u64::from(id), 0, 0, 0]);
        assert!(
            !matches!(plain, Call::Unknown { .. }),
            "PSCI_FEATURES says {id:#x} is implemented but it does not decode"
        );
    }
    let vcpus = usize::from(input.vcpus);
    for target in [x[1], x[2], x[3]] {
        if let Some(index) = vcpu_index(target, vcpus) {
            assert!(index < vcpus, "vCPU {index} of {vcpus}");
            assert_eq!(index as u64, target & 0xff);
            assert_eq!(target & 0xff_00ff_ff00, 0, "Aff1-3 not zero");
        } else if target & 0xff_00ff_ff00 == 0 {
            assert!((target & 0xff) as usize >= vcpus);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        check(input);
    }
});

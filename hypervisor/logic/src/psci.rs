//! PSCI as the guests see it (Arm DEN0022 "Power State Coordination Interface" 1.1, and the
//! SMCCC version calls of DEN0028): decoding a call and the answers that do not need the
//! hypervisor's state.

/// Function IDs (DEN0022 §5.1, SMC32 = 0x84.., SMC64 = 0xC4..).
pub mod function {
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
    pub const CPU_SUSPEND_64: u32 = 0xC400_0001;
    pub const CPU_OFF: u32 = 0x8400_0002;
    pub const CPU_ON_32: u32 = 0x8400_0003;
    pub const CPU_ON_64: u32 = 0xC400_0003;
    pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
    pub const AFFINITY_INFO_64: u32 = 0xC400_0004;
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    pub const PSCI_FEATURES: u32 = 0x8400_000A;
    /// SMCCC_VERSION (DEN0028 §7.2).
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    /// SMCCC_ARCH_FEATURES (DEN0028 §7.3).
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    /// Microvisor calls, in the SMC64 vendor-specific hypervisor service range (DEN0028
    /// §6.2): a call that does nothing (round-trip cost), and one that reads the slice's exit
    /// counters (x1 = cause index, or `EXITS_TOTAL`).
    pub const MICROVISOR_NULL: u32 = 0xC600_0001;
    pub const MICROVISOR_EXITS: u32 = 0xC600_0002;
}

/// Return codes (DEN0022 §5.2.2), as the signed value placed in x0.
pub mod status {
    pub const SUCCESS: i64 = 0;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const INVALID_PARAMETERS: i64 = -2;
    pub const ALREADY_ON: i64 = -4;
    pub const ON_PENDING: i64 = -5;
    pub const INTERNAL_FAILURE: i64 = -6;
}

/// `MICROVISOR_EXITS` selector for the sum of all causes.
pub const EXITS_TOTAL: u64 = 0xffff;
/// `MICROVISOR_EXITS` selector for the number of injected virtual interrupts.
pub const EXITS_INJECTED: u64 = 0xfffe;

/// PSCI 1.1 (major 1 in bits [31:16], minor 1 in bits [15:0]).
pub const PSCI_VERSION_1_1: u64 = 0x0001_0001;
/// SMCCC 1.1.
pub const SMCCC_VERSION_1_1: u64 = 0x0001_0001;
/// MIGRATE_INFO_TYPE: "Trusted OS not present or does not require migration".
pub const MIGRATE_NOT_REQUIRED: u64 = 2;

/// The answer to AFFINITY_INFO for one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AffinityState {
    On = 0,
    Off = 1,
    OnPending = 2,
}

/// A decoded guest call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Version,
    CpuOff,
    CpuOn {
        target: u64,
        entry: u64,
        context: u64,
    },
    AffinityInfo {
        target: u64,
        lowest_level: u64,
    },
    MigrateInfoType,
    SystemOff,
    SystemReset,
    Features {
        function: u32,
    },
    SmcccVersion,
    SmcccArchFeatures {
        function: u32,
    },
    /// Anything else: answered NOT_SUPPORTED.
    /// The microvisor's null call.
    MicrovisorNull,
    /// Read exit counters: `cause` indexes `ExitCause::ALL`, then the slice's MMIO counters
    /// in bus order; [`EXITS_TOTAL`] sums them all, [`EXITS_INJECTED`] counts injected virtual
    /// interrupts.
    MicrovisorExits {
        cause: u64,
    },
    Unknown {
        function: u32,
    },
}

/// Decodes the call in x0..x3. SMC32 variants see only the low 32 bits of their arguments.
pub fn decode(x: [u64; 4]) -> Call {
    use function::*;
    let function = x[0] as u32;
    let narrow = |v: u64| v & u64::from(u32::MAX);
    if x[0] >> 32 != 0 {
        return Call::Unknown { function };
    }
    match function {
        PSCI_VERSION => Call::Version,
        CPU_OFF => Call::CpuOff,
        CPU_ON_64 => Call::CpuOn {
            target: x[1],
            entry: x[2],
            context: x[3],
        },
        CPU_ON_32 => Call::CpuOn {
            target: narrow(x[1]),
            entry: narrow(x[2]),
            context: narrow(x[3]),
        },
        AFFINITY_INFO_64 => Call::AffinityInfo {
            target: x[1],
            lowest_level: x[2],
        },
        AFFINITY_INFO_32 => Call::AffinityInfo {
            target: narrow(x[1]),
            lowest_level: narrow(x[2]),
        },
        MIGRATE_INFO_TYPE => Call::MigrateInfoType,
        SYSTEM_OFF => Call::SystemOff,
        SYSTEM_RESET => Call::SystemReset,
        PSCI_FEATURES => Call::Features {
            function: x[1] as u32,
        },
        SMCCC_VERSION => Call::SmcccVersion,
        MICROVISOR_NULL => Call::MicrovisorNull,
        MICROVISOR_EXITS => Call::MicrovisorExits { cause: x[1] },
        SMCCC_ARCH_FEATURES => Call::SmcccArchFeatures {
            function: x[1] as u32,
        },
        _ => Call::Unknown { function },
    }
}

/// PSCI_FEATURES: 0 for the functions the slice's PSCI implements, NOT_SUPPORTED otherwise.
pub fn features(function: u32) -> i64 {
    use function::*;
    match function {
        PSCI_VERSION | CPU_OFF | CPU_ON_32 | CPU_ON_64 | AFFINITY_INFO_32 | AFFINITY_INFO_64
        | MIGRATE_INFO_TYPE | SYSTEM_OFF | SYSTEM_RESET | PSCI_FEATURES | SMCCC_VERSION => {
            status::SUCCESS
        }
        _ => status::NOT_SUPPORTED,
    }
}

/// The vCPU index a guest's target MPIDR names, if the slice has it: Aff0 is the vCPU index
/// and every other affinity field must be zero (bits outside the affinity fields are ignored,
/// as the PSCI spec says for MPIDR arguments).
pub fn vcpu_index(target: u64, vcpus: usize) -> Option<usize> {
    const AFF0: u64 = 0xff;
    const UPPER_AFFINITY: u64 = 0xff_00ff_ff00;
    if target & UPPER_AFFINITY != 0 {
        return None;
    }
    let index = (target & AFF0) as usize;
    (index < vcpus).then_some(index)
}

/// Whether a CPU_ON entry point can be entered: inside the slice's RAM (`ram_bytes` from
/// `ram_base`) and 4-byte aligned (an A64 instruction). Anything else is INVALID_ADDRESS, as
/// PSCI asks: an unaligned entry would take a PC alignment fault before the guest's vectors
/// exist, which ends the whole run.
pub fn entry_point_valid(entry: u64, ram_base: u64, ram_bytes: u64) -> bool {
    entry.is_multiple_of(4)
        && entry
            .checked_sub(ram_base)
            .is_some_and(|offset| offset < ram_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_are_aligned_and_inside_ram() {
        let (base, size) = (0x4000_0000, 64 << 20);
        assert!(entry_point_valid(base, base, size));
        assert!(entry_point_valid(base + size - 4, base, size));
        assert!(!entry_point_valid(base + size, base, size));
        assert!(!entry_point_valid(base - 4, base, size));
        assert!(!entry_point_valid(0, base, size));
        assert!(!entry_point_valid(u64::MAX - 3, base, size));
        for misaligned in [1, 2, 3, 0x1002] {
            assert!(!entry_point_valid(base + misaligned, base, size));
        }
    }

    #[test]
    fn decodes_cpu_on_64_and_32() {
        assert_eq!(
            decode([0xC400_0003, 1, 0x4008_0000, 7]),
            Call::CpuOn {
                target: 1,
                entry: 0x4008_0000,
                context: 7
            }
        );
        assert_eq!(
            decode([0x8400_0003, 0xffff_ffff_0000_0001, 0x1_4008_0000, 0]),
            Call::CpuOn {
                target: 1,
                entry: 0x4008_0000,
                context: 0
            }
        );
    }

    #[test]
    fn decodes_the_microvisor_calls() {
        assert_eq!(decode([0xC600_0001, 0, 0, 0]), Call::MicrovisorNull);
        assert_eq!(
            decode([0xC600_0002, 3, 0, 0]),
            Call::MicrovisorExits { cause: 3 }
        );
        assert_eq!(
            decode([0xC600_0003, 0, 0, 0]),
            Call::Unknown {
                function: 0xC600_0003
            }
        );
    }

    #[test]
    fn decodes_the_rest() {
        assert_eq!(decode([0x8400_0000, 0, 0, 0]), Call::Version);
        assert_eq!(decode([0x8400_0002, 0, 0, 0]), Call::CpuOff);
        assert_eq!(
            decode([0xC400_0004, 2, 0, 0]),
            Call::AffinityInfo {
                target: 2,
                lowest_level: 0
            }
        );
        assert_eq!(decode([0x8400_0006, 0, 0, 0]), Call::MigrateInfoType);
        assert_eq!(decode([0x8400_0008, 0, 0, 0]), Call::SystemOff);
        assert_eq!(decode([0x8400_0009, 0, 0, 0]), Call::SystemReset);
        assert_eq!(
            decode([0x8400_000A, 0x8400_0009, 0, 0]),
            Call::Features {
                function: 0x8400_0009
            }
        );
        assert_eq!(decode([0x8000_0000, 0, 0, 0]), Call::SmcccVersion);
        assert_eq!(
            decode([0x8000_0001, 0x8000_8000, 0, 0]),
            Call::SmcccArchFeatures {
                function: 0x8000_8000
            }
        );
        assert_eq!(
            decode([0xC600_0000, 0, 0, 0]),
            Call::Unknown {
                function: 0xC600_0000
            }
        );
    }

    #[test]
    fn function_id_with_upper_bits_is_unknown() {
        assert_eq!(
            decode([0x1_8400_0008, 0, 0, 0]),
            Call::Unknown {
                function: 0x8400_0008
            }
        );
    }

    #[test]
    fn features_lists_what_is_implemented() {
        assert_eq!(features(function::CPU_ON_64), status::SUCCESS);
        assert_eq!(features(function::SYSTEM_RESET), status::SUCCESS);
        assert_eq!(features(function::CPU_SUSPEND_64), status::NOT_SUPPORTED);
        assert_eq!(features(0xC400_0012), status::NOT_SUPPORTED);
    }

    #[test]
    fn only_own_vcpus_are_targets() {
        assert_eq!(vcpu_index(0, 2), Some(0));
        assert_eq!(
            vcpu_index(0x8000_0001, 2),
            Some(1),
            "MPIDR bit 31 is not an affinity field"
        );
        assert_eq!(vcpu_index(2, 2), None);
        assert_eq!(vcpu_index(0x100, 2), None, "Aff1 != 0");
        assert_eq!(vcpu_index(0x1_0000, 2), None, "Aff2 != 0");
        assert_eq!(vcpu_index(0x1_0000_0000, 2), None, "Aff3 != 0");
    }
}

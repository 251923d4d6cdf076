//! PSCI function IDs and return codes (Arm DEN 0022, PSCI 1.1 §5) the probe uses; the calls
//! themselves are in `bare::psci`.

/// PSCI_VERSION.
pub const PSCI_VERSION: u64 = 0x8400_0000;
/// CPU_OFF.
pub const CPU_OFF: u64 = 0x8400_0002;
/// CPU_ON, SMC64.
pub const CPU_ON: u64 = 0xC400_0003;
/// AFFINITY_INFO, SMC64.
pub const AFFINITY_INFO: u64 = 0xC400_0004;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u64 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u64 = 0x8400_0009;

/// SMCCC/PSCI NOT_SUPPORTED.
pub const NOT_SUPPORTED: i64 = -1;
/// PSCI INVALID_PARAMETERS.
pub const INVALID_PARAMETERS: i64 = -2;

/// Short name of a PSCI return code (PSCI §5.2.2).
pub fn status_name(ret: i64) -> &'static str {
    match ret {
        0 => "SUCCESS",
        -1 => "NOT_SUPPORTED",
        -2 => "INVALID_PARAMETERS",
        -3 => "DENIED",
        -4 => "ALREADY_ON",
        -5 => "ON_PENDING",
        -6 => "INTERNAL_FAILURE",
        -7 => "NOT_PRESENT",
        -8 => "DISABLED",
        -9 => "INVALID_ADDRESS",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_codes_have_their_spec_names() {
        assert_eq!(status_name(NOT_SUPPORTED), "NOT_SUPPORTED");
        assert_eq!(status_name(INVALID_PARAMETERS), "INVALID_PARAMETERS");
        assert_eq!(status_name(0), "SUCCESS");
        assert_eq!(status_name(-42), "UNKNOWN");
    }
}

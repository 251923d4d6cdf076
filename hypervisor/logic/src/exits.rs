//! Exit causes the hypervisor counts per vCPU (DESIGN §6: by ESR class, MMIO region, IRQ).

/// Why a vCPU entered the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCause {
    /// HVC: PSCI and hypervisor calls.
    Hypercall,
    /// SMC trapped by HCR_EL2.TSC.
    SecureMonitorCall,
    /// Emulated PL011 access.
    Uart,
    /// Emulated GIC distributor or redistributor access.
    Gic,
    /// A stage-2 abort that stopped or restarted the slice.
    Fault,
    /// A trapped system register access.
    SystemRegister,
    /// A physical interrupt taken at EL2 (hypervisor IPI or device).
    Interrupt,
    /// Any other exception class.
    Other,
}

impl ExitCause {
    /// Every cause, in counter order.
    pub const ALL: [ExitCause; 8] = [
        ExitCause::Hypercall,
        ExitCause::SecureMonitorCall,
        ExitCause::Uart,
        ExitCause::Gic,
        ExitCause::Fault,
        ExitCause::SystemRegister,
        ExitCause::Interrupt,
        ExitCause::Other,
    ];
    /// Number of causes.
    pub const COUNT: usize = Self::ALL.len();

    /// Position of the cause's counter.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Name printed in exit reports.
    pub const fn name(self) -> &'static str {
        match self {
            ExitCause::Hypercall => "hvc",
            ExitCause::SecureMonitorCall => "smc",
            ExitCause::Uart => "mmio-uart",
            ExitCause::Gic => "mmio-gic",
            ExitCause::Fault => "fault",
            ExitCause::SystemRegister => "sysreg",
            ExitCause::Interrupt => "irq",
            ExitCause::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_follow_the_table() {
        for (i, cause) in ExitCause::ALL.iter().enumerate() {
            assert_eq!(cause.index(), i);
            assert!(!cause.name().is_empty());
        }
    }
}

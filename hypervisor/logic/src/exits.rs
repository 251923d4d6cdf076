//! Exit causes the hypervisor counts per vCPU: by ESR class and by physical interrupt. MMIO
//! exits are counted by the slice's bus instead, one counter per device region name
//! (`crate::bus`).

/// Why a vCPU entered the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCause {
    /// HVC: PSCI and hypervisor calls.
    Hypercall,
    /// SMC trapped by HCR_EL2.TSC.
    SecureMonitorCall,
    /// A trapped ICC_SGI1R_EL1 write (an IPI inside the slice).
    Sgi,
    /// A guest error that ended the slice's run (an abort or undefined system register under
    /// `on-fault = "stop"/"restart"`, or one that cannot be delivered as an exception).
    Fault,
    /// Another trapped system register access.
    SystemRegister,
    /// The EL1 virtual timer fired (injected with the HW bit).
    Timer,
    /// A hypervisor SGI: another core asked this one to look at its vCPU (injection, stop).
    Kick,
    /// The GIC maintenance interrupt (list registers drained or a level interrupt ended).
    Maintenance,
    /// Node console input arrived on this core.
    ConsoleInput,
    /// A physical interrupt of one of the slice's devices (e.g. an NVMe hardware queue's
    /// completion LPI).
    DeviceInterrupt,
    /// A physical interrupt with no other cause (spurious or unexpected).
    OtherInterrupt,
    /// Any other exception class.
    Other,
    /// A synchronous external abort delivered to the guest (an access nothing answers).
    Abort,
    /// An Undefined Instruction exception delivered to the guest (a system register the
    /// slice does not have).
    Undefined,
}

impl ExitCause {
    /// Every cause, in counter order.
    pub const ALL: [ExitCause; 14] = [
        ExitCause::Hypercall,
        ExitCause::SecureMonitorCall,
        ExitCause::Sgi,
        ExitCause::Fault,
        ExitCause::SystemRegister,
        ExitCause::Timer,
        ExitCause::Kick,
        ExitCause::Maintenance,
        ExitCause::ConsoleInput,
        ExitCause::DeviceInterrupt,
        ExitCause::OtherInterrupt,
        ExitCause::Other,
        ExitCause::Abort,
        ExitCause::Undefined,
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
            ExitCause::Sgi => "sgi",
            ExitCause::Fault => "fault",
            ExitCause::SystemRegister => "sysreg",
            ExitCause::Timer => "irq-timer",
            ExitCause::Kick => "irq-kick",
            ExitCause::Maintenance => "irq-maintenance",
            ExitCause::ConsoleInput => "irq-console",
            ExitCause::DeviceInterrupt => "irq-device",
            ExitCause::OtherInterrupt => "irq-other",
            ExitCause::Other => "other",
            ExitCause::Abort => "abort",
            ExitCause::Undefined => "undef",
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

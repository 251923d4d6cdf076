//! Plan errors: every invalid plan names the slice (when there is one), the field, and the
//! problem, in one line, e.g. `slice "web-0": cores: asks for 4 cores but only 3 are left (node has 8)`.

use alloc::string::String;

/// The plan field an error is about (its TOML spelling is what `Display` prints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The plan as a whole (`[[slice]]` list, syntax).
    Plan,
    Name,
    Cores,
    Memory,
    Kernel,
    Initrd,
    Cmdline,
    OnFault,
    NvmeQueues,
    NvmeSize,
}

/// What is wrong. One variant per kind of invalid input; each has a unit test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    // TODO(plan helper): fill in, one doc line per variant.
}

/// One invalid-plan error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError {
    /// Name of the slice concerned (or its 1-based position `#3` when it has no valid name yet).
    pub slice: Option<String>,
    pub field: Field,
    pub problem: Problem,
}

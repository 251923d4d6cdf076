//! Where the virtual NVMe controller keeps its MSI-X table and Pending Bit Array in BAR0. The
//! table itself is the shared [`crate::msix::MsixTable`].

pub(crate) use crate::msix::MsixTable;

/// BAR0 offset of the MSI-X table (Table BIR 0).
pub const MSIX_TABLE_OFFSET: u64 = 0x2000;
/// BAR0 offset of the Pending Bit Array (PBA BIR 0).
pub const MSIX_PBA_OFFSET: u64 = 0x3000;

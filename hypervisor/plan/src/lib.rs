//! The slice plan: model, validation, placement onto hardware, guest memory layout and the
//! image bundle format. One piece of code used by `xtask` (host, feature `std`) and by the
//! hypervisor at boot (no_std + alloc). See DESIGN §6 and `docs/plan.md`.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

extern crate alloc;

pub mod bundle;
pub mod error;
pub mod image;
pub mod layout;
pub mod model;
pub mod place;
pub mod size;
#[cfg(feature = "std")]
pub mod toml_plan;

pub use bundle::{Bundle, BundleError, BundleImage};
pub use error::{Field, PlanError, Problem};
pub use image::{Arm64Header, ImageError};
pub use layout::{GuestLayout, GUEST_RAM_BASE};
pub use model::{BuiltIn, CompiledPlan, Cores, ImageIndex, ImageSource, NvmeShare, OnFault, Plan, PlanOf, SliceOf};
pub use place::{Hardware, Placement, RamRange, SlicePlacement};

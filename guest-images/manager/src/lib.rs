//! Client of the microvisor's control interface (docs/control.md, version 1), shared by the
//! manager slice's `microvisorctl` and the Redfish service.
//!
//! - [`protocol`]: op and status codes, request and response headers, as on the wire.
//! - [`status`]: the JSON objects (slice status, staged image), typed.
//! - [`Transport`]: executes one request; [`DevMemTransport`] is the real one (the device
//!   tree's `microvisor,control-v1` node mapped from `/dev/mem`), `fake::FakeHypervisor`
//!   (feature `fake`) an in-memory model of the hypervisor for host tests.
//! - [`Client`]: the operations as typed calls, answers checked, waits bounded.
//! - [`gpio`]: the GPIO character device uAPI `powerkey` uses.
//!
//! ```no_run
//! use microvisor_control::{Client, DevMemTransport};
//! let mut client = Client::new(DevMemTransport::open()?);
//! for slice in client.list()? {
//!     println!("{} {}", slice.name, slice.state);
//! }
//! # Ok::<(), microvisor_control::Error>(())
//! ```

pub mod client;
pub mod devmem;
pub mod dt;
pub mod error;
#[cfg(feature = "fake")]
pub mod fake;
pub mod gpio;
pub mod protocol;
pub mod status;
pub mod sys;
pub mod transport;

pub use client::{BootSpec, Client, ConsoleChunk, InitrdChoice, Pacing, last_lines};
pub use devmem::DevMemTransport;
pub use error::Error;
pub use protocol::{ImageKind, Op, Status};
pub use status::{SliceState, SliceStatus, StagedImage};
pub use transport::{Request, Response, Transport};

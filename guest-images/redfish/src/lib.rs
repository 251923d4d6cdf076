//! The manager slice's DMTF Redfish service (docs/redfish.md): each slice other than the
//! manager is a `ComputerSystem` of one `Manager` (the node), driven through the control
//! interface's client library; the service never touches hardware itself.
//!
//! - [`iso`]: ISO 9660 images for virtual media, and the kernel, initrd and command line their
//!   boot configuration names.
//! - [`http`]: requests and responses as the service sees them, Redfish error bodies.
//! - [`auth`]: the account, Basic credentials and sessions.
//! - [`resources`]: the resources as types, after their DMTF schemas.
//! - [`service`]: routing, actions and what the service keeps per system.
//! - [`server`]: HTTP and TLS in front of the service, every client bounded.

pub mod auth;
pub mod http;
pub mod resources;
pub mod server;
pub mod service;

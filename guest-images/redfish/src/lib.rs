//! The manager slice's DMTF Redfish service (docs/redfish.md): each slice other than the
//! manager is a `ComputerSystem` of one `Manager` (the node), driven through the control
//! interface's client library; the service never touches hardware itself.
//!
//! - [`iso`]: ISO 9660 images for virtual media, and the kernel, initrd and command line their
//!   boot configuration names.
//! - [`fetch`]: virtual media URLs fetched into memory, hosts checked against an allow-list
//!   before any connection, size, redirects and time bounded.
//! - [`http`]: requests and responses as the service sees them, Redfish error bodies.
//! - [`auth`]: the account, Basic credentials and sessions.
//! - [`resources`]: the resources as types, after their DMTF schemas.
//! - [`service`]: routing, actions and what the service keeps per system.
//! - [`server`]: HTTP and TLS in front of the service, every client bounded.

pub mod auth;
pub mod fetch;
pub mod http;
pub mod iso;
pub mod resources;
pub mod server;
pub mod service;

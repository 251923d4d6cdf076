//! The manager's register page (docs/control.md): a device of the manager slice whose
//! `EXECUTE` is about the whole node, so it goes to the node's [`Service`].

use microvisor_logic::control::{ID, Register, Status, VERSION, WINDOW_SIZE};
use microvisor_logic::guest_dt::{ControlNode, DeviceNode};

use super::{Context, MmioDevice};

/// Where the manager's `EXECUTE` goes: the node (which holds the [`Control`] and every
/// slice, and is published once every slice is built) serves it. A trait, so that the
/// register page, a device of one slice, does not reach up to the node.
pub trait Service: Sync {
    /// Runs the request in the window; its status.
    fn execute(&self) -> u64;
}

static SERVICE: spin::Once<&'static dyn Service> = spin::Once::new();

/// Makes `service` answer the register page's `EXECUTE` (once, when the node is published).
pub fn serve(service: &'static dyn Service) {
    SERVICE.call_once(|| service);
}

/// The register page in the manager's address space. Reads of `EXECUTE` go to the node's
/// [`Service`]: the page is a device of the manager slice, the requests are about the whole
/// node.
pub struct ControlPage {
    node: ControlNode,
}

impl ControlPage {
    pub fn new() -> Self {
        Self { node: ControlNode }
    }
}

impl MmioDevice for ControlPage {
    fn node(&self) -> &dyn DeviceNode {
        &self.node
    }

    fn access(
        &self,
        _ctx: &Context<'_>,
        _region: usize,
        offset: u64,
        width: u8,
        write: Option<u64>,
    ) -> Option<u64> {
        if write.is_some() {
            return Some(0);
        }
        Some(match Register::decode(offset, width) {
            Register::Id => ID,
            Register::Version => VERSION,
            Register::WindowSize => WINDOW_SIZE,
            Register::Execute => SERVICE
                .get()
                .map_or(Status::UnknownOp as u64, |service| service.execute()),
            Register::Unknown => 0,
        })
    }
}

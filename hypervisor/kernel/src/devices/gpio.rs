//! The slice's PL061 GPIO controller (`microvisor_logic::pl061`): the hypervisor drives its
//! input lines, line 3 being the slice's power key (docs/control.md, "Power key"); its
//! interrupt output is the slice's SPI 7 (INTID 39), level high.

use microvisor_logic::guest_dt::{DeviceNode, Pl061Node};
use microvisor_logic::pl061::VirtualPl061;
use spin::Mutex;

use super::{Context, MmioDevice};
use crate::vgic::SliceGic;

/// A slice's GPIO controller.
pub struct Gpio {
    node: Pl061Node,
    state: Mutex<VirtualPl061>,
}

impl Gpio {
    pub fn new() -> Self {
        Self {
            node: Pl061Node,
            state: Mutex::new(VirtualPl061::new()),
        }
    }

    /// Drives input `line` high or low (lines past the eighth are ignored) and updates the
    /// controller's interrupt line in the slice's vGIC.
    pub fn set_input(&self, line: u8, high: bool, gic: &SliceGic) {
        let mut state = self.state.lock();
        state.set_input(line, high);
        apply_level(&state, gic);
    }
}

impl Default for Gpio {
    fn default() -> Self {
        Self::new()
    }
}

/// Copies the controller's interrupt output to the vGIC, with the state locked (as the UART
/// does: two cores applying levels computed under the lock after it could leave a stale one).
fn apply_level(state: &VirtualPl061, gic: &SliceGic) {
    let level = state.interrupt_pending();
    gic.change(|g| g.set_level(Pl061Node::INTID, level));
}

impl MmioDevice for Gpio {
    fn node(&self) -> &dyn DeviceNode {
        &self.node
    }

    fn access(
        &self,
        ctx: &Context<'_>,
        _region: usize,
        offset: u64,
        _width: u8,
        write: Option<u64>,
    ) -> Option<u64> {
        let mut state = self.state.lock();
        let value = match write {
            Some(value) => {
                state.write(offset, value as u32);
                0
            }
            None => u64::from(state.read(offset)),
        };
        apply_level(&state, ctx.gic);
        Some(value)
    }

    /// Back to the power-on state: every input low (a pressed power key is released), every
    /// register reset. The vGIC is reset after the devices, so the line's level goes with it.
    fn reset(&self) {
        *self.state.lock() = VirtualPl061::new();
    }
}

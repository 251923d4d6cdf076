//! The slice's PL011 (`microvisor_logic::pl011`): what the guest writes goes to the node
//! console as `[<slice>] <line>` lines and into a ring of its last bytes the manager can read;
//! node console input (and the manager's) waits in a buffer for room in the receive FIFO.

use alloc::collections::VecDeque;
use alloc::string::String;

use alloc::vec::Vec;
use microvisor_logic::console::LineBuffer;
use microvisor_logic::control::ConsoleRing;
use microvisor_logic::guest_dt::{DeviceNode, Pl011Node};
use microvisor_logic::pl011::VirtualPl011;
use spin::Mutex;

use super::{Context, MmioDevice};
use crate::output;
use crate::vgic::SliceGic;

/// Console input a slice can have waiting (bytes beyond are dropped, as a UART would).
const INPUT_BUFFER: usize = 4096;

struct State {
    device: VirtualPl011,
    line: LineBuffer,
    /// Console input waiting for room in the PL011's 32-byte receive FIFO.
    pending_input: VecDeque<u8>,
    /// The interrupt level last given to the vGIC (None: not since the reset). Only this
    /// state, under its lock, sets the line; the vGIC's own reset comes with the devices'
    /// reset at a start, when the PL011's interrupts are masked and its level low.
    applied: Option<bool>,
}

impl State {
    fn new() -> Self {
        Self {
            device: VirtualPl011::new(),
            line: LineBuffer::new(),
            pending_input: VecDeque::new(),
            applied: None,
        }
    }

    /// Moves waiting input into the receive FIFO while it has room.
    #[inline] // on an exit path: inlined even under the image's lower inline threshold
    fn refill(&mut self) {
        while let Some(&byte) = self.pending_input.front() {
            if !self.device.receive(byte) {
                break;
            }
            self.pending_input.pop_front();
        }
    }

    /// Copies the PL011's interrupt output to the vGIC. Called with the state locked: two
    /// cores (a vCPU reading DR, the core taking console input) that computed their levels
    /// under the lock but applied them after it could otherwise leave the line low with bytes
    /// in the FIFO, and the guest would never read them.
    /// The vGIC is only told of a change (most accesses, e.g. every poll of the flag
    /// register, leave the level as it was).
    fn apply_level(&mut self, gic: &SliceGic) {
        let level = self.device.interrupt_pending();
        if self.applied != Some(level) {
            self.applied = Some(level);
            gic.change(|g| g.set_level(Pl011Node::INTID, level));
        }
    }
}

/// A slice's UART.
pub struct Uart {
    node: Pl011Node,
    /// The slice's name, the prefix of its console lines.
    slice: String,
    state: Mutex<State>,
    /// Everything the guest printed, last bytes kept, across runs, when the node has a
    /// manager to read it (docs/control.md).
    ring: Option<Mutex<ConsoleRing>>,
}

impl Uart {
    pub fn new(slice: &str, ring: bool) -> Self {
        Self {
            node: Pl011Node,
            slice: slice.into(),
            state: Mutex::new(State::new()),
            ring: ring.then(|| Mutex::new(ConsoleRing::new())),
        }
    }

    /// Bytes for the receive side (the manager's `CONSOLE_WRITE`): as many as the input
    /// buffer has room for; how many that was.
    pub fn console_input_bytes(&self, bytes: &[u8], gic: &SliceGic) -> usize {
        let mut state = self.state.lock();
        let room = INPUT_BUFFER.saturating_sub(state.pending_input.len());
        let taken = bytes.len().min(room);
        state.pending_input.extend(&bytes[..taken]);
        state.refill();
        state.apply_level(gic);
        taken
    }

    /// Up to `max` bytes of output from `cursor` (see [`ConsoleRing::read`]).
    pub fn console_read(&self, cursor: u64, max: usize) -> (u64, Vec<u8>) {
        match &self.ring {
            Some(ring) => ring.lock().read(cursor, max),
            None => (cursor, Vec::new()),
        }
    }

    /// The slice was erased for a new tenant: the output kept so far is no longer returned.
    pub fn forget_output(&self) {
        if let Some(ring) = &self.ring {
            ring.lock().forget();
        }
    }

    /// A byte typed on the node console while this slice has the focus.
    pub fn console_input(&self, byte: u8, gic: &SliceGic) {
        let mut state = self.state.lock();
        if state.pending_input.len() < INPUT_BUFFER {
            state.pending_input.push_back(byte);
        }
        state.refill();
        state.apply_level(gic);
    }
}

impl MmioDevice for Uart {
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
                if let Some(byte) = state.device.write(offset, value as u32) {
                    if let Some(ring) = &self.ring {
                        ring.lock().push(byte);
                    }
                    if let Some(line) = state.line.push(byte) {
                        output::slice_line(&self.slice, line);
                    }
                }
                0
            }
            None => {
                let value = state.device.read(offset);
                state.refill();
                u64::from(value)
            }
        };
        state.apply_level(ctx.gic);
        Some(value)
    }

    fn quiesce(&self, _ctx: &Context<'_>) -> Result<(), &'static str> {
        let mut state = self.state.lock();
        if !state.line.is_empty() {
            output::slice_line(&self.slice, state.line.take());
        }
        Ok(())
    }

    fn reset(&self) {
        *self.state.lock() = State::new();
    }
}

//! A transport executes one request of the control interface: the real one maps the
//! window from `/dev/mem` ([`crate::devmem`]), the fake models the hypervisor
//! (`crate::fake`, feature `fake`).

use crate::error::Error;
use crate::protocol::{self, Op, REQUEST_MAGIC, RequestHeader};

/// One request: the header's fields and the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The `op` field (an [`Op`] code; anything else is sent as it is).
    pub op: u32,
    /// The target's name (empty for `LIST`).
    pub slice: &'a str,
    pub a0: u64,
    pub a1: u64,
    pub a2: u64,
    pub payload: &'a [u8],
}

impl<'a> Request<'a> {
    /// `op` on `slice`, arguments zero, no payload.
    pub fn new(op: Op, slice: &'a str) -> Self {
        Request {
            op: op.code(),
            slice,
            a0: 0,
            a1: 0,
            a2: 0,
            payload: &[],
        }
    }

    pub fn a0(mut self, a0: u64) -> Self {
        self.a0 = a0;
        self
    }

    pub fn a1(mut self, a1: u64) -> Self {
        self.a1 = a1;
        self
    }

    pub fn payload(mut self, payload: &'a [u8]) -> Self {
        self.payload = payload;
        self
    }

    /// The request header every transport writes: the name encoded, the payload no longer
    /// than `capacity` (the window's payload area).
    pub fn header(&self, capacity: usize) -> Result<RequestHeader, Error> {
        let slice = protocol::encode_slice_name(self.slice)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if self.payload.len() > capacity {
            return Err(Error::InvalidArgument(format!(
                "a payload of {} bytes (the window holds {capacity})",
                self.payload.len()
            )));
        }
        Ok(RequestHeader {
            magic: REQUEST_MAGIC,
            op: self.op,
            a0: self.a0,
            a1: self.a1,
            a2: self.a2,
            length: self.payload.len() as u64,
            slice,
        })
    }
}

/// The response: the status code, `r0`, `r1` and the payload.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Response {
    pub status: u64,
    pub r0: u64,
    pub r1: u64,
    pub payload: Vec<u8>,
}

/// Executes requests of the control interface.
pub trait Transport {
    /// Bytes the payload area holds: the most a request or a response carries.
    fn payload_capacity(&self) -> usize;

    /// Runs `request`. `Err` only when the request could not be run or its answer not be
    /// read (a refusal by the hypervisor is an `Ok` response with its status).
    fn execute(&mut self, request: &Request<'_>) -> Result<Response, Error>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn payload_capacity(&self) -> usize {
        (**self).payload_capacity()
    }

    fn execute(&mut self, request: &Request<'_>) -> Result<Response, Error> {
        (**self).execute(request)
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn payload_capacity(&self) -> usize {
        (**self).payload_capacity()
    }

    fn execute(&mut self, request: &Request<'_>) -> Result<Response, Error> {
        (**self).execute(request)
    }
}

/// Message of a `BUSY` that did not touch the window (another vCPU's request was running).
pub const BUSY_UNTOUCHED: &str = "another request of the control interface is running";

/// The response of one read of `EXECUTE` that returned `execute`, with `window` the response
/// header and payload the hypervisor wrote, or `None` when it left the window alone; checked
/// against docs/control.md (the header's status is `EXECUTE`'s, the payload fits).
pub fn response_from(
    execute: u64,
    window: Option<(crate::protocol::ResponseHeader, Vec<u8>)>,
    capacity: usize,
) -> Result<Response, Error> {
    let Some((header, mut payload)) = window else {
        if execute != crate::protocol::Status::Busy.code() {
            return Err(Error::Protocol(format!(
                "EXECUTE returned {execute} without writing a response"
            )));
        }
        return Ok(Response {
            status: execute,
            r0: 0,
            r1: 0,
            payload: BUSY_UNTOUCHED.as_bytes().to_vec(),
        });
    };
    if header.status != execute {
        return Err(Error::Protocol(format!(
            "EXECUTE returned {execute}, the response header says {}",
            header.status
        )));
    }
    if header.length > capacity as u64 || header.length > payload.len() as u64 {
        return Err(Error::Protocol(format!(
            "a response length of {} bytes (the window holds {capacity})",
            header.length
        )));
    }
    payload.truncate(header.length as usize);
    Ok(Response {
        status: execute,
        r0: header.r0,
        r1: header.r1,
        payload,
    })
}

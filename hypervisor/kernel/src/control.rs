//! The manager's control interface (docs/control.md): the register page in the manager's
//! address space, the data window it shares with the hypervisor, the staging pool, and each
//! request carried out on the node's slices. Every request is read once out of the window
//! into hypervisor memory and checked (`microvisor_logic::control`) before anything acts on
//! it; a request that names a slice acts on that slice alone.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

use microvisor_arch::memory::SharedMemory;
use microvisor_logic::control::{
    self as wire, BootFlags, ImageChoice, ImageKind, MAX_CONSOLE_WRITE, MAX_PAYLOAD,
    MAX_SHUTDOWN_MS, Op, PAYLOAD_OFFSET, REQUEST_HEADER_SIZE, RESPONSE_OFFSET, Refusal, Request,
    Status, Upload,
};
use microvisor_plan::Arm64Header;
use spin::Mutex;

use crate::slice::{BootImages, ImageBytes, ImageProblem, PoolImage, Slice, StagingPool, Unusable};

/// What the hypervisor itself uses: its image and working memory, and its heap's use now.
#[derive(Clone, Copy)]
pub struct Footprint {
    pub bytes: u64,
    pub heap_bytes: u64,
    pub heap_used: fn() -> usize,
}

/// Per target slice: images being uploaded, and images complete but not yet made a boot
/// source, by [`ImageKind`].
#[derive(Default)]
struct Staging {
    uploads: [Option<Upload>; 2],
    ready: [Option<PoolImage>; 2],
}

/// A request's answer.
struct Reply {
    r0: u64,
    r1: u64,
    payload: Vec<u8>,
}

impl Reply {
    fn empty() -> Self {
        Self::with(Vec::new())
    }

    fn with(payload: Vec<u8>) -> Self {
        Self {
            r0: 0,
            r1: 0,
            payload,
        }
    }
}

/// The control interface of a node with a manager.
pub struct Control {
    /// The manager's slice index.
    pub manager: usize,
    /// The data window, mapped into the manager at `WINDOW_IPA`.
    window: SharedMemory,
    pool: Arc<StagingPool>,
    /// A request is running (on one of the manager's vCPUs).
    busy: AtomicBool,
    staging: Mutex<Vec<Staging>>,
}

impl Control {
    pub fn new(
        manager: usize,
        window: SharedMemory,
        pool: Arc<StagingPool>,
        slices: usize,
    ) -> Self {
        Self {
            manager,
            window,
            pool,
            busy: AtomicBool::new(false),
            staging: Mutex::new((0..slices).map(|_| Staging::default()).collect()),
        }
    }

    /// A read of `EXECUTE`: runs the request in the window, writes the response, returns its
    /// status. A request while another runs is `BUSY` and leaves the window alone.
    pub fn execute(&self, slices: &[Slice], footprint: Footprint) -> u64 {
        if self.busy.swap(true, Ordering::Acquire) {
            return Status::Busy as u64;
        }
        let (status, reply) = match self.run(slices, footprint) {
            Ok(reply) => (Status::Ok, reply),
            Err(refusal) => (refusal.status, Reply::with(refusal.message.into_bytes())),
        };
        let len = (reply.payload.len() as u64).min(MAX_PAYLOAD);
        let header = wire::response_header(status, reply.r0, reply.r1, len);
        let written = self
            .window
            .write(PAYLOAD_OFFSET, &reply.payload[..len as usize])
            .and_then(|()| self.window.write(RESPONSE_OFFSET, &header))
            .and_then(|()| self.window.sync_for_uncached(0, PAYLOAD_OFFSET + len));
        self.busy.store(false, Ordering::Release);
        match written {
            Ok(()) => status as u64,
            Err(_) => Status::BadRequest as u64,
        }
    }

    /// Graceful shutdowns whose time is up end (checked on the manager's exits).
    pub fn poll(&self, slices: &[Slice]) {
        slices.iter().for_each(Slice::check_shutdown);
    }

    fn run(&self, slices: &[Slice], footprint: Footprint) -> Result<Reply, Refusal> {
        let mut header = [0u8; REQUEST_HEADER_SIZE];
        self.window
            .sync_from_uncached(0, REQUEST_HEADER_SIZE as u64)
            .and_then(|()| self.window.read(0, &mut header))
            .map_err(|_| Refusal::new(Status::BadRequest, "request header unreadable"))?;
        let request = Request::parse(&header)?;
        if request.op == Op::Node {
            return Ok(Reply::with(self.node_json(slices, footprint).into_bytes()));
        }
        if request.op == Op::List {
            let mut out = String::from("[");
            for (i, slice) in slices.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                slice.status_json(&mut out);
            }
            out.push(']');
            return Ok(Reply::with(out.into_bytes()));
        }
        let slice = self.target(slices, &request)?;
        match request.op {
            Op::List | Op::Node => Ok(Reply::empty()),
            Op::Status => {
                let mut out = String::new();
                slice.status_json(&mut out);
                Ok(Reply::with(out.into_bytes()))
            }
            Op::On => slice.manager_on().map(|()| Reply::empty()),
            Op::Off => slice.manager_off().map(|()| Reply::empty()),
            Op::Restart => slice.manager_restart().map(|()| Reply::empty()),
            Op::Shutdown => {
                if !(1..=MAX_SHUTDOWN_MS).contains(&request.a0) {
                    return Err(Refusal::new(
                        Status::BadRequest,
                        format_args!(
                            "shutdown timeout of {} ms (1 to {MAX_SHUTDOWN_MS})",
                            request.a0
                        ),
                    ));
                }
                slice.manager_shutdown(request.a0).map(|()| Reply::empty())
            }
            Op::StageBegin => self.stage_begin(slice, &request),
            Op::StageWrite => self.stage_write(slice, &request),
            Op::StageEnd => self.stage_end(slice, &request),
            Op::Boot => self.boot(slice, &request),
            Op::ConsoleRead => {
                let (first, bytes) = slice.console_read(request.a0, MAX_PAYLOAD as usize);
                Ok(Reply {
                    r0: first,
                    r1: first + bytes.len() as u64,
                    payload: bytes,
                })
            }
            Op::ConsoleWrite => {
                let bytes = self.payload(
                    &request,
                    MAX_CONSOLE_WRITE,
                    "console write",
                    Status::BadRequest,
                )?;
                let taken = slice.console_write(&bytes);
                Ok(Reply {
                    r0: taken as u64,
                    r1: 0,
                    payload: Vec::new(),
                })
            }
            Op::Erase => slice.manager_erase().map(|()| Reply::empty()),
        }
    }

    /// `NODE`: the hypervisor's version, its memory use and the staging pool's.
    fn node_json(&self, slices: &[Slice], footprint: Footprint) -> String {
        let pool = self.pool.allocator.lock();
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"version\":\"{}\",\"slices\":{},\"footprint_bytes\":{},\"heap_bytes\":{},\"heap_used_bytes\":{},\"staging\":{{\"bytes\":{},\"used_bytes\":{}}}}}",
            env!("CARGO_PKG_VERSION"),
            slices.len(),
            footprint.bytes,
            footprint.heap_bytes,
            (footprint.heap_used)(),
            pool.size(),
            pool.used()
        );
        out
    }

    /// The slice a request names: one of the node's, and not the manager unless the
    /// operation allows it.
    fn target<'n>(&self, slices: &'n [Slice], request: &Request) -> Result<&'n Slice, Refusal> {
        let name = request.slice.as_deref().unwrap_or_default();
        let slice = slices.iter().find(|s| s.name == name).ok_or_else(|| {
            Refusal::new(
                Status::NoSuchSlice,
                format_args!("no slice \"{name}\" on this node"),
            )
        })?;
        if slice.index == self.manager && !request.op.allowed_on_manager() {
            return Err(Refusal::new(
                Status::NotPermitted,
                format_args!(
                    "slice \"{name}\" is the manager: it cannot {} itself",
                    request.op.name()
                ),
            ));
        }
        Ok(slice)
    }

    /// A small request payload of at most `limit` bytes, copied out of the window. A longer
    /// one is refused with `status` before anything is allocated: until 2026-12-04 a `BOOT`
    /// with a command line of the window's size (2 MiB) allocated it all first, and the heap
    /// could not (an allocation failure at EL2 halts the core; found in review).
    fn payload(
        &self,
        request: &Request,
        limit: u64,
        what: &str,
        status: Status,
    ) -> Result<Vec<u8>, Refusal> {
        if request.length > limit {
            return Err(Refusal::new(
                status,
                format_args!("{what} of {} bytes (at most {limit})", request.length),
            ));
        }
        let mut bytes = alloc::vec![0u8; request.length as usize];
        self.window
            .sync_from_uncached(PAYLOAD_OFFSET, request.length)
            .and_then(|()| self.window.read(PAYLOAD_OFFSET, &mut bytes))
            .map_err(|_| Refusal::new(Status::BadRequest, "payload unreadable"))?;
        Ok(bytes)
    }

    fn stage_begin(&self, slice: &Slice, request: &Request) -> Result<Reply, Refusal> {
        let kind = ImageKind::from_arg(request.a0)?;
        let size = request.a1;
        let memory = slice.ram().size;
        if size == 0 {
            return Err(Refusal::new(
                Status::BadRequest,
                format_args!("slice \"{}\": an empty {}", slice.name, kind.name()),
            ));
        }
        if size > memory {
            return Err(Refusal::new(
                Status::TooLarge,
                format_args!(
                    "slice \"{}\": a {} of {size} bytes does not fit its {memory} bytes of RAM",
                    slice.name,
                    kind.name()
                ),
            ));
        }
        let mut staging = self.staging.lock();
        let mine = &mut staging[slice.index];
        if let Some(old) = mine.uploads[kind.index()].take() {
            self.pool.free_at(old.offset);
        }
        let offset = self.pool.allocate(size)?;
        mine.uploads[kind.index()] = Some(Upload {
            offset,
            size,
            written: 0,
        });
        Ok(Reply::empty())
    }

    fn stage_write(&self, slice: &Slice, request: &Request) -> Result<Reply, Refusal> {
        let kind = ImageKind::from_arg(request.a0)?;
        let mut staging = self.staging.lock();
        let upload = staging[slice.index].uploads[kind.index()]
            .as_mut()
            .ok_or_else(|| not_begun(slice, kind))?;
        let mut next = *upload;
        let to = next.write(request.a1, request.length)?;
        let copied = self
            .window
            .sync_from_uncached(PAYLOAD_OFFSET, request.length)
            .and_then(|()| {
                self.pool
                    .memory
                    .copy_from(to, &self.window, PAYLOAD_OFFSET, request.length)
            });
        copied.map_err(|_| Refusal::new(Status::BadRequest, "staging copy out of range"))?;
        *upload = next;
        Ok(Reply::empty())
    }

    fn stage_end(&self, slice: &Slice, request: &Request) -> Result<Reply, Refusal> {
        let kind = ImageKind::from_arg(request.a0)?;
        let mut staging = self.staging.lock();
        let mine = &mut staging[slice.index];
        let upload = mine.uploads[kind.index()]
            .take()
            .ok_or_else(|| not_begun(slice, kind))?;
        if !upload.complete() {
            let message = alloc::format!(
                "slice \"{}\": the {} has {} of its {} bytes",
                slice.name,
                kind.name(),
                upload.written,
                upload.size
            );
            mine.uploads[kind.index()] = Some(upload);
            return Err(Refusal::new(Status::BadRequest, message));
        }
        if kind == ImageKind::Kernel {
            let mut head = alloc::vec![0u8; upload.size.min(4096) as usize];
            let _ = self.pool.memory.read(upload.offset, &mut head);
            if let Err(e) = Arm64Header::parse(&head) {
                self.pool.free_at(upload.offset);
                return Err(Refusal::new(
                    Status::BadImage,
                    format_args!("slice \"{}\": staged kernel: {e}", slice.name),
                ));
            }
        }
        let Some(sha256) = self.pool.sha256(upload.offset, upload.size) else {
            self.pool.free_at(upload.offset);
            return Err(Refusal::new(Status::BadRequest, "staged image unreadable"));
        };
        let image = PoolImage {
            offset: upload.offset,
            len: upload.size,
            sha256,
        };
        if let Some(old) = mine.ready[kind.index()].replace(image) {
            self.pool.free(old);
        }
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\"kind\":\"{}\",\"bytes\":{},\"sha256\":\"{}\"}}",
            kind.name(),
            upload.size,
            wire::hex(&sha256)
        );
        Ok(Reply::with(out.into_bytes()))
    }

    fn boot(&self, slice: &Slice, request: &Request) -> Result<Reply, Refusal> {
        let flags = BootFlags::parse(request.a0)?;
        let refuse = |status, what: &dyn core::fmt::Display| {
            Refusal::new(status, format_args!("slice \"{}\": {what}", slice.name))
        };
        if !flags.custom || flags.network {
            let images = if flags.network {
                slice
                    .network_boot()
                    .map_err(|e| refuse(Status::BadRequest, &e))?
            } else {
                slice
                    .flashed_boot()
                    .map_err(|e| refuse(Status::BadImage, &e))?
            };
            return slice
                .set_boot(images)
                .map(|()| Reply::empty())
                .map_err(|refused| {
                    let (refusal, images) = *refused;
                    images.release(Some(&self.pool));
                    refusal
                });
        }
        let cmdline = if flags.cmdline {
            wire::parse_cmdline(&self.payload(
                request,
                wire::MAX_CMDLINE as u64,
                "command line",
                Status::TooLarge,
            )?)
            .map_err(|r| refuse(r.status, &r.message))?
        } else {
            slice.flashed_cmdline().into()
        };
        let mut staging = self.staging.lock();
        let mine = &mut staging[slice.index];
        for (choice, kind) in [
            (flags.kernel, ImageKind::Kernel),
            (flags.initrd, ImageKind::Initrd),
        ] {
            if choice == ImageChoice::Staged && mine.ready[kind.index()].is_none() {
                return Err(refuse(
                    Status::BadRequest,
                    &format_args!("no staged {} (STAGE_END one first)", kind.name()),
                ));
            }
        }
        let mut take = |kind: ImageKind| mine.ready[kind.index()].take().map(ImageBytes::Staged);
        let kernel = match flags.kernel {
            ImageChoice::Staged => take(ImageKind::Kernel),
            _ => None,
        }
        .unwrap_or(ImageBytes::Flashed(slice.flashed_kernel()));
        let initrd = match flags.initrd {
            ImageChoice::Staged => take(ImageKind::Initrd),
            ImageChoice::Flashed => slice.flashed_initrd().map(ImageBytes::Flashed),
            ImageChoice::None => None,
        };
        match slice.boot_images(kernel, initrd, cmdline, true) {
            Ok(images) => match slice.set_boot(images) {
                Ok(()) => Ok(Reply::empty()),
                Err(refused) => {
                    let (refusal, images) = *refused;
                    let BootImages { kernel, initrd, .. } = images;
                    give_back(mine, kernel, initrd);
                    Err(refusal)
                }
            },
            Err(unusable) => {
                let Unusable {
                    why,
                    kernel,
                    initrd,
                } = *unusable;
                give_back(mine, kernel, initrd);
                Err(match why {
                    ImageProblem::NotAKernel(why) => refuse(Status::BadImage, &why),
                    ImageProblem::TooLarge(why) => refuse(Status::TooLarge, &why),
                })
            }
        }
    }
}

fn not_begun(slice: &Slice, kind: ImageKind) -> Refusal {
    Refusal::new(
        Status::BadRequest,
        format_args!(
            "slice \"{}\": no {} being staged (STAGE_BEGIN first)",
            slice.name,
            kind.name()
        ),
    )
}

/// Puts staged images of a boot source that was not taken back where `BOOT` found them.
fn give_back(staging: &mut Staging, kernel: ImageBytes, initrd: Option<ImageBytes>) {
    for (image, kind) in [
        (Some(kernel), ImageKind::Kernel),
        (initrd, ImageKind::Initrd),
    ] {
        if let Some(ImageBytes::Staged(image)) = image {
            staging.ready[kind.index()] = Some(image);
        }
    }
}

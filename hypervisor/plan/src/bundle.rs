//! The bundle appended to the hypervisor image: the compiled plan plus every guest image
//! (deduplicated), each with its SHA-256.
//!
//! Format (little-endian; every offset is relative to the start of the bundle):
//!
//! | offset | size        | content                                                    |
//! |--------|-------------|------------------------------------------------------------|
//! | 0      | 8           | magic `b"MVBUNDL1"`                                        |
//! | 8      | 4           | version, 2                                                 |
//! | 12     | 4           | `index_len`                                                |
//! | 16     | 8           | `total_len`: whole bundle, a multiple of 4 KiB             |
//! | 24     | 40          | reserved, zero                                             |
//! | 64     | `index_len` | [`BundleIndex`], postcard-encoded                          |
//! | ...    |             | images, each at a 4 KiB-aligned offset after the index     |
//!
//! `total_len` is the end of the last image (or of the index) rounded up to 4 KiB; padding is
//! zero. The reader never panics: every length and offset is checked against `total_len` and
//! the bytes actually present before it is used.
//!
//! Heap use while reading is bounded: `index_len` is at most [`MAX_INDEX_LEN`] and the slice
//! count (the first varint of the index) is checked against `MAX_SLICES` before decoding, so
//! decoding allocates at most about 8 x `index_len` + 1 MiB, whatever the bytes.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{PlanError, Problem};
use crate::model::{CompiledPlan, ImageIndex, MAX_SLICES};

/// First 8 bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"MVBUNDL1";
/// The format version this crate reads and writes (2: slices carry `[[slice.device]]`).
pub const VERSION: u32 = 2;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Alignment of every image and of `total_len`.
pub const IMAGE_ALIGN: u64 = 4096;
/// Largest index accepted (a plan of `MAX_SLICES` slices with modest command lines fits easily).
pub const MAX_INDEX_LEN: u32 = 1 << 20;

/// The index: the plan and where each image is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleIndex {
    /// The plan, with images named by their position in `images`.
    pub plan: CompiledPlan,
    /// The image table.
    pub images: Vec<ImageEntry>,
}

/// One image in the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// What the image is, for messages: `"probe"`, `"linux"`, or the file name.
    pub label: String,
    /// Offset from the bundle start (4 KiB aligned, after the index).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// SHA-256 of the image bytes.
    pub sha256: [u8; 32],
}

/// Why a bundle cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// Fewer bytes are present than the header (or `total_len`) requires.
    Truncated {
        /// Bytes required.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// The bundle does not start with `MVBUNDL1`.
    BadMagic,
    /// A format version this hypervisor does not read.
    UnsupportedVersion(u32),
    /// `total_len` is not a multiple of 4 KiB or leaves no room for the index.
    BadLengths {
        /// `index_len` from the header.
        index_len: u32,
        /// `total_len` from the header.
        total_len: u64,
    },
    /// `index_len` is above [`MAX_INDEX_LEN`].
    IndexTooLarge {
        /// `index_len` from the header.
        index_len: u32,
    },
    /// A reserved header byte is not zero.
    ReservedNotZero,
    /// The index does not decode (or has bytes left over).
    BadIndex,
    /// An image offset is not 4 KiB aligned.
    MisalignedImage {
        /// The image.
        image: ImageIndex,
    },
    /// An image overlaps the header or index, or ends past `total_len`.
    ImageOutOfBounds {
        /// The image.
        image: ImageIndex,
    },
    /// The plan (or a caller) uses an image the table does not have.
    MissingImage {
        /// The image index asked for.
        image: ImageIndex,
    },
    /// An image's bytes do not match its SHA-256.
    HashMismatch {
        /// The image.
        image: ImageIndex,
        /// Its label.
        label: String,
    },
    /// The bundled plan fails validation.
    InvalidPlan(PlanError),
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::Truncated { needed, available } => {
                write!(
                    f,
                    "bundle truncated: needs {needed} bytes, {available} present"
                )
            }
            BundleError::BadMagic => write!(f, "no bundle: magic is not {:?}", "MVBUNDL1"),
            BundleError::UnsupportedVersion(version) => {
                write!(
                    f,
                    "bundle version {version} is not supported (expected {VERSION})"
                )
            }
            BundleError::BadLengths {
                index_len,
                total_len,
            } => write!(
                f,
                "bundle header inconsistent: total_len {total_len} with index_len {index_len} \
                 (total_len must be a 4 KiB multiple >= 64 + index_len)"
            ),
            BundleError::IndexTooLarge { index_len } => write!(
                f,
                "bundle index of {index_len} bytes is larger than the {MAX_INDEX_LEN} accepted"
            ),
            BundleError::ReservedNotZero => {
                f.write_str("bundle header: reserved bytes are not zero")
            }
            BundleError::BadIndex => f.write_str("bundle index does not decode"),
            BundleError::MisalignedImage { image } => {
                write!(f, "bundle image {image}: offset not 4 KiB aligned")
            }
            BundleError::ImageOutOfBounds { image } => {
                write!(f, "bundle image {image}: outside the bundle's image area")
            }
            BundleError::MissingImage { image } => write!(f, "bundle has no image {image}"),
            BundleError::HashMismatch { image, label } => write!(
                f,
                "bundle image {image} ({}): SHA-256 mismatch",
                crate::error::Quoted(label)
            ),
            BundleError::InvalidPlan(error) => write!(f, "bundled {error}"),
        }
    }
}

/// What the fixed header says.
struct Header {
    index_len: u32,
    total_len: u64,
}

impl Header {
    /// Offset of the first byte after the index.
    fn index_end(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.index_len)
    }
}

fn parse_header(bytes: &[u8]) -> Result<Header, BundleError> {
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(BundleError::Truncated {
            needed: HEADER_LEN as u64,
            available: bytes.len() as u64,
        })?;
    let (magic, rest) = header.split_at(8);
    if magic != MAGIC {
        return Err(BundleError::BadMagic);
    }
    let (version, rest) = take_u32(rest);
    if version != VERSION {
        return Err(BundleError::UnsupportedVersion(version));
    }
    let (index_len, rest) = take_u32(rest);
    let (total_len, reserved) = take_u64(rest);
    if reserved.iter().any(|&b| b != 0) {
        return Err(BundleError::ReservedNotZero);
    }
    if index_len > MAX_INDEX_LEN {
        return Err(BundleError::IndexTooLarge { index_len });
    }
    let header = Header {
        index_len,
        total_len,
    };
    if !total_len.is_multiple_of(IMAGE_ALIGN) || total_len < header.index_end() {
        return Err(BundleError::BadLengths {
            index_len,
            total_len,
        });
    }
    Ok(header)
}

/// Splits a little-endian u32 off the front of `bytes` (which holds at least 4 bytes).
fn take_u32(bytes: &[u8]) -> (u32, &[u8]) {
    let (word, rest) = bytes.split_at(4);
    let mut le = [0; 4];
    le.copy_from_slice(word);
    (u32::from_le_bytes(le), rest)
}

/// Splits a little-endian u64 off the front of `bytes` (which holds at least 8 bytes).
fn take_u64(bytes: &[u8]) -> (u64, &[u8]) {
    let (word, rest) = bytes.split_at(8);
    let mut le = [0; 8];
    le.copy_from_slice(word);
    (u64::from_le_bytes(le), rest)
}

/// Checks the fixed header at the start of `bytes` and returns the bundle's `total_len`, so
/// that the caller knows how many bytes to hand to [`Bundle::parse`].
pub fn header_total_len(bytes: &[u8]) -> Result<u64, BundleError> {
    parse_header(bytes).map(|header| header.total_len)
}

/// A parsed and checked bundle, borrowing its bytes.
#[derive(Clone, Debug)]
pub struct Bundle<'a> {
    /// Exactly `total_len` bytes.
    bytes: &'a [u8],
    index: BundleIndex,
}

/// One image of a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleImage<'a> {
    /// What the image is (`"probe"`, `"linux"`, a file name).
    pub label: &'a str,
    /// The image bytes.
    pub bytes: &'a [u8],
    /// The SHA-256 recorded for it (see [`Bundle::verify_image`]).
    pub sha256: [u8; 32],
}

impl<'a> Bundle<'a> {
    /// Parses the bundle at the start of `bytes` (which may continue past `total_len`): checks
    /// the header, decodes the index, checks every image's bounds and every image reference of
    /// the plan, then validates the plan. Image hashes are checked by [`Bundle::verify_image`].
    pub fn parse(bytes: &'a [u8]) -> Result<Bundle<'a>, BundleError> {
        let header = parse_header(bytes)?;
        let bytes = usize::try_from(header.total_len)
            .ok()
            .and_then(|total| bytes.get(..total))
            .ok_or(BundleError::Truncated {
                needed: header.total_len,
                available: bytes.len() as u64,
            })?;
        let index = decode_index(bytes, &header)?;
        check_image_bounds(&index.images, header.index_end(), header.total_len)?;
        check_image_references(&index)?;
        index.plan.validate().map_err(BundleError::InvalidPlan)?;
        Ok(Bundle { bytes, index })
    }

    /// The bundled plan (already validated).
    pub fn plan(&self) -> &CompiledPlan {
        &self.index.plan
    }

    /// The image table.
    pub fn images(&self) -> &[ImageEntry] {
        &self.index.images
    }

    /// The bundle's length in bytes (`total_len`).
    pub fn total_len(&self) -> usize {
        self.bytes.len()
    }

    /// Image `image`'s label, bytes and recorded hash.
    pub fn image(&self, image: ImageIndex) -> Result<BundleImage<'_>, BundleError> {
        let entry = self.entry(image)?;
        let bytes =
            image_bytes(self.bytes, entry).ok_or(BundleError::ImageOutOfBounds { image })?;
        Ok(BundleImage {
            label: &entry.label,
            bytes,
            sha256: entry.sha256,
        })
    }

    /// Checks that image `image`'s bytes hash to its recorded SHA-256.
    pub fn verify_image(&self, image: ImageIndex) -> Result<(), BundleError> {
        self.verify_image_with(image, crate::sha256::software)
    }

    /// [`Bundle::verify_image`] with `compress` as SHA-256's compression function (the
    /// hypervisor's uses the CPU's SHA-256 instructions where the core has them).
    pub fn verify_image_with(
        &self,
        image: ImageIndex,
        compress: crate::sha256::Compress,
    ) -> Result<(), BundleError> {
        let found = self.image(image)?;
        if crate::sha256::digest(found.bytes, compress) != found.sha256 {
            return Err(BundleError::HashMismatch {
                image,
                label: found.label.into(),
            });
        }
        Ok(())
    }

    /// Checks every image's SHA-256, in table order.
    pub fn verify_images(&self) -> Result<(), BundleError> {
        let count =
            ImageIndex::try_from(self.index.images.len()).map_err(|_| BundleError::BadIndex)?;
        (0..count).try_for_each(|image| self.verify_image(image))
    }

    fn entry(&self, image: ImageIndex) -> Result<&ImageEntry, BundleError> {
        usize::try_from(image)
            .ok()
            .and_then(|i| self.index.images.get(i))
            .ok_or(BundleError::MissingImage { image })
    }
}

fn decode_index(bytes: &[u8], header: &Header) -> Result<BundleIndex, BundleError> {
    let index_bytes = usize::try_from(header.index_end())
        .ok()
        .and_then(|end| bytes.get(HEADER_LEN..end))
        .ok_or(BundleError::BadIndex)?;
    check_slice_count(index_bytes)?;
    match postcard::take_from_bytes::<BundleIndex>(index_bytes) {
        Ok((index, [])) => Ok(index),
        _ => Err(BundleError::BadIndex),
    }
}

/// Rejects an index claiming more than `MAX_SLICES` slices before anything is allocated for
/// them. The index starts with the plan, which starts with the slice count as a varint.
fn check_slice_count(index_bytes: &[u8]) -> Result<(), BundleError> {
    let (count, _) =
        postcard::take_from_bytes::<u64>(index_bytes).map_err(|_| BundleError::BadIndex)?;
    if count > MAX_SLICES as u64 {
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let problem = Problem::TooManySlices {
            count,
            max: MAX_SLICES,
        };
        return Err(BundleError::InvalidPlan(PlanError::plan(problem)));
    }
    Ok(())
}

fn check_image_bounds(
    images: &[ImageEntry],
    index_end: u64,
    total_len: u64,
) -> Result<(), BundleError> {
    for (i, entry) in images.iter().enumerate() {
        let image = ImageIndex::try_from(i).map_err(|_| BundleError::BadIndex)?;
        if !entry.offset.is_multiple_of(IMAGE_ALIGN) {
            return Err(BundleError::MisalignedImage { image });
        }
        let end = entry.offset.checked_add(entry.len);
        if entry.offset < index_end || end.is_none_or(|end| end > total_len) {
            return Err(BundleError::ImageOutOfBounds { image });
        }
    }
    Ok(())
}

fn check_image_references(index: &BundleIndex) -> Result<(), BundleError> {
    let count = index.images.len();
    for slice in &index.plan.slices {
        for &image in slice.images() {
            if !usize::try_from(image).is_ok_and(|i| i < count) {
                return Err(BundleError::MissingImage { image });
            }
        }
    }
    Ok(())
}

/// The bytes of `entry` within `bundle`, if they are inside it.
fn image_bytes<'a>(bundle: &'a [u8], entry: &ImageEntry) -> Option<&'a [u8]> {
    let start = usize::try_from(entry.offset).ok()?;
    let end = start.checked_add(usize::try_from(entry.len).ok()?)?;
    bundle.get(start..end)
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(feature = "std")]
pub use writer::BundleWriter;

#[cfg(feature = "std")]
mod writer {
    use super::*;
    use crate::layout::align_up;
    use alloc::vec;

    /// The index as it is serialized: same encoding as [`BundleIndex`], without copying the plan.
    #[derive(Serialize)]
    struct IndexRef<'a> {
        plan: &'a CompiledPlan,
        images: &'a [ImageEntry],
    }

    /// Builds a bundle: add images (deduplicated by SHA-256), then [`finish`](Self::finish)
    /// with a plan that names them by the returned indexes.
    #[derive(Clone, Debug, Default)]
    pub struct BundleWriter {
        images: Vec<(String, Vec<u8>, [u8; 32])>,
    }

    impl BundleWriter {
        /// An empty bundle.
        pub fn new() -> BundleWriter {
            BundleWriter::default()
        }

        /// Adds an image and returns its index. An image whose bytes were already added is
        /// stored once: the earlier index (and label) is returned.
        ///
        /// # Panics
        /// If more than `u32::MAX` distinct images are added.
        pub fn add_image(&mut self, label: &str, bytes: Vec<u8>) -> ImageIndex {
            let hash = sha256(&bytes);
            let position = match self.images.iter().position(|(_, _, h)| *h == hash) {
                Some(existing) => existing,
                None => {
                    self.images.push((label.into(), bytes, hash));
                    self.images.len() - 1
                }
            };
            ImageIndex::try_from(position).expect("fewer than 2^32 images")
        }

        /// The bundle bytes for `plan` and the images added. The plan should be validated
        /// and use only indexes returned by `add_image`; [`Bundle::parse`] rejects it otherwise.
        ///
        /// # Panics
        /// If the index exceeds 4 GiB.
        pub fn finish(self, plan: &CompiledPlan) -> Vec<u8> {
            // Image offsets live in the index, whose encoded length depends on them: grow the
            // space reserved for the index until the encoded index fits in it.
            let mut data_start = IMAGE_ALIGN;
            loop {
                let entries = self.entries(data_start);
                let index = postcard::to_allocvec(&IndexRef {
                    plan,
                    images: &entries,
                })
                .expect("plan and image table always serialize");
                let index_end = (HEADER_LEN + index.len()) as u64;
                let needed = align_up(index_end, IMAGE_ALIGN).expect("index fits in 64 bits");
                if needed <= data_start {
                    return self.assemble(&index, &entries, data_start);
                }
                data_start = needed;
            }
        }

        /// The image table with images laid out from `data_start`, each 4 KiB aligned.
        fn entries(&self, data_start: u64) -> Vec<ImageEntry> {
            let mut offset = data_start;
            let mut entries = Vec::with_capacity(self.images.len());
            for (label, bytes, hash) in &self.images {
                let len = bytes.len() as u64;
                entries.push(ImageEntry {
                    label: label.clone(),
                    offset,
                    len,
                    sha256: *hash,
                });
                offset = align_up(offset + len, IMAGE_ALIGN).expect("bundle fits in 64 bits");
            }
            entries
        }

        fn assemble(&self, index: &[u8], entries: &[ImageEntry], data_start: u64) -> Vec<u8> {
            let total_len = entries
                .last()
                .map_or(Some(data_start), |last| {
                    align_up(last.offset + last.len, IMAGE_ALIGN)
                })
                .expect("bundle fits in 64 bits");
            let mut out = vec![0u8; usize::try_from(total_len).expect("bundle fits in memory")];
            let index_len = u32::try_from(index.len()).expect("bundle index below 4 GiB");
            out[..8].copy_from_slice(&MAGIC);
            out[8..12].copy_from_slice(&VERSION.to_le_bytes());
            out[12..16].copy_from_slice(&index_len.to_le_bytes());
            out[16..24].copy_from_slice(&total_len.to_le_bytes());
            out[HEADER_LEN..HEADER_LEN + index.len()].copy_from_slice(index);
            for (entry, (_, bytes, _)) in entries.iter().zip(&self.images) {
                let start = entry.offset as usize;
                out[start..start + bytes.len()].copy_from_slice(bytes);
            }
            out
        }
    }
}

// The tests build bundles with the writer, so they need the host side.
#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::devices::{DeviceClass, DeviceRequest, PciAddress};
    use crate::error::Field;
    use crate::model::{Cores, NvmeShare, OnFault, PlanOf, SliceOf};
    use alloc::string::ToString;
    use alloc::vec;

    fn slice(name: &str, kernel: ImageIndex, initrd: Option<ImageIndex>) -> SliceOf<ImageIndex> {
        SliceOf {
            name: name.into(),
            cores: Cores::Count(1),
            memory: 64 << 20,
            kernel,
            initrd,
            cmdline: "console=ttyAMA0".into(),
            on_fault: OnFault::Stop,
            nvme: None,
            devices: Vec::new(),
            role: crate::model::Role::Tenant,
            boot: crate::model::BootProtocol::Linux,
            firmware_env: Vec::new(),
            firmware_network_env: Vec::new(),
            redfish_tls: None,
        }
    }

    fn image(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Two slices sharing a kernel (added twice, stored once) plus an initrd.
    fn sample() -> (Vec<u8>, CompiledPlan) {
        let mut writer = BundleWriter::new();
        let kernel = writer.add_image("probe", image(1, 5000));
        let initrd = writer.add_image("initrd.cpio", image(2, 100));
        let again = writer.add_image("probe-copy", image(1, 5000));
        assert_eq!((kernel, initrd, again), (0, 1, 0));
        let mut second = slice("db-0", again, Some(initrd));
        second.cores = Cores::List(vec![3, 4]);
        second.on_fault = OnFault::Restart;
        second.nvme = Some(NvmeShare {
            queues: 2,
            size: 1 << 30,
            direct: false,
        });
        second.devices = vec![
            DeviceRequest::Pci(PciAddress::new(0, 3, 0).unwrap()),
            DeviceRequest::Class(DeviceClass::Net),
        ];
        let plan = PlanOf {
            slices: vec![slice("web-0", kernel, None), second],
        };
        (writer.finish(&plan), plan)
    }

    /// A bundle with the given index and `total_len`, header filled in, no image bytes.
    fn raw_bundle(index: &BundleIndex, total_len: u64) -> Vec<u8> {
        let encoded = postcard::to_allocvec(index).unwrap();
        let mut out = vec![0u8; total_len as usize];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(encoded.len() as u32).to_le_bytes());
        out[16..24].copy_from_slice(&total_len.to_le_bytes());
        out[HEADER_LEN..HEADER_LEN + encoded.len()].copy_from_slice(&encoded);
        out
    }

    fn index_with(offset: u64, len: u64, plan: CompiledPlan) -> BundleIndex {
        let entry = ImageEntry {
            label: "k".into(),
            offset,
            len,
            sha256: sha256(&[]),
        };
        BundleIndex {
            plan,
            images: vec![entry],
        }
    }

    fn one_slice_plan() -> CompiledPlan {
        PlanOf {
            slices: vec![slice("a", 0, None)],
        }
    }

    fn index_len(bundle: &[u8]) -> usize {
        u32::from_le_bytes(bundle[12..16].try_into().unwrap()) as usize
    }

    #[test]
    fn round_trip() {
        let (bytes, plan) = sample();
        let bundle = Bundle::parse(&bytes).unwrap();
        assert_eq!(bundle.plan(), &plan);
        assert_eq!(bundle.images().len(), 2);
        assert_eq!(bundle.total_len(), bytes.len());
        let kernel = bundle.image(0).unwrap();
        assert_eq!((kernel.label, kernel.bytes), ("probe", &image(1, 5000)[..]));
        assert_eq!(bundle.image(1).unwrap().bytes, &image(2, 100)[..]);
        assert_eq!(bundle.verify_images(), Ok(()));
    }

    #[test]
    fn layout_follows_the_format() {
        let (bytes, _) = sample();
        assert_eq!(&bytes[..8], b"MVBUNDL1");
        assert_eq!(header_total_len(&bytes), Ok(bytes.len() as u64));
        assert_eq!(bytes.len() % 4096, 0);
        assert!(bytes[24..64].iter().all(|&b| b == 0));
        let bundle = Bundle::parse(&bytes).unwrap();
        let [kernel, initrd] = bundle.images() else {
            panic!()
        };
        assert_eq!((kernel.offset, kernel.len), (4096, 5000));
        assert_eq!((initrd.offset, initrd.len), (12288, 100));
        assert_eq!(bytes.len(), 16384);
        assert_eq!(kernel.sha256, sha256(&image(1, 5000)));
    }

    #[test]
    fn large_index_pushes_images_further() {
        let mut writer = BundleWriter::new();
        let mut plan = PlanOf { slices: vec![] };
        for i in 0..200 {
            let kernel = writer.add_image(&format!("kernel-{i}"), image(i as u8, 10 + i));
            plan.slices.push(slice(&format!("s{i}"), kernel, None));
        }
        let bytes = writer.finish(&plan);
        let bundle = Bundle::parse(&bytes).unwrap();
        assert!(index_len(&bytes) > 4096);
        assert!(bundle.images()[0].offset >= (HEADER_LEN + index_len(&bytes)) as u64);
        assert_eq!(bundle.verify_images(), Ok(()));
    }

    #[test]
    fn bundle_without_images_ends_after_the_index() {
        let bytes = BundleWriter::new().finish(&one_slice_plan());
        assert_eq!(bytes.len(), 4096);
        assert_eq!(
            Bundle::parse(&bytes).unwrap_err(),
            BundleError::MissingImage { image: 0 }
        );
    }

    #[test]
    fn bytes_after_the_bundle_are_ignored() {
        let (mut bytes, plan) = sample();
        let len = bytes.len();
        bytes.extend_from_slice(&[0xee; 5000]);
        let bundle = Bundle::parse(&bytes).unwrap();
        assert_eq!((bundle.plan(), bundle.total_len()), (&plan, len));
    }

    #[test]
    fn truncated() {
        let (bytes, _) = sample();
        assert_eq!(
            header_total_len(&bytes[..63]),
            Err(BundleError::Truncated {
                needed: 64,
                available: 63
            })
        );
        assert_eq!(header_total_len(&bytes[..64]), Ok(16384));
        let short = &bytes[..bytes.len() - 1];
        assert_eq!(
            Bundle::parse(short).unwrap_err(),
            BundleError::Truncated {
                needed: 16384,
                available: 16383
            }
        );
    }

    #[test]
    fn truncation_at_every_length_fails_cleanly() {
        let (bytes, _) = sample();
        for len in 0..bytes.len() {
            let error = Bundle::parse(&bytes[..len]).unwrap_err();
            assert!(
                matches!(error, BundleError::Truncated { .. }),
                "{len}: {error:?}"
            );
        }
    }

    #[test]
    fn bad_magic() {
        let (mut bytes, _) = sample();
        bytes[7] = b'2';
        assert_eq!(header_total_len(&bytes), Err(BundleError::BadMagic));
    }

    #[test]
    fn unsupported_version() {
        let (mut bytes, _) = sample();
        bytes[8] = 1; // the format before [[slice.device]]
        assert_eq!(
            Bundle::parse(&bytes).unwrap_err(),
            BundleError::UnsupportedVersion(1)
        );
    }

    #[test]
    fn bad_lengths() {
        let (bytes, _) = sample();
        let mut unaligned = bytes.clone();
        unaligned[16..24].copy_from_slice(&4097u64.to_le_bytes());
        let index_len = index_len(&bytes) as u32;
        assert_eq!(
            header_total_len(&unaligned),
            Err(BundleError::BadLengths {
                index_len,
                total_len: 4097
            })
        );
        let mut no_room = bytes;
        // 64 + 16321 bytes of index end one byte past total_len.
        no_room[12..16].copy_from_slice(&16321u32.to_le_bytes());
        assert_eq!(
            header_total_len(&no_room),
            Err(BundleError::BadLengths {
                index_len: 16321,
                total_len: 16384
            })
        );
    }

    #[test]
    fn index_too_large() {
        let (mut bytes, _) = sample();
        bytes[12..16].copy_from_slice(&(MAX_INDEX_LEN + 1).to_le_bytes());
        let expected = BundleError::IndexTooLarge {
            index_len: MAX_INDEX_LEN + 1,
        };
        assert_eq!(header_total_len(&bytes), Err(expected));
    }

    #[test]
    fn slice_count_is_checked_before_decoding() {
        let mut plan = one_slice_plan();
        plan.slices = (0..=MAX_SLICES)
            .map(|i| slice(&format!("s{i}"), 0, None))
            .collect();
        let bytes = raw_bundle(&index_with(0, 0, plan), 64 * 1024);
        let expected = Problem::TooManySlices {
            count: MAX_SLICES + 1,
            max: MAX_SLICES,
        };
        assert_eq!(
            Bundle::parse(&bytes).unwrap_err(),
            BundleError::InvalidPlan(PlanError::plan(expected))
        );
        // A count of 2^40 with nothing behind it: rejected without trying to allocate.
        let mut huge = raw_bundle(&index_with(4096, 0, one_slice_plan()), 4096);
        huge[HEADER_LEN..HEADER_LEN + 6].copy_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
        assert!(matches!(
            Bundle::parse(&huge).unwrap_err(),
            BundleError::InvalidPlan(_)
        ));
    }

    #[test]
    fn reserved_not_zero() {
        let (mut bytes, _) = sample();
        bytes[63] = 1;
        assert_eq!(header_total_len(&bytes), Err(BundleError::ReservedNotZero));
    }

    #[test]
    fn bad_index() {
        let (bytes, _) = sample();
        let mut garbage = bytes.clone();
        garbage[HEADER_LEN..HEADER_LEN + 16].fill(0xff);
        assert_eq!(Bundle::parse(&garbage).unwrap_err(), BundleError::BadIndex);
        // One byte of padding counted into the index: left over after decoding.
        let mut trailing = bytes;
        let longer = index_len(&trailing) as u32 + 1;
        trailing[12..16].copy_from_slice(&longer.to_le_bytes());
        assert_eq!(Bundle::parse(&trailing).unwrap_err(), BundleError::BadIndex);
    }

    #[test]
    fn misaligned_image() {
        let bytes = raw_bundle(&index_with(4097, 0, one_slice_plan()), 8192);
        assert_eq!(
            Bundle::parse(&bytes).unwrap_err(),
            BundleError::MisalignedImage { image: 0 }
        );
    }

    #[test]
    fn image_out_of_bounds() {
        for (offset, len) in [
            (4096, 4097),
            (0, 10),
            (4096, u64::MAX),
            (u64::MAX - 4095, 1),
        ] {
            let bytes = raw_bundle(&index_with(offset, len, one_slice_plan()), 8192);
            assert_eq!(
                Bundle::parse(&bytes).unwrap_err(),
                BundleError::ImageOutOfBounds { image: 0 },
                "{offset} {len}"
            );
        }
        let fits = raw_bundle(&index_with(4096, 4096, one_slice_plan()), 8192);
        assert!(Bundle::parse(&fits).is_ok());
    }

    #[test]
    fn missing_image() {
        let mut plan = one_slice_plan();
        plan.slices[0].initrd = Some(7);
        let bytes = raw_bundle(&index_with(4096, 0, plan), 4096);
        assert_eq!(
            Bundle::parse(&bytes).unwrap_err(),
            BundleError::MissingImage { image: 7 }
        );
        let (bytes, _) = sample();
        let bundle = Bundle::parse(&bytes).unwrap();
        assert_eq!(
            bundle.image(2).unwrap_err(),
            BundleError::MissingImage { image: 2 }
        );
        assert_eq!(
            bundle.verify_image(u32::MAX),
            Err(BundleError::MissingImage { image: u32::MAX })
        );
    }

    #[test]
    fn hash_mismatch_when_an_image_byte_changes() {
        let (mut bytes, _) = sample();
        bytes[12288 + 50] ^= 1;
        let bundle = Bundle::parse(&bytes).unwrap();
        assert_eq!(bundle.verify_image(0), Ok(()));
        let expected = BundleError::HashMismatch {
            image: 1,
            label: "initrd.cpio".into(),
        };
        assert_eq!(bundle.verify_image(1), Err(expected.clone()));
        assert_eq!(bundle.verify_images(), Err(expected));
    }

    #[test]
    fn hash_mismatch_when_a_recorded_hash_changes() {
        let (bytes, _) = sample();
        let hash = sha256(&image(1, 5000));
        let at = bytes.windows(32).position(|w| w == hash).unwrap();
        assert!(at < HEADER_LEN + index_len(&bytes));
        let mut corrupted = bytes;
        corrupted[at + 5] ^= 0x80;
        let bundle = Bundle::parse(&corrupted).unwrap();
        let expected = BundleError::HashMismatch {
            image: 0,
            label: "probe".into(),
        };
        assert_eq!(bundle.verify_image(0), Err(expected.clone()));
        assert_eq!(bundle.verify_image(1), Ok(()), "the other image is intact");
        assert_eq!(bundle.verify_images(), Err(expected));
    }

    /// Where each image's recorded SHA-256 sits in the bundle's index.
    fn hash_ranges(bytes: &[u8]) -> Vec<core::ops::Range<usize>> {
        let bundle = Bundle::parse(bytes).unwrap();
        let index_end = HEADER_LEN + index_len(bytes);
        bundle
            .images()
            .iter()
            .map(|entry| {
                let at = bytes[..index_end]
                    .windows(32)
                    .position(|w| w == entry.sha256)
                    .unwrap();
                at..at + 32
            })
            .collect()
    }

    #[test]
    fn every_flipped_bit_of_a_recorded_hash_is_refused_by_name() {
        let (bytes, _) = sample();
        let labels = ["probe", "initrd.cpio"];
        for (image, range) in hash_ranges(&bytes).into_iter().enumerate() {
            for at in range {
                for bit in 0..8 {
                    let mut corrupted = bytes.clone();
                    corrupted[at] ^= 1 << bit;
                    let bundle = Bundle::parse(&corrupted)
                        .unwrap_or_else(|e| panic!("byte {at} bit {bit}: {e}"));
                    let expected = BundleError::HashMismatch {
                        image: image as ImageIndex,
                        label: labels[image].into(),
                    };
                    assert_eq!(bundle.verify_images(), Err(expected), "byte {at} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn flipped_image_bytes_are_refused_by_name() {
        let (bytes, _) = sample();
        let bundle = Bundle::parse(&bytes).unwrap();
        let images: Vec<(ImageIndex, u64, u64, String)> = bundle
            .images()
            .iter()
            .enumerate()
            .map(|(i, e)| (i as ImageIndex, e.offset, e.len, e.label.clone()))
            .collect();
        for (image, offset, len, label) in images {
            // Both ends and every 37th byte in between.
            let spread = (offset..offset + len).step_by(37);
            for at in spread.chain([offset, offset + len - 1]) {
                let mut corrupted = bytes.clone();
                corrupted[at as usize] ^= 0x01;
                let bundle = Bundle::parse(&corrupted).expect("image bytes are not parsed");
                let expected = BundleError::HashMismatch {
                    image,
                    label: label.clone(),
                };
                assert_eq!(bundle.verify_image(image), Err(expected), "byte {at}");
                let other = 1 - image;
                assert_eq!(bundle.verify_image(other), Ok(()), "byte {at}");
            }
        }
    }

    #[test]
    fn invalid_plan() {
        let bytes = raw_bundle(&index_with(4096, 0, PlanOf { slices: vec![] }), 4096);
        let expected = BundleError::InvalidPlan(PlanError::plan(Problem::NoSlices));
        assert_eq!(Bundle::parse(&bytes).unwrap_err(), expected);
        let mut zero_memory = one_slice_plan();
        zero_memory.slices[0].memory = 0;
        let bytes = raw_bundle(&index_with(4096, 0, zero_memory), 4096);
        let error = Bundle::parse(&bytes).unwrap_err();
        assert_eq!(
            error,
            BundleError::InvalidPlan(PlanError::slice("a", Field::Memory, Problem::ZeroMemory))
        );
    }

    #[test]
    fn errors_display() {
        let cases = [
            (
                BundleError::Truncated {
                    needed: 64,
                    available: 3,
                },
                "bundle truncated: needs 64 bytes, 3 present",
            ),
            (
                BundleError::BadMagic,
                "no bundle: magic is not \"MVBUNDL1\"",
            ),
            (
                BundleError::UnsupportedVersion(9),
                "bundle version 9 is not supported (expected 2)",
            ),
            (
                BundleError::ReservedNotZero,
                "bundle header: reserved bytes are not zero",
            ),
            (BundleError::BadIndex, "bundle index does not decode"),
            (
                BundleError::MisalignedImage { image: 1 },
                "bundle image 1: offset not 4 KiB aligned",
            ),
            (
                BundleError::ImageOutOfBounds { image: 2 },
                "bundle image 2: outside the bundle's image area",
            ),
            (
                BundleError::MissingImage { image: 3 },
                "bundle has no image 3",
            ),
            (
                BundleError::HashMismatch {
                    image: 0,
                    label: "linux".into(),
                },
                "bundle image 0 (\"linux\"): SHA-256 mismatch",
            ),
            (
                BundleError::InvalidPlan(PlanError::plan(Problem::NoSlices)),
                "bundled plan: no [[slice]] defined",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
        let lengths = BundleError::BadLengths {
            index_len: 10,
            total_len: 4097,
        }
        .to_string();
        assert!(
            lengths.starts_with("bundle header inconsistent: total_len 4097 with index_len 10"),
            "{lengths}"
        );
    }

    /// The node the mutation tests place plans on: 8 cores, 1 GiB at 0x4000_0000.
    fn mutation_node() -> crate::place::Hardware {
        crate::place::Hardware {
            cores: 8,
            free_ram: vec![crate::place::RamRange {
                base: 0x4000_0000,
                size: 1 << 30,
            }],
            ram_total: 1 << 30,
        }
    }

    /// Parses `bytes` and, if that succeeds, reads, verifies and places it; must never panic.
    /// `originals` are the images `sample()` bundled, by index: `verify_image` must accept
    /// exactly the images whose bytes and recorded hash are still the bundled ones, and refuse
    /// every other one with `HashMismatch` naming it. A placement, when there is one, must give
    /// each slice its cores (each core once) and its memory inside the node's RAM, without
    /// overlaps. Returns whether the bundle parsed.
    fn exercise(bytes: &[u8], originals: &[Vec<u8>]) -> bool {
        let Ok(bundle) = Bundle::parse(bytes) else {
            return false;
        };
        for (i, entry) in bundle.images().iter().enumerate() {
            let index = i as ImageIndex;
            let image = bundle.image(index).unwrap();
            assert_eq!(image.bytes.len() as u64, entry.len);
            let intact = originals
                .get(i)
                .is_some_and(|o| image.bytes == &o[..] && entry.sha256 == sha256(o));
            match bundle.verify_image(index) {
                Ok(()) => assert!(intact, "image {i} changed but verified"),
                Err(e) => {
                    assert!(!intact, "image {i} intact but refused: {e}");
                    let expected = BundleError::HashMismatch {
                        image: index,
                        label: entry.label.clone(),
                    };
                    assert_eq!(e, expected);
                }
            }
        }
        let count = bundle.images().len() as ImageIndex;
        assert_eq!(
            bundle.verify_image(count),
            Err(BundleError::MissingImage { image: count })
        );
        let hw = mutation_node();
        if let Ok(placement) = crate::place::place(bundle.plan(), &hw) {
            let slices = &bundle.plan().slices;
            assert_eq!(placement.slices.len(), slices.len());
            let mut cores: Vec<u32> = placement
                .slices
                .iter()
                .flat_map(|p| p.cores.iter().copied())
                .collect();
            let total = cores.len();
            cores.sort_unstable();
            cores.dedup();
            assert_eq!(cores.len(), total, "a core given twice");
            assert!(cores.iter().all(|&c| c < hw.cores));
            let ram = hw.free_ram[0];
            for (i, (p, s)) in placement.slices.iter().zip(slices).enumerate() {
                assert_eq!(p.ram.size, s.memory);
                assert!(ram.base <= p.ram.base && p.ram.end() <= ram.end(), "{p:?}");
                for q in &placement.slices[i + 1..] {
                    assert!(p.ram.end() <= q.ram.base || q.ram.end() <= p.ram.base);
                }
            }
        }
        check_device_placement(bundle.plan());
        true
    }

    /// The node the mutation tests place devices on: a host bridge, the hypervisor's NVMe
    /// controller at 00:02.0 and three NICs.
    fn mutation_pci() -> crate::devices::NodePci {
        let function = |device, class| crate::devices::PciFunction {
            address: PciAddress::new(0, device, 0).unwrap(),
            class,
            vendor: 0x1af4,
            device: 0x1041,
        };
        crate::devices::NodePci {
            functions: vec![
                function(0, 0x06_00_00),
                function(2, 0x01_08_02),
                function(3, 0x02_00_00),
                function(4, 0x02_00_00),
                function(5, 0x02_00_00),
            ],
            smmu: true,
            hypervisor_nvme: PciAddress::new(0, 2, 0),
            isolation_groups: Vec::new(),
        }
    }

    /// A device placement of `plan`, when there is one, gives every request one function of
    /// the node, never one twice, never the host bridge, never the shared NVMe controller.
    fn check_device_placement(plan: &CompiledPlan) {
        let node = mutation_pci();
        let Ok(placed) = crate::devices::place_devices(plan, &node) else {
            return;
        };
        assert_eq!(placed.len(), plan.slices.len());
        let mut all = Vec::new();
        for (given, slice) in placed.iter().zip(&plan.slices) {
            assert_eq!(given.len(), slice.devices.len());
            for (address, request) in given.iter().zip(&slice.devices) {
                if let DeviceRequest::Pci(asked) = request {
                    assert_eq!(address, asked);
                }
                assert!(node.functions.iter().any(|f| f.address == *address));
                assert_ne!(address.device(), 0, "the host bridge was given");
                all.push(*address);
            }
        }
        if plan.slices.iter().any(|s| s.nvme.is_some()) {
            assert!(!all.contains(&PciAddress::new(0, 2, 0).unwrap()));
        }
        let total = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), total, "a function given twice");
    }

    /// The images `sample()` bundles, by index.
    fn sample_images() -> Vec<Vec<u8>> {
        vec![image(1, 5000), image(2, 100)]
    }

    /// Deterministic xorshift64 generator for the mutation test.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn every_single_byte_flip_of_header_and_index_is_handled() {
        let (bytes, _) = sample();
        let originals = sample_images();
        let index_end = HEADER_LEN + index_len(&bytes);
        let mut accepted = 0;
        for at in 0..index_end {
            for flip in [0x01, 0x80, 0xff] {
                let mut mutated = bytes.clone();
                mutated[at] ^= flip;
                if exercise(&mutated, &originals) {
                    accepted += 1;
                }
            }
        }
        // Some flips (e.g. in a label, cmdline or recorded hash) still give a well-formed bundle.
        assert!(accepted > 0 && accepted < 3 * index_end, "{accepted}");
    }

    #[test]
    fn random_mutations_never_panic() {
        let (bytes, _) = sample();
        let originals = sample_images();
        let index_end = HEADER_LEN + index_len(&bytes);
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut mutated = bytes.clone();
            for _ in 0..1 + rng.below(4) {
                // Mostly hit header and index, where the structure is.
                let at = if rng.below(4) == 0 {
                    rng.below(mutated.len())
                } else {
                    rng.below(index_end)
                };
                mutated[at] = rng.next() as u8;
            }
            let len = if rng.below(8) == 0 {
                rng.below(mutated.len() + 1)
            } else {
                mutated.len()
            };
            if exercise(&mutated[..len], &originals) {
                accepted += 1;
            }
        }
        // Both outcomes must occur, or the mutations are not reaching the interesting paths.
        assert!(accepted > 100 && accepted < 19_000, "{accepted}");
    }
}

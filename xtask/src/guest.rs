//! Guest images named by a plan: built-in guests (the probe built here, Debian's kernel and the
//! generated initramfs for `linux`) or files (arm64 `Image`, gzipped `Image`, or an ELF turned
//! into a flat image), checked for a valid arm64 header.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use flate2::read::GzDecoder;
use microvisor_plan::{Arm64Header, BuiltIn, Field, ImageSource, PlanError, Problem, RedfishTls};

use crate::build::Artifacts;
use crate::flat;
use crate::linux::{self, LinuxGuest};
use crate::plan_error;
use crate::workspace::Workspace;

/// Largest image accepted after decompression.
pub const MAX_IMAGE_LEN: u64 = 1 << 30;

/// An image ready for the bundle.
#[derive(Clone, Debug)]
pub struct GuestImage {
    /// Name in the bundle and on the console: `probe`, `linux`, `linux-initramfs`,
    /// `manager-initramfs`, or the file name.
    pub label: String,
    pub bytes: Vec<u8>,
    /// Command line the guest gets before the plan's own `cmdline` (built-ins only).
    pub default_cmdline: &'static str,
}

/// Where the manager's Redfish service finds the plan's TLS files
/// (`microvisor-redfish --tls-cert --tls-key`, started so by `/init`).
pub const REDFISH_TLS_CERT: &str = "etc/microvisor-redfish/tls.crt";
pub const REDFISH_TLS_KEY: &str = "etc/microvisor-redfish/tls.key";

/// A gzipped cpio archive holding the manager's Redfish TLS files (`tls`, relative to
/// `plan_dir`), checked to be a PEM certificate and a PEM private key.
fn redfish_tls_archive(plan_dir: &Path, slice: &str, tls: &RedfishTls) -> Result<Vec<u8>> {
    let read = |field: &str, path: &str, marker: &str| -> Result<Vec<u8>> {
        let full = plan_dir.join(path);
        let bytes = std::fs::read(&full)
            .map_err(|e| anyhow!("slice \"{slice}\": {field}: {}: {e}", full.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        if !text.contains(&format!("-----BEGIN {marker}")) {
            bail!(
                "slice \"{slice}\": {field}: {} is not PEM with a {marker} (-----BEGIN {marker}...)",
                full.display()
            );
        }
        Ok(bytes)
    };
    let certificate = read("redfish-certificate", &tls.certificate, "CERTIFICATE")?;
    let key = read("redfish-key", &tls.key, "")
        .and_then(|key| {
            let text = String::from_utf8_lossy(&key);
            if text.contains("PRIVATE KEY-----") {
                Ok(key)
            } else {
                bail!(
                    "slice \"{slice}\": redfish-key: {} holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)",
                    plan_dir.join(&tls.key).display()
                )
            }
        })?;
    let mut archive = crate::initramfs::Archive::new();
    archive
        .dir("etc", 0o755)?
        .dir("etc/microvisor-redfish", 0o700)?
        .file(REDFISH_TLS_CERT, 0o644, certificate)?
        .file(REDFISH_TLS_KEY, 0o600, key)?;
    Ok(archive.to_gzip())
}

/// What a resolved image is used as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    Kernel,
    Initrd,
    /// The manager's initrd.
    ManagerInitrd,
}

/// Resolves the image sources of one plan, each at most once.
///
/// `BuiltIn(Linux)` stands for Debian's kernel as a `kernel` and for the generated initramfs
/// as an `initrd` (see [`crate::image::with_generated_initrds`]): the manager's for the slice
/// named by [`Resolver::manager`], the tenants' for every other.
pub struct Resolver<'a> {
    /// Relative paths in the plan are relative to this directory.
    plan_dir: PathBuf,
    artifacts: &'a Artifacts,
    /// Each image resolved: its source, what it is used as, the image.
    cache: Vec<(ImageSource, Use, GuestImage)>,
    /// The manager slice's name, and the Redfish TLS files its plan gives.
    manager: Option<(String, Option<RedfishTls>)>,
    /// The Linux guest, fetched on first use unless given.
    linux: Option<Arc<LinuxGuest>>,
}

impl<'a> Resolver<'a> {
    pub fn new(plan_dir: &Path, artifacts: &'a Artifacts) -> Self {
        Resolver {
            plan_dir: plan_dir.to_path_buf(),
            artifacts,
            cache: Vec::new(),
            manager: None,
            linux: None,
        }
    }

    /// The slice whose generated initramfs is the manager's, with the TLS files of its
    /// Redfish service when the plan gives them.
    pub fn manager(&mut self, slice: Option<(&str, Option<&RedfishTls>)>) {
        self.manager = slice.map(|(name, tls)| (name.to_string(), tls.cloned()));
    }

    /// Uses `guest` for `kernel = "linux"` instead of fetching it.
    pub fn with_linux(mut self, guest: Arc<LinuxGuest>) -> Self {
        self.linux = Some(guest);
        self
    }

    /// The image for `slice`'s `field` (`Kernel` or `Initrd`). Kernels must carry a valid arm64
    /// header; initrds are taken as they are.
    pub fn resolve(
        &mut self,
        slice: &str,
        field: Field,
        source: &ImageSource,
    ) -> Result<GuestImage> {
        let kernel = field == Field::Kernel;
        let used = match field {
            Field::Kernel => Use::Kernel,
            _ if self.manager.as_ref().is_some_and(|(m, _)| m == slice) => Use::ManagerInitrd,
            _ => Use::Initrd,
        };
        if let Some((_, _, image)) = self
            .cache
            .iter()
            .find(|(s, u, _)| s == source && *u == used)
        {
            return Ok(image.clone());
        }
        let image = match source {
            ImageSource::BuiltIn(BuiltIn::Probe) => self.probe()?,
            ImageSource::BuiltIn(BuiltIn::Linux) => self.linux(slice, used)?,
            ImageSource::BuiltIn(BuiltIn::Firmware) => firmware(slice)?,
            ImageSource::Path(path) => self.file(slice, field, path)?,
        };
        if kernel && *source != ImageSource::BuiltIn(BuiltIn::Firmware) {
            Arm64Header::parse(&image.bytes)
                .map_err(|e| plan_error(PlanError::slice(slice, field, Problem::BadImage(e))))?;
        }
        self.cache.push((source.clone(), used, image.clone()));
        Ok(image)
    }

    fn probe(&self) -> Result<GuestImage> {
        Ok(GuestImage {
            label: "probe".into(),
            bytes: probe_image(&self.artifacts.probe)?,
            default_cmdline: "",
        })
    }

    /// Debian's kernel or a generated initramfs.
    fn linux(&mut self, slice: &str, used: Use) -> Result<GuestImage> {
        let guest = match &self.linux {
            Some(guest) => guest.clone(),
            None => {
                let fetch = || linux::guest(&Workspace::locate()?, false);
                let guest =
                    fetch().map_err(|e| anyhow!("slice \"{slice}\": kernel: \"linux\": {e:#}"))?;
                self.linux = Some(guest.clone());
                guest
            }
        };
        let (label, mut bytes, default_cmdline) = match used {
            Use::Kernel => ("linux", guest.kernel.clone(), linux::DEFAULT_CMDLINE),
            Use::Initrd => ("linux-initramfs", guest.initramfs.clone(), ""),
            Use::ManagerInitrd => ("manager-initramfs", guest.manager_initramfs.clone(), ""),
        };
        if let (Use::ManagerInitrd, Some((_, Some(tls)))) = (used, &self.manager) {
            // A second archive after the first (Linux unpacks each in turn).
            bytes.resize(bytes.len().next_multiple_of(4), 0);
            bytes.extend(redfish_tls_archive(&self.plan_dir, slice, tls)?);
        }
        Ok(GuestImage {
            label: label.into(),
            bytes,
            default_cmdline,
        })
    }

    fn file(&self, slice: &str, field: Field, path: &str) -> Result<GuestImage> {
        let full = self.plan_dir.join(path);
        if !full.is_file() {
            let shown = full.display().to_string();
            return Err(plan_error(PlanError::slice(
                slice,
                field,
                Problem::MissingImage(shown),
            )));
        }
        let raw = std::fs::read(&full).with_context(|| format!("reading {}", full.display()))?;
        let bytes = if field == Field::Kernel {
            unpack_kernel(raw)
                .map_err(|e| anyhow!("slice \"{slice}\": kernel: {}: {e:#}", full.display()))?
        } else {
            raw
        };
        let label = full
            .file_name()
            .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned());
        Ok(GuestImage {
            label,
            bytes,
            default_cmdline: "",
        })
    }
}

/// The bytes of `kernel = "probe"`: the probe's ELF (`elf`, built by `crate::build`) as a flat
/// arm64 Image. The Linux guest's initramfs carries the same bytes as `/images/probe`.
pub fn probe_image(elf: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    Ok(flat::elf_to_flat(&bytes).context("probe ELF")?.bytes)
}

/// A kernel file as loaders see it: gunzipped if gzip, flattened if ELF, else as it is.
pub fn unpack_kernel(raw: Vec<u8>) -> Result<Vec<u8>> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .take(MAX_IMAGE_LEN + 1)
            .read_to_end(&mut out)
            .context("gunzip failed")?;
        if out.len() as u64 > MAX_IMAGE_LEN {
            bail!("more than {MAX_IMAGE_LEN} bytes once decompressed");
        }
        return Ok(out);
    }
    if raw.starts_with(b"\x7fELF") {
        return Ok(flat::elf_to_flat(&raw)?.bytes);
    }
    Ok(raw)
}

/// Where `u-boot-qemu` keeps the build for QEMU `virt` on arm64.
pub const UBOOT_IN_PACKAGE: &str = "usr/lib/u-boot/qemu_arm64/u-boot.bin";

/// `kernel = "firmware"`: Debian's U-Boot for QEMU `virt` (`u-boot-qemu`), fetched from the
/// Debian archive with `apt-get download` (size and SHA-256 checked against apt's index),
/// extracted and cached in `target/guests/debian/` like the Linux guest. Started as firmware,
/// so it needs no arm64 Image header.
fn firmware(slice: &str) -> Result<GuestImage> {
    let fetch = || -> Result<Vec<u8>> {
        let ws = Workspace::locate()?;
        let got =
            linux::fetch_extracted(&ws.target_dir.join("guests/debian"), &["u-boot-qemu"], true)?;
        let path = got[0].join(UBOOT_IN_PACKAGE);
        std::fs::read(&path).map_err(|e| anyhow!("{}: {e}", path.display()))
    };
    let bytes = fetch().map_err(|e| {
        anyhow!("slice \"{slice}\": kernel: \"firmware\" is Debian's U-Boot (u-boot-qemu): {e:#}")
    })?;
    Ok(GuestImage {
        label: "u-boot".into(),
        bytes,
        default_cmdline: "",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    #[test]
    fn gzip_kernels_are_unpacked_and_plain_ones_kept() {
        let image = microvisor_plan::image::build_header(0, 4096, 2).to_vec();
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&image).unwrap();
        let packed = gz.finish().unwrap();
        assert_eq!(unpack_kernel(packed).unwrap(), image);
        assert_eq!(unpack_kernel(image.clone()).unwrap(), image);
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let err = unpack_kernel(vec![0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap_err();
        assert!(format!("{err:#}").contains("gunzip"), "{err:#}");
    }
}

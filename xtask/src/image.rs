//! The bootable image: the flat hypervisor followed by the bundle (compiled plan + guest images),
//! with the arm64 header's `image_size` covering both.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use microvisor_plan::bundle::BundleWriter;
use microvisor_plan::{
    Arm64Header, BootProtocol, BuiltIn, Bundle, CompiledPlan, Field, GuestLayout, HumanSize,
    ImageSource, Plan,
};

use crate::build::Artifacts;
use crate::flat;
use crate::guest::Resolver;
use crate::plan_error;

/// Offset of `image_size` in the arm64 Image header.
const IMAGE_SIZE_OFFSET: usize = 16;
/// Offset of `flags` in the arm64 Image header.
const FLAGS_OFFSET: usize = 24;
/// Header flag: the image may be placed anywhere in RAM (U-Boot `booti` then runs it in place).
pub const FLAG_ANYWHERE: u64 = 1 << 3;

/// What `cargo xtask image` is asked to do.
#[derive(Clone, Copy, Debug)]
pub struct ImageOptions<'a> {
    pub plan: &'a Path,
    pub out: &'a Path,
    /// Set the header's "anywhere" flag.
    pub anywhere: bool,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct ImageSummary {
    pub out: PathBuf,
    pub total_len: u64,
    pub hypervisor_len: u64,
    pub bundle_len: u64,
    pub anywhere: bool,
    /// Slice names, in plan order.
    pub slices: Vec<String>,
    /// Bundled images: label, length, SHA-256.
    pub images: Vec<(String, u64, [u8; 32])>,
}

/// Reads, validates and compiles the plan, builds the bundle and writes the image.
pub fn write_image(artifacts: &Artifacts, opts: &ImageOptions<'_>) -> Result<ImageSummary> {
    let text = std::fs::read_to_string(opts.plan)
        .with_context(|| format!("plan {}: cannot read it", opts.plan.display()))?;
    let plan_dir = opts.plan.parent().unwrap_or(Path::new("."));
    let (compiled, bundle) = compile(&text, plan_dir, artifacts)
        .with_context(|| format!("plan {}", opts.plan.display()))?;
    let hv_elf = std::fs::read(&artifacts.hypervisor)
        .with_context(|| format!("reading {}", artifacts.hypervisor.display()))?;
    let hypervisor = flat::hypervisor_flat(&hv_elf)?;
    let hypervisor_len = hypervisor.len() as u64;
    let image = assemble(hypervisor, &bundle, opts.anywhere)?;
    if let Some(dir) = opts.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(opts.out, &image).with_context(|| format!("writing {}", opts.out.display()))?;
    let parsed = Bundle::parse(&bundle)
        .map_err(|e| anyhow::anyhow!("re-reading the bundle just written: {e}"))?;
    Ok(ImageSummary {
        out: opts.out.to_path_buf(),
        total_len: image.len() as u64,
        hypervisor_len,
        bundle_len: bundle.len() as u64,
        anywhere: opts.anywhere,
        slices: compiled.slices.iter().map(|s| s.name.clone()).collect(),
        images: parsed
            .images()
            .iter()
            .map(|e| (e.label.clone(), e.len, e.sha256))
            .collect(),
    })
}

/// Compiles plan text: validates it, resolves and checks every image (paths relative to
/// `plan_dir`), checks each slice's images fit its RAM, and returns the compiled plan and the
/// bundle bytes. Errors name the slice and the field.
pub fn compile(
    text: &str,
    plan_dir: &Path,
    artifacts: &Artifacts,
) -> Result<(CompiledPlan, Vec<u8>)> {
    compile_with(text, Resolver::new(plan_dir, artifacts))
}

/// [`compile`] with a given resolver (e.g. one holding the Linux guest already).
pub fn compile_with(text: &str, mut resolver: Resolver<'_>) -> Result<(CompiledPlan, Vec<u8>)> {
    let mut plan = Plan::from_toml(text).map_err(plan_error)?;
    plan.check_manager_kernel().map_err(plan_error)?;
    with_generated_initrds(&mut plan);
    let manager = plan.slices.iter().find(|s| s.role.is_manager());
    if let Some(m) = manager.filter(|m| m.redfish_tls.is_some() && !is_generated_initrd(m)) {
        anyhow::bail!(
            "slice \"{}\": redfish-certificate: the manager boots its own initrd; the TLS files go into the generated one only",
            m.name
        );
    }
    resolver.manager(manager.map(|s| (s.name.as_str(), s.redfish_tls.as_ref())));
    let mut writer = BundleWriter::new();
    let mut defaults = Vec::new();
    let mut compiled = plan.try_map_images(|slice, field, source| -> Result<u32> {
        let image = resolver.resolve(&slice.name, field, source)?;
        if field == Field::Kernel {
            defaults.push(image.default_cmdline);
        }
        Ok(writer.add_image(&image.label, image.bytes))
    })?;
    for (slice, source) in compiled.slices.iter_mut().zip(&plan.slices) {
        let kernel = resolver.resolve(&slice.name, Field::Kernel, &source.kernel)?;
        if slice.boot == BootProtocol::Firmware {
            GuestLayout::firmware(slice.memory, kernel.bytes.len() as u64)
                .map_err(|e| plan_error(e.with_slice(slice.name.as_str())))?;
            // Without variables the slice's flash stays erased and the firmware uses its
            // built-in environment; a start that boots from the network first needs that
            // environment written out with its boot order changed.
            let env = if slice.firmware_env.is_empty() {
                crate::uboot_env::default_environment(&kernel.bytes).ok()
            } else {
                slice.firmware_env =
                    firmware_environment(&slice.name, &kernel.bytes, &slice.firmware_env)?;
                Some(slice.firmware_env.clone())
            };
            slice.firmware_network_env = env
                .and_then(|env| microvisor_plan::firmware_env::network_first(&env))
                .unwrap_or_default();
            continue;
        }
        let header = Arm64Header::parse(&kernel.bytes).expect("checked by the resolver");
        let initrd_len = match &source.initrd {
            Some(initrd) => Some(
                resolver
                    .resolve(&slice.name, Field::Initrd, initrd)?
                    .bytes
                    .len() as u64,
            ),
            None => None,
        };
        GuestLayout::new(slice.memory, &header, kernel.bytes.len() as u64, initrd_len).map_err(
            |e| {
                let generated = e.field == Field::Initrd && is_generated_initrd(source);
                let e = plan_error(e.with_slice(slice.name.as_str()));
                if generated {
                    anyhow::anyhow!("{e} (the initramfs generated for kernel = \"linux\")")
                } else {
                    e
                }
            },
        )?;
    }
    for (slice, default) in compiled.slices.iter_mut().zip(defaults) {
        slice.cmdline = full_cmdline(default, &slice.cmdline);
    }
    let bundle = writer.finish(&compiled);
    Ok((compiled, bundle))
}

/// The whole environment of a slice's firmware: its built-in one with the plan's `vars`
/// merged in (U-Boot reads one or the other, docs/firmware.md), checked to fit the flash
/// pages it is given.
fn firmware_environment(
    slice: &str,
    firmware: &[u8],
    vars: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let defaults = crate::uboot_env::default_environment(firmware).with_context(|| {
        format!("slice \"{slice}\": firmware.env: cannot merge it into the firmware's own")
    })?;
    let env = crate::uboot_env::merged(&defaults, vars);
    microvisor_plan::firmware_env::check(&env).map_err(|problem| {
        plan_error(microvisor_plan::PlanError::slice(
            slice,
            Field::FirmwareEnv,
            problem,
        ))
    })?;
    Ok(env)
}

/// Gives every `kernel = "linux"` slice without an `initrd` the generated initramfs, written
/// `BuiltIn(Linux)` in its `initrd` field (a plan file cannot say that: the TOML refuses a
/// built-in name as `initrd`).
pub fn with_generated_initrds(plan: &mut Plan) {
    for slice in &mut plan.slices {
        if slice.kernel == ImageSource::BuiltIn(BuiltIn::Linux) && slice.initrd.is_none() {
            slice.initrd = Some(ImageSource::BuiltIn(BuiltIn::Linux));
        }
    }
}

/// Whether the slice's initrd is the generated initramfs.
fn is_generated_initrd(slice: &microvisor_plan::SliceOf<ImageSource>) -> bool {
    slice.initrd == Some(ImageSource::BuiltIn(BuiltIn::Linux))
}

/// A built-in guest's default command line followed by the plan's.
pub fn full_cmdline(default: &str, user: &str) -> String {
    match (default.trim(), user.trim()) {
        ("", user) => user.to_string(),
        (default, "") => default.to_string(),
        (default, user) => format!("{default} {user}"),
    }
}

/// Flat hypervisor (padded to 4 KiB) followed by the bundle, header patched: `image_size` =
/// total length rounded up to 4 KiB plus the boot stack after it
/// ([`microvisor_plan::image::BOOT_STACK_TAIL`]), and the "anywhere" flag when asked.
pub fn assemble(mut hypervisor: Vec<u8>, bundle: &[u8], anywhere: bool) -> Result<Vec<u8>> {
    Arm64Header::parse(&hypervisor)
        .map_err(|e| anyhow::anyhow!("the hypervisor has no valid arm64 Image header: {e}"))?;
    ensure!(
        hypervisor.len().is_multiple_of(flat::PAGE as usize),
        "flat hypervisor is not padded to 4 KiB"
    );
    hypervisor.extend_from_slice(bundle);
    let size = flat::round_up(hypervisor.len() as u64, flat::PAGE)
        + microvisor_plan::image::BOOT_STACK_TAIL;
    hypervisor[IMAGE_SIZE_OFFSET..IMAGE_SIZE_OFFSET + 8].copy_from_slice(&size.to_le_bytes());
    if anywhere {
        let mut flags = [0u8; 8];
        flags.copy_from_slice(&hypervisor[FLAGS_OFFSET..FLAGS_OFFSET + 8]);
        let flags = u64::from_le_bytes(flags) | FLAG_ANYWHERE;
        hypervisor[FLAGS_OFFSET..FLAGS_OFFSET + 8].copy_from_slice(&flags.to_le_bytes());
    }
    Ok(hypervisor)
}

/// Where the bundle starts in an image file: right after the flat hypervisor. Found by
/// scanning 4 KiB boundaries for a bundle that parses (the hypervisor is not parsed).
pub fn find_bundle(image: &[u8]) -> Option<usize> {
    (flat::PAGE as usize..image.len())
        .step_by(flat::PAGE as usize)
        .find(|&at| microvisor_plan::header_total_len(&image[at..]).is_ok())
}

/// `len` bytes of `hash` as hex.
pub fn hex_prefix(hash: &[u8], len: usize) -> String {
    hash.iter().take(len).map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for ImageSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "image {}: {} ({} bytes) = hypervisor {} + bundle {}{}",
            self.out.display(),
            HumanSize(self.total_len),
            self.total_len,
            HumanSize(self.hypervisor_len),
            HumanSize(self.bundle_len),
            if self.anywhere {
                ", header flag \"anywhere\""
            } else {
                ""
            }
        )?;
        writeln!(f, "  slices: {}", self.slices.join(", "))?;
        for (label, len, hash) in &self.images {
            writeln!(
                f,
                "  image {label}: {} sha256 {}",
                HumanSize(*len),
                hex_prefix(hash, 8)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use microvisor_plan::image::build_header;

    /// A fake kernel file: a valid header claiming `image_size` bytes, `file_len` long.
    fn kernel_file(dir: &Path, name: &str, image_size: u64, file_len: usize) -> PathBuf {
        let mut bytes = build_header(0, image_size, 2).to_vec();
        bytes.resize(file_len.max(64), 0xab);
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-image-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn no_artifacts() -> Artifacts {
        Artifacts {
            hypervisor: "/nonexistent/microvisor".into(),
            probe: "/nonexistent/probe".into(),
        }
    }

    fn compile_err(plan: &str, dir: &Path) -> String {
        format!("{:#}", compile(plan, dir, &no_artifacts()).unwrap_err())
    }

    #[test]
    fn path_kernels_are_bundled_once_with_their_cmdline() {
        let dir = temp_dir("ok");
        kernel_file(&dir, "k.img", 8192, 4096);
        let plan = r#"
[[slice]]
name = "a"
cores = 1
memory = "16MiB"
kernel = "k.img"
cmdline = "heartbeat=500"
[[slice]]
name = "b"
cores = [1]
memory = "16MiB"
kernel = "./k.img"
"#;
        let (compiled, bundle) = compile(plan, &dir, &no_artifacts()).unwrap();
        let parsed = Bundle::parse(&bundle).unwrap();
        assert_eq!(parsed.images().len(), 1, "same bytes stored once");
        assert_eq!(parsed.images()[0].label, "k.img");
        assert_eq!(
            (compiled.slices[0].kernel, compiled.slices[1].kernel),
            (0, 0)
        );
        assert_eq!(compiled.slices[0].cmdline, "heartbeat=500");
        assert_eq!(parsed.plan(), &compiled);
        parsed.verify_images().unwrap();
    }

    #[test]
    fn a_missing_kernel_file_names_slice_and_field() {
        let dir = temp_dir("missing");
        let err = compile_err(
            "[[slice]]\nname = \"web\"\ncores = 1\nmemory = \"64MiB\"\nkernel = \"nope.img\"\n",
            &dir,
        );
        assert!(
            err.contains("slice \"web\"") && err.contains("kernel") && err.contains("nope.img"),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn a_missing_initrd_names_the_initrd_field() {
        let dir = temp_dir("initrd");
        kernel_file(&dir, "k.img", 4096, 4096);
        let err = compile_err(
            "[[slice]]\nname = \"web\"\ncores = 1\nmemory = \"64MiB\"\nkernel = \"k.img\"\ninitrd = \"i.cpio\"\n",
            &dir,
        );
        assert!(
            err.contains("slice \"web\"") && err.contains("initrd") && err.contains("i.cpio"),
            "{err}"
        );
    }

    #[test]
    fn a_kernel_too_large_for_its_slice_says_what_would_fit() {
        let dir = temp_dir("large");
        kernel_file(&dir, "big.img", 8 << 20, 4096);
        let err = compile_err(
            "[[slice]]\nname = \"tiny\"\ncores = 1\nmemory = \"4MiB\"\nkernel = \"big.img\"\n",
            &dir,
        );
        assert!(
            err.contains("slice \"tiny\"") && err.contains("kernel") && err.contains("at least"),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_an_arm64_header_is_rejected() {
        let dir = temp_dir("bad");
        std::fs::write(dir.join("junk.bin"), vec![0u8; 4096]).unwrap();
        let err = compile_err(
            "[[slice]]\nname = \"x\"\ncores = 1\nmemory = \"64MiB\"\nkernel = \"junk.bin\"\n",
            &dir,
        );
        assert!(
            err.contains("slice \"x\"") && err.contains("kernel") && err.contains("arm64"),
            "{err}"
        );
    }

    /// A stand-in for Debian's kernel (Image header like Debian's: text_offset 0, flags 0xa,
    /// `image_size` 8 MiB, 4 MiB file) and an initramfs of `initramfs_len` bytes.
    fn fake_linux(initramfs_len: usize) -> std::sync::Arc<crate::linux::LinuxGuest> {
        let mut kernel = build_header(0, 8 << 20, 0xa).to_vec();
        kernel.resize(4 << 20, 0x11);
        std::sync::Arc::new(crate::linux::LinuxGuest {
            kernel,
            initramfs: vec![0x22; initramfs_len],
            manager_initramfs: vec![0x33; initramfs_len + 4096],
            release: "6.1.0-test-cloud-arm64".into(),
            kernel_file: "/nonexistent/vmlinuz".into(),
            initramfs_file: "/nonexistent/initramfs.cpio.gz".into(),
            manager_initramfs_file: "/nonexistent/manager-initramfs.cpio.gz".into(),
            packages: Vec::new(),
            note: None,
        })
    }

    fn compile_linux(
        plan: &str,
        dir: &Path,
        initramfs_len: usize,
    ) -> Result<(CompiledPlan, Vec<u8>)> {
        let artifacts = no_artifacts();
        let resolver = Resolver::new(dir, &artifacts).with_linux(fake_linux(initramfs_len));
        compile_with(plan, resolver)
    }

    #[test]
    fn linux_slices_get_the_kernel_the_generated_initramfs_and_the_default_cmdline() {
        let plan = r#"
[[slice]]
name = "a"
cores = 2
memory = "64MiB"
kernel = "linux"
cmdline = "microvisor.heartbeat=500"
[[slice]]
name = "b"
cores = 1
memory = "64MiB"
kernel = "linux"
"#;
        let (compiled, bundle) = compile_linux(plan, Path::new("."), 100 << 10).unwrap();
        let parsed = Bundle::parse(&bundle).unwrap();
        let labels: Vec<&str> = parsed.images().iter().map(|e| e.label.as_str()).collect();
        assert_eq!(labels, ["linux", "linux-initramfs"], "each stored once");
        assert_eq!(parsed.images()[1].len, 100 << 10);
        for slice in &compiled.slices {
            assert_eq!((slice.kernel, slice.initrd), (0, Some(1)));
        }
        assert_eq!(
            compiled.slices[0].cmdline,
            format!("{} microvisor.heartbeat=500", crate::linux::DEFAULT_CMDLINE)
        );
        assert_eq!(compiled.slices[1].cmdline, crate::linux::DEFAULT_CMDLINE);
        parsed.verify_images().unwrap();
    }

    #[test]
    fn the_manager_gets_the_manager_initramfs_and_tenants_theirs() {
        let plan = r#"
[[slice]]
name = "t1"
cores = 1
memory = "64MiB"
kernel = "linux"
[[slice]]
name = "ctl"
cores = 1
memory = "64MiB"
kernel = "linux"
role = "manager"
[[slice]]
name = "t2"
cores = 1
memory = "64MiB"
kernel = "linux"
"#;
        let (compiled, bundle) = compile_linux(plan, Path::new("."), 100 << 10).unwrap();
        let parsed = Bundle::parse(&bundle).unwrap();
        let labels: Vec<&str> = parsed.images().iter().map(|e| e.label.as_str()).collect();
        assert_eq!(labels, ["linux", "linux-initramfs", "manager-initramfs"]);
        let initrds: Vec<Option<u32>> = compiled.slices.iter().map(|s| s.initrd).collect();
        assert_eq!(initrds, [Some(1), Some(2), Some(1)]);
        assert_eq!(parsed.images()[2].len, (100 << 10) + 4096);
    }

    #[test]
    fn the_plans_redfish_tls_files_go_into_the_managers_initramfs_only() {
        use flate2::read::GzDecoder;
        use std::io::Read;
        let dir = temp_dir("redfish-tls");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
        std::fs::write(dir.join("node.crt"), cert).unwrap();
        std::fs::write(dir.join("node.key"), key).unwrap();
        std::fs::write(dir.join("junk"), "not pem").unwrap();
        let manager = |tls: &str| {
            format!(
                "[[slice]]\nname = \"t\"\ncores = 1\nmemory = \"64MiB\"\nkernel = \"linux\"\n\
                 [[slice]]\nname = \"ctl\"\ncores = 1\nmemory = \"64MiB\"\nkernel = \"linux\"\n\
                 role = \"manager\"\n{tls}"
            )
        };
        let plan = manager("redfish-certificate = \"node.crt\"\nredfish-key = \"node.key\"\n");
        let (compiled, bundle) = compile_linux(&plan, &dir, 100 << 10).unwrap();
        let parsed = Bundle::parse(&bundle).unwrap();
        let image = |i: Option<u32>| parsed.image(i.unwrap()).unwrap().bytes.to_vec();
        assert_eq!(image(compiled.slices[0].initrd), vec![0x22; 100 << 10]);
        let ctl = image(compiled.slices[1].initrd);
        let base = (100 << 10) + 4096;
        assert_eq!(ctl[..base], vec![0x33; base][..]);
        let mut cpio = Vec::new();
        GzDecoder::new(&ctl[base.next_multiple_of(4)..])
            .read_to_end(&mut cpio)
            .unwrap();
        let entries = crate::initramfs::read_newc(&cpio).unwrap();
        let file = |name: &str| entries.iter().find(|e| e.name == name).unwrap();
        assert_eq!(
            file(crate::guest::REDFISH_TLS_CERT).kind(),
            Some(crate::initramfs::Kind::File(cert.as_bytes().to_vec()))
        );
        assert_eq!(file(crate::guest::REDFISH_TLS_KEY).permissions(), 0o600);
        for (tls, says) in [
            (
                "redfish-certificate = \"missing.crt\"\nredfish-key = \"node.key\"\n",
                "redfish-certificate: ",
            ),
            (
                "redfish-certificate = \"junk\"\nredfish-key = \"node.key\"\n",
                "is not PEM with a CERTIFICATE",
            ),
            (
                "redfish-certificate = \"node.crt\"\nredfish-key = \"node.crt\"\n",
                "holds no PEM private key",
            ),
            (
                "redfish-certificate = \"node.crt\"\nredfish-key = \"node.key\"\ninitrd = \"node.crt\"\n",
                "the manager boots its own initrd",
            ),
        ] {
            let err = format!(
                "{:#}",
                compile_linux(&manager(tls), &dir, 100 << 10).unwrap_err()
            );
            assert!(
                err.contains("slice \"ctl\"") && err.contains(says),
                "{tls}: {err}"
            );
        }
    }

    #[test]
    fn a_linux_slice_with_its_own_initrd_uses_it() {
        let dir = temp_dir("linux-initrd");
        std::fs::write(dir.join("root.cpio.gz"), vec![0x33; 5000]).unwrap();
        let plan = "[[slice]]\nname = \"l\"\ncores = 1\nmemory = \"64MiB\"\nkernel = \"linux\"\ninitrd = \"root.cpio.gz\"\n";
        let (compiled, bundle) = compile_linux(plan, &dir, 100 << 10).unwrap();
        let parsed = Bundle::parse(&bundle).unwrap();
        let labels: Vec<&str> = parsed.images().iter().map(|e| e.label.as_str()).collect();
        assert_eq!(labels, ["linux", "root.cpio.gz"]);
        assert_eq!(compiled.slices[0].initrd, Some(1));
        assert_eq!(compiled.slices[0].cmdline, crate::linux::DEFAULT_CMDLINE);
    }

    #[test]
    fn a_linux_slice_too_small_for_its_kernel_says_what_would_fit() {
        let plan = "[[slice]]\nname = \"tiny\"\ncores = 1\nmemory = \"8MiB\"\nkernel = \"linux\"\n";
        let err = format!(
            "{:#}",
            compile_linux(plan, Path::new("."), 1 << 20).unwrap_err()
        );
        assert_eq!(
            err,
            "slice \"tiny\": kernel: needs 8 MiB but only 6 MiB fit (give the slice at least 12 MiB of memory)"
        );
    }

    #[test]
    fn a_linux_slice_too_small_for_the_generated_initramfs_names_it() {
        // 8 MiB kernel + 2 MiB device tree leave 2 MiB of a 12 MiB slice: too little for 3 MiB.
        let plan =
            "[[slice]]\nname = \"tiny\"\ncores = 1\nmemory = \"12MiB\"\nkernel = \"linux\"\n";
        let err = format!(
            "{:#}",
            compile_linux(plan, Path::new("."), 3 << 20).unwrap_err()
        );
        assert_eq!(
            err,
            "slice \"tiny\": initrd: needs 3 MiB but only 2 MiB fit (give the slice at least 14 MiB of memory) (the initramfs generated for kernel = \"linux\")"
        );
    }

    #[test]
    fn a_gzipped_debian_style_kernel_file_is_unpacked() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let dir = temp_dir("gz-vmlinuz");
        // Debian's vmlinuz starts with the EFI stub's "MZ" in code0; text_offset 0, flags 0xa.
        let mut image = build_header(0, 8 << 20, 0xa).to_vec();
        image[..2].copy_from_slice(b"MZ");
        image.resize(3 << 20, 0x44);
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&image).unwrap();
        std::fs::write(dir.join("vmlinuz.gz"), gz.finish().unwrap()).unwrap();
        let plan =
            "[[slice]]\nname = \"g\"\ncores = 1\nmemory = \"64MiB\"\nkernel = \"vmlinuz.gz\"\n";
        let (_, bundle) = compile(plan, &dir, &no_artifacts()).unwrap();
        let parsed = Bundle::parse(&bundle).unwrap();
        let entry = &parsed.images()[0];
        assert_eq!((entry.label.as_str(), entry.len), ("vmlinuz.gz", 3 << 20));
        let header = Arm64Header::parse(&image).unwrap();
        assert_eq!((header.text_offset, header.flags), (0, 0xa));
    }

    #[test]
    fn plan_errors_pass_through_as_one_line() {
        let err = compile_err(
            "[[slice]]\nname = \"a\"\ncores = 0\nmemory = \"64MiB\"\nkernel = \"probe\"\n",
            Path::new("."),
        );
        assert!(
            err.contains("slice \"a\"") && err.contains("cores"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn assemble_patches_size_and_anywhere_flag() {
        let mut hv = build_header(0x20_0000, 0, 2).to_vec();
        hv.resize(8192, 0);
        let bundle = vec![7u8; 4096];
        let image = assemble(hv.clone(), &bundle, false).unwrap();
        let header = Arm64Header::parse(&image).unwrap();
        assert_eq!(header.image_size, 12288 + 52 * 1024);
        assert!(!header.anywhere());
        assert_eq!(&image[8192..], &bundle[..]);
        let anywhere = assemble(hv, &bundle, true).unwrap();
        let header = Arm64Header::parse(&anywhere).unwrap();
        assert!(header.anywhere());
        assert_eq!(header.flags, 2 | FLAG_ANYWHERE);
    }

    #[test]
    fn assemble_needs_a_header_and_page_padding() {
        assert!(assemble(vec![0; 4096], &[], false).is_err());
        let mut hv = build_header(0, 0, 2).to_vec();
        hv.resize(100, 0);
        assert!(assemble(hv, &[], false).is_err());
    }

    #[test]
    fn the_bundle_is_found_after_the_hypervisor() {
        let dir = temp_dir("find");
        kernel_file(&dir, "k.img", 4096, 4096);
        let plan = "[[slice]]\nname = \"a\"\ncores = 1\nmemory = \"16MiB\"\nkernel = \"k.img\"\n";
        let (_, bundle) = compile(plan, &dir, &no_artifacts()).unwrap();
        let mut hv = build_header(0x20_0000, 0, 2).to_vec();
        hv.resize(3 * 4096, 0);
        let image = assemble(hv, &bundle, false).unwrap();
        assert_eq!(find_bundle(&image), Some(3 * 4096));
        // The boot stack follows the file, rounded up to 4 KiB.
        let header = Arm64Header::parse(&image).unwrap();
        let file = flat::round_up(image.len() as u64, flat::PAGE);
        assert_eq!(header.image_size, file + 52 * 1024);
    }

    #[test]
    fn cmdlines_join_defaults_and_plan() {
        assert_eq!(full_cmdline("", "a=1"), "a=1");
        assert_eq!(full_cmdline("console=ttyAMA0", ""), "console=ttyAMA0");
        assert_eq!(
            full_cmdline("console=ttyAMA0", " a=1 "),
            "console=ttyAMA0 a=1"
        );
    }
}

//! Artifacts for the scenarios: the hypervisor and probe are built once per test binary; each
//! scenario's image goes to `target/test-images/<scenario>.img`, its log to
//! `target/test-logs/<scenario>.log`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use microvisor_plan::{Bundle, BundleError};
use xtask::build::Artifacts;
use xtask::image::{ImageOptions, find_bundle};
use xtask::workspace::Workspace;

/// The workspace and the built ELF files.
#[derive(Debug)]
pub struct Built {
    pub ws: Workspace,
    pub artifacts: Artifacts,
}

/// Set-up checks and the build, done once per test binary. Panics with the reason if they fail.
pub fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let prepare = || -> anyhow::Result<Built> {
            xtask::setup::ensure()?;
            let ws = Workspace::locate()?;
            let artifacts = xtask::build::build_all(&ws, true)?;
            Ok(Built { ws, artifacts })
        };
        prepare().map_err(|e| format!("{e:#}"))
    });
    match result {
        Ok(built) => built,
        Err(why) => panic!("cannot build the images: {why}"),
    }
}

impl Built {
    /// `target/test-images/<name>.<ext>`.
    pub fn image_path(&self, name: &str, ext: &str) -> PathBuf {
        self.ws
            .target_dir
            .join("test-images")
            .join(format!("{name}.{ext}"))
    }

    /// `target/test-logs/<name>.log`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.ws
            .target_dir
            .join("test-logs")
            .join(format!("{name}.log"))
    }

    /// Writes `plan` next to the image and builds `<name>.img` from it.
    pub fn image_from_plan_text(&self, name: &str, plan: &str, anywhere: bool) -> PathBuf {
        let plan_path = self.image_path(name, "toml");
        std::fs::create_dir_all(plan_path.parent().expect("has a parent"))
            .expect("creating target/test-images");
        std::fs::write(&plan_path, plan).expect("writing the scenario's plan");
        self.image_from_plan(name, &plan_path, anywhere)
    }

    /// Builds `<name>.img` from a plan file.
    pub fn image_from_plan(&self, name: &str, plan: &Path, anywhere: bool) -> PathBuf {
        let out = self.image_path(name, "img");
        xtask::image::write_image(
            &self.artifacts,
            &ImageOptions {
                plan,
                out: &out,
                anywhere,
            },
        )
        .unwrap_or_else(|e| panic!("scenario {name}: cannot build its image: {e:#}"));
        out
    }

    /// The probe alone as a flat arm64 Image, for booting it without the microvisor.
    pub fn native_probe_image(&self, name: &str) -> PathBuf {
        let elf = std::fs::read(&self.artifacts.probe).expect("reading the probe ELF");
        let flat = xtask::flat::elf_to_flat(&elf).expect("probe ELF to flat");
        let out = self.image_path(name, "img");
        std::fs::create_dir_all(out.parent().expect("has a parent"))
            .expect("creating target/test-images");
        std::fs::write(&out, flat.bytes).expect("writing the native probe image");
        out
    }
}

/// Writes a test mark (`microvisor_plan::image::STACK_OVERFLOW_TEST`,
/// `NVME_CONFINEMENT_TEST`) into the hypervisor image's header (`Tamper`).
pub fn mark_test(path: &Path, mark: [u8; 8]) {
    use microvisor_plan::image::TEST_MARK_OFFSET;
    let mut bytes = std::fs::read(path).expect("reading the image to mark");
    bytes[TEST_MARK_OFFSET..][..8].copy_from_slice(&mark);
    std::fs::write(path, &bytes).expect("writing the marked image");
}

/// Flips one byte in the middle of bundle image `index` of the image file at `path`, so its
/// SHA-256 no longer matches. Returns the label of the image corrupted.
pub fn corrupt_bundled_image(path: &Path, index: usize) -> String {
    let mut bytes = std::fs::read(path).expect("reading the image to corrupt");
    let start = find_bundle(&bytes).expect("the image has a bundle");
    let (at, label) = {
        let bundle = Bundle::parse(&bytes[start..]).expect("the bundle parses");
        let entry = bundle
            .images()
            .get(index)
            .expect("the bundle has that image");
        assert!(entry.len > 0, "cannot corrupt an empty image");
        (
            start + (entry.offset + entry.len / 2) as usize,
            entry.label.clone(),
        )
    };
    bytes[at] ^= 0x5a;
    std::fs::write(path, &bytes).expect("writing the corrupted image");
    // The bundle itself still parses: only the image's hash is now wrong.
    let bundle = Bundle::parse(&bytes[start..]).expect("the bundle still parses");
    assert_eq!(
        bundle.verify_image(index as u32),
        Err(BundleError::HashMismatch {
            image: index as u32,
            label: label.clone(),
        }),
        "corruption not detected on the host"
    );
    label
}

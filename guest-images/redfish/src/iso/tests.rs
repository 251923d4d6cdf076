//! The reader against images from the test writer (xtask/src/iso.rs), from genisoimage and
//! xorriso when they are installed, and against broken and randomly mutated images.

use super::kernel::{gzip, test_image};
use super::*;
use xtask::iso::IsoBuilder;

const GRUB: &str = "set timeout=5\n\
    menuentry 'Install' {\n  linux /install/vmlinuz console=ttyAMA0 --- quiet\n  \
    initrd /install/initrd.gz\n}\n\
    menuentry 'Rescue' {\n  linux /install/vmlinuz rescue/enable=true\n}\n";

fn kernel() -> Vec<u8> {
    test_image(9000, 0x5a)
}

fn initrd() -> Vec<u8> {
    (0..7000u32).map(|i| (i % 251) as u8).collect()
}

fn builder(files: &[(&str, Vec<u8>)]) -> IsoBuilder {
    let mut iso = IsoBuilder::new("MEDIA");
    for (path, bytes) in files {
        iso.file(path, bytes.clone()).unwrap();
    }
    iso
}

fn grub_iso() -> IsoBuilder {
    builder(&[
        ("/boot/grub/grub.cfg", GRUB.into()),
        ("/install/vmlinuz", gzip(&kernel())),
        ("/install/initrd.gz", initrd()),
    ])
}

fn media(image: &[u8]) -> Result<BootMedia, MediaError> {
    boot_media(image, &Limits::default())
}

#[test]
fn a_raw_kernel_boots_as_it_is() {
    let m = media(&kernel()).unwrap();
    assert_eq!(m.kernel, kernel());
    assert_eq!((&m.initrd, m.cmdline.as_str()), (&None, ""));
    assert!(m.source.starts_with("an arm64 Image"), "{}", m.source);
    let spec = m.boot_spec();
    assert_eq!(
        (spec.initrd, spec.cmdline),
        (microvisor_control::InitrdChoice::None, None)
    );
    let m = media(&gzip(&kernel())).unwrap();
    assert_eq!(m.kernel, kernel());
}

#[test]
fn something_else_is_not_bootable() {
    for bytes in [&b""[..], b"<html>not found</html>", &[0u8; 40000]] {
        let err = media(bytes).unwrap_err();
        assert!(matches!(err, MediaError::NotBootable(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("not an ISO 9660 image nor an arm64 kernel Image"),
            "{err}"
        );
    }
}

#[test]
fn grub_default_entry_with_rock_ridge_names() {
    let image = grub_iso().build().unwrap().image;
    let m = media(&image).unwrap();
    assert_eq!(m.kernel, kernel());
    assert_eq!(m.initrd, Some(initrd()));
    assert_eq!(m.cmdline, "console=ttyAMA0 --- quiet");
    assert!(
        m.source
            .starts_with("/boot/grub/grub.cfg, menuentry 'Install' (the first): /install/vmlinuz"),
        "{}",
        m.source
    );
    assert!(m.source.contains("gzip"), "{}", m.source);
    assert_eq!(
        m.boot_spec(),
        microvisor_control::BootSpec {
            staged_kernel: true,
            initrd: microvisor_control::InitrdChoice::Staged,
            cmdline: Some("console=ttyAMA0 --- quiet".into()),
        }
    );
    let iso = IsoImage::open(&image, &Limits::default()).unwrap();
    assert!(iso.has_rock_ridge() && !iso.has_joliet());
    assert_eq!(iso.volume_id(), "MEDIA");
}

#[test]
fn plain_iso9660_names_match_ignoring_case_and_version() {
    let mut iso = grub_iso();
    iso.rock_ridge(false);
    let image = iso.build().unwrap().image;
    let opened = IsoImage::open(&image, &Limits::default()).unwrap();
    assert!(!opened.has_rock_ridge());
    let names: Vec<String> = opened
        .list("/install")
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["INITRD.GZ", "VMLINUZ"]);
    let m = media(&image).unwrap();
    assert_eq!((m.kernel, m.initrd), (kernel(), Some(initrd())));
}

#[test]
fn joliet_names_serve_when_iso9660_names_do_not() {
    let mut iso = builder(&[
        (
            "/boot/grub/grub.cfg",
            "menuentry 'Live' { linux /casper/vmlinuz-6.8.0-generic boot=casper\n \
             initrd /casper/initrd-6.8.0-generic.lz }\n"
                .into(),
        ),
        ("/casper/vmlinuz-6.8.0-generic", kernel()),
        ("/casper/initrd-6.8.0-generic.lz", initrd()),
    ]);
    iso.rock_ridge(false).joliet(true);
    let image = iso.build().unwrap().image;
    assert!(
        IsoImage::open(&image, &Limits::default())
            .unwrap()
            .has_joliet()
    );
    let m = media(&image).unwrap();
    assert_eq!((m.kernel, m.initrd), (kernel(), Some(initrd())));
    assert_eq!(m.cmdline, "boot=casper");
}

#[test]
fn isolinux_when_there_is_no_grub() {
    let image = builder(&[
        (
            "/isolinux/isolinux.cfg",
            "UI menu.c32\nDEFAULT live\nLABEL live\n  KERNEL /live/vmlinuz\n  \
             APPEND initrd=/live/initrd.img,/live/extra.img boot=live\n"
                .into(),
        ),
        ("/live/vmlinuz", kernel()),
        ("/live/initrd.img", initrd()),
        ("/live/extra.img", b"EXTRA".to_vec()),
    ])
    .build()
    .unwrap()
    .image;
    let m = media(&image).unwrap();
    let mut both = initrd();
    both.extend_from_slice(b"EXTRA");
    assert_eq!((m.kernel, m.initrd), (kernel(), Some(both)));
    assert_eq!(m.cmdline, "boot=live");
    assert!(
        m.source
            .starts_with("/isolinux/isolinux.cfg, label 'live' (DEFAULT)"),
        "{}",
        m.source
    );
}

#[test]
fn extlinux_and_efi_grub_locations() {
    let image = builder(&[
        (
            "/extlinux/extlinux.conf",
            "default l\nlabel l\nlinux ../k\n".into(),
        ),
        ("/k", kernel()),
    ])
    .build()
    .unwrap()
    .image;
    assert_eq!(media(&image).unwrap().kernel, kernel());
    let image = builder(&[
        ("/EFI/BOOT/grub.cfg", "menuentry a { linux /k }".into()),
        ("/k", kernel()),
    ])
    .build()
    .unwrap()
    .image;
    assert!(
        media(&image)
            .unwrap()
            .source
            .starts_with("/EFI/BOOT/grub.cfg")
    );
}

#[test]
fn a_kernel_not_on_the_image_is_named() {
    let image = builder(&[("/boot/grub/grub.cfg", GRUB.into())])
        .build()
        .unwrap()
        .image;
    let err = media(&image).unwrap_err();
    assert!(
        matches!(&err, MediaError::MissingFile { role: "kernel", path, .. } if path == "/install/vmlinuz"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "/boot/grub/grub.cfg, menuentry 'Install' (the first) names /install/vmlinuz as its \
         kernel, which is not on the image"
    );
    let image = builder(&[
        ("/boot/grub/grub.cfg", GRUB.into()),
        ("/install/vmlinuz", kernel()),
    ])
    .build()
    .unwrap()
    .image;
    assert!(matches!(
        media(&image).unwrap_err(),
        MediaError::MissingFile { role: "initrd", .. }
    ));
}

#[test]
fn no_configuration_lists_what_was_looked_for() {
    let image = builder(&[("/readme.txt", b"hello".to_vec())])
        .build()
        .unwrap()
        .image;
    let err = media(&image).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("no boot configuration found (looked for /boot/grub/grub.cfg, "),
        "{text}"
    );
    assert!(text.contains("/isolinux/isolinux.cfg"), "{text}");
}

#[test]
fn a_configuration_without_a_linux_entry() {
    let image = builder(&[("/boot/grub/grub.cfg", b"set timeout=1\n".to_vec())])
        .build()
        .unwrap()
        .image;
    assert!(matches!(media(&image).unwrap_err(), MediaError::NoEntry(_)));
}

#[test]
fn an_x86_kernel_is_refused_with_what_it_is() {
    let mut bz = vec![0u8; 0x400];
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    let image = builder(&[
        ("/boot/grub/grub.cfg", GRUB.into()),
        ("/install/vmlinuz", bz),
        ("/install/initrd.gz", initrd()),
    ])
    .build()
    .unwrap()
    .image;
    let err = media(&image).unwrap_err();
    assert!(matches!(err, MediaError::BadKernel { .. }), "{err:?}");
    assert!(err.to_string().contains("x86 bzImage"), "{err}");
}

#[test]
fn limits_are_enforced() {
    let image = grub_iso().build().unwrap().image;
    let limits = Limits {
        max_kernel: 4096,
        ..Limits::default()
    };
    assert!(matches!(
        boot_media(&image, &limits).unwrap_err(),
        MediaError::TooLarge { .. }
    ));
    let limits = Limits {
        max_initrd: 100,
        ..Limits::default()
    };
    assert!(matches!(
        boot_media(&image, &limits).unwrap_err(),
        MediaError::TooLarge { .. }
    ));
    let limits = Limits {
        max_config: 10,
        ..Limits::default()
    };
    assert!(matches!(
        boot_media(&image, &limits).unwrap_err(),
        MediaError::TooLarge { .. }
    ));
    let limits = Limits {
        max_scan: 3000,
        ..Limits::default()
    };
    assert_eq!(
        boot_media(&image, &limits).unwrap_err(),
        MediaError::TooMuchWork(3000)
    );
    let long = format!("menuentry a {{ linux /k {} }}", "x".repeat(3000));
    let image = builder(&[("/boot/grub/grub.cfg", long.into()), ("/k", kernel())])
        .build()
        .unwrap()
        .image;
    assert!(matches!(
        media(&image).unwrap_err(),
        MediaError::CmdlineTooLong { bytes: 3000, .. }
    ));
}

/// The byte offset of the record named `iso_id` in the directory at `dir_lba`.
fn record_at(image: &[u8], dir_lba: usize, iso_id: &[u8]) -> usize {
    let dir = dir_lba * SECTOR;
    let mut at = dir;
    loop {
        let len = usize::from(image[at]);
        assert!(len > 0, "{iso_id:?} not found");
        let name_len = usize::from(image[at + 32]);
        if &image[at + 33..at + 33 + name_len] == iso_id {
            return at;
        }
        at += len;
    }
}

fn root_lba(image: &[u8]) -> usize {
    u32::from_le_bytes(
        image[16 * SECTOR + 158..16 * SECTOR + 162]
            .try_into()
            .unwrap(),
    ) as usize
}

fn set_u32(image: &mut [u8], at: usize, value: u32) {
    image[at..at + 4].copy_from_slice(&value.to_le_bytes());
    image[at + 4..at + 8].copy_from_slice(&value.to_be_bytes());
}

#[test]
fn malformed_structures_are_reported() {
    let layout = grub_iso().build().unwrap();
    let last_file = layout.files.iter().map(|(_, at)| *at).max().unwrap();
    let good = layout.image;
    // Cut short: the descriptors, then the directories, then a file.
    for len in [16 * SECTOR + 100, 19 * SECTOR, last_file + 1] {
        let mut image = good.clone();
        image.truncate(len);
        let err = media(&image).unwrap_err();
        assert!(matches!(err, MediaError::Malformed(_)), "{len}: {err:?}");
    }
    // No terminator and no primary descriptor.
    let mut image = good.clone();
    image[16 * SECTOR] = 3;
    image[17 * SECTOR] = 3;
    image.truncate(17 * SECTOR + 5 * SECTOR);
    assert!(matches!(
        media(&image).unwrap_err(),
        MediaError::Malformed(_)
    ));
    // A block size that is not one.
    let mut image = good.clone();
    image[16 * SECTOR + 128..16 * SECTOR + 130].copy_from_slice(&3u16.to_le_bytes());
    assert!(
        media(&image)
            .unwrap_err()
            .to_string()
            .contains("block size")
    );
    // A file extent past the end.
    let mut image = good.clone();
    let root = root_lba(&image);
    let install = record_at(&image, root, b"INSTALL");
    let install_lba = u32::from_le_bytes(image[install + 2..install + 6].try_into().unwrap());
    let vmlinuz = record_at(&image, install_lba as usize, b"VMLINUZ.;1");
    set_u32(&mut image, vmlinuz + 10, u32::MAX);
    let err = media(&image).unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
    // A huge directory.
    let mut image = good.clone();
    set_u32(&mut image, install + 10, u32::MAX);
    assert!(matches!(
        media(&image).unwrap_err(),
        MediaError::TooLarge { .. }
    ));
    // A record shorter than the fixed part.
    let mut image = good;
    image[install] = 20;
    assert!(matches!(
        media(&image).unwrap_err(),
        MediaError::Malformed(_)
    ));
}

#[test]
fn a_directory_cycle_ends() {
    // /install points back at the root: /install/install/... is the root again, and a
    // lookup stops at the component limit or the scan budget.
    let mut image = grub_iso().build().unwrap().image;
    let root = root_lba(&image);
    let install = record_at(&image, root, b"INSTALL");
    set_u32(&mut image, install + 2, root as u32);
    let iso = IsoImage::open(&image, &Limits::default()).unwrap();
    let deep = "/install".repeat(31) + "/boot/grub/grub.cfg";
    assert!(iso.read(&deep).is_err() || iso.read(&deep).unwrap().is_some());
    assert!(iso.read(&"/install".repeat(40)).is_err());
}

/// xorshift64*: the mutation test's deterministic randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutates `image` in its metadata (descriptors, path tables, directories, configuration).
fn mutate(rng: &mut Rng, image: &mut Vec<u8>, metadata_end: usize) {
    for _ in 0..1 + rng.below(8) {
        let end = metadata_end.min(image.len());
        match rng.below(6) {
            0 => {
                let at = 16 * SECTOR + rng.below(end.saturating_sub(16 * SECTOR));
                if let Some(b) = image.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 => {
                let at = 16 * SECTOR + rng.below(end.saturating_sub(16 * SECTOR));
                if let Some(b) = image.get_mut(at) {
                    *b = rng.next() as u8;
                }
            }
            2 => {
                // A both-endian field at random: a random or an extreme value.
                let at = 16 * SECTOR + rng.below(end.saturating_sub(16 * SECTOR));
                let value = [0, u32::MAX, rng.next() as u32, 16][rng.below(4)];
                if at + 8 <= image.len() {
                    set_u32(image, at, value);
                }
            }
            3 => {
                let len = rng.below(image.len());
                image.truncate(len.max(16 * SECTOR + 1));
            }
            4 => {
                // Copy one directory's bytes over another place in the metadata.
                let from = 16 * SECTOR + rng.below(end.saturating_sub(16 * SECTOR));
                let to = 16 * SECTOR + rng.below(end.saturating_sub(16 * SECTOR));
                let n = rng.below(256);
                if from + n <= image.len() && to + n <= image.len() {
                    image.copy_within(from..from + n, to);
                }
            }
            _ => {
                let at = 16 * SECTOR + rng.below(end.saturating_sub(16 * SECTOR));
                if let Some(b) = image.get_mut(at) {
                    *b = [0, 0xff, b'/', b'{', b'}', b'\n'][rng.below(6)];
                }
            }
        }
    }
}

#[test]
fn mutated_images_never_panic() {
    let mut plain = grub_iso();
    plain.rock_ridge(false).joliet(true);
    let mut isolinux = builder(&[
        (
            "/isolinux/isolinux.cfg",
            "INCLUDE menu.cfg\nDEFAULT vesamenu.c32\n".into(),
        ),
        (
            "/isolinux/menu.cfg",
            "LABEL a\nMENU DEFAULT\nKERNEL /k\nAPPEND initrd=/i x\n".into(),
        ),
        ("/k", kernel()),
        ("/i", initrd()),
    ]);
    isolinux.joliet(true);
    let seeds: Vec<(Vec<u8>, usize)> = [grub_iso(), plain, isolinux]
        .iter()
        .map(|b| {
            let layout = b.build().unwrap();
            let first_file = layout.files.iter().map(|(_, at)| *at).min().unwrap();
            // Configuration files are data too: mutate up to the end of the first file.
            (layout.image, first_file + 4 * SECTOR)
        })
        .collect();
    let limits = Limits {
        max_kernel: 1 << 20,
        ..Limits::default()
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..4000 {
        let (seed, metadata_end) = &seeds[round % seeds.len()];
        let mut image = seed.clone();
        mutate(&mut rng, &mut image, *metadata_end);
        let outcome = match boot_media(&image, &limits) {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("{e:?}")
                .split(['(', ' '])
                .next()
                .unwrap()
                .to_string(),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!("mutated image outcomes: {outcomes:?}");
    assert!(outcomes.len() > 3, "{outcomes:?}");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(12345);
    for _ in 0..200 {
        let len = rng.below(40 * SECTOR);
        let mut image: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if image.len() > 16 * SECTOR + 6 && rng.below(2) == 0 {
            image[16 * SECTOR + 1..16 * SECTOR + 6].copy_from_slice(b"CD001");
            image[16 * SECTOR] = 1;
        }
        let _ = media(&image);
    }
}

// Images made by real tools, when they are installed (the tests pass, saying so, when not).

fn run_tool(program: &str, args: &[&str]) -> Option<std::process::Output> {
    match std::process::Command::new(program).args(args).output() {
        Ok(out) => Some(out),
        Err(_) => {
            eprintln!("skipped: {program} is not installed (apt-get install {program})");
            None
        }
    }
}

/// A directory tree for the tools: a Debian-like GRUB layout, an isolinux one, and a kernel
/// whose name is long enough that Rock Ridge puts it in a continuation area.
fn tool_tree(root: &std::path::Path, long: &str) {
    let write = |path: &str, bytes: &[u8]| {
        let path = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    write(
        "/boot/grub/grub.cfg",
        format!(
            "source /boot/grub/theme.cfg\nset default=\"1\"\n\
             menuentry 'First' {{ linux /nowhere }}\n\
             menuentry 'Second' --id second {{\n  linux /boot/{long} root=live:CDLABEL=X\n  \
             initrd /boot/initrd.img\n}}\n"
        )
        .as_bytes(),
    );
    write("/boot/grub/theme.cfg", b"set color_normal=white/black\n");
    write(&format!("/boot/{long}"), &gzip(&kernel()));
    write("/boot/initrd.img", &initrd());
}

fn check_tool_image(image: &[u8], what: &str) {
    let m = boot_media(image, &Limits::default()).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(m.kernel, kernel(), "{what}");
    assert_eq!(m.initrd, Some(initrd()), "{what}");
    assert_eq!(m.cmdline, "root=live:CDLABEL=X", "{what}");
    assert!(
        m.source.contains("menuentry 'Second' (the default)"),
        "{what}: {}",
        m.source
    );
}

#[test]
fn images_from_genisoimage_and_xorriso() {
    let dir = std::env::temp_dir().join(format!("redfish-iso-{}", std::process::id()));
    // Rock Ridge names of 200 bytes need a continuation area; Joliet's stop at 103.
    let rock_ridge_tree = dir.join("rr");
    tool_tree(&rock_ridge_tree, &format!("vmlinuz-{}", "x".repeat(200)));
    let joliet_tree = dir.join("joliet");
    tool_tree(&joliet_tree, &format!("vmlinuz-{}", "x".repeat(90)));
    let out_path = dir.join("out.iso");
    let out_arg = out_path.to_str().unwrap();
    let mut ran = false;
    // Rock Ridge and Joliet; Rock Ridge only; Joliet only (long names: -joliet-long).
    let variants: [(&str, &[&str]); 3] = [
        ("rock ridge + joliet", &["-R", "-J", "-joliet-long"]),
        ("rock ridge", &["-R"]),
        ("joliet", &["-J", "-joliet-long"]),
    ];
    for (program, prefix) in [
        ("genisoimage", &[][..]),
        ("xorriso", &["-as", "mkisofs"][..]),
    ] {
        for (name, flags) in variants {
            if program == "xorriso" && name == "joliet" {
                continue; // xorriso -as mkisofs always writes Rock Ridge
            }
            let mut args: Vec<&str> = prefix.to_vec();
            args.extend_from_slice(flags);
            let tree = if name == "joliet" {
                &joliet_tree
            } else {
                &rock_ridge_tree
            };
            args.extend_from_slice(&["-quiet", "-V", "TOOLS", "-o", out_arg]);
            args.push(tree.to_str().unwrap());
            let Some(out) = run_tool(program, &args) else {
                break;
            };
            assert!(
                out.status.success(),
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let image = std::fs::read(&out_path).unwrap();
            check_tool_image(&image, &format!("{program} ({name})"));
            ran = true;
        }
    }
    if !ran {
        eprintln!("skipped: neither genisoimage nor xorriso is installed");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rock_ridge_continuation_loops_end() {
    let mut image = grub_iso().build().unwrap().image;
    let sector = image.len() / SECTOR;
    // A continuation area holding part of a name and a continuation to itself.
    let mut area = vec![b'N', b'M', 7, 1, 1, b'a', b'b'];
    area.extend_from_slice(&[b'C', b'E', 28, 1]);
    for value in [sector as u32, 0, 35] {
        area.extend_from_slice(&value.to_le_bytes());
        area.extend_from_slice(&value.to_be_bytes());
    }
    image.extend_from_slice(&area);
    image.resize((sector + 1) * SECTOR, 0);
    let iso = IsoImage::open(&image, &Limits::default()).unwrap();
    let record = Record {
        extent: Extent { start: 0, len: 0 },
        flags: 0,
        id: b"X",
        system_use: &image[sector * SECTOR + 7..sector * SECTOR + 35],
    };
    let name = iso.rock_ridge_name(&record).unwrap().unwrap();
    assert_eq!(name, "ab".repeat(MAX_CONTINUATIONS));
    // One past the end or longer than a block is not followed.
    let mut far = record;
    let mut ce = image[sector * SECTOR + 7..sector * SECTOR + 35].to_vec();
    ce[4..8].copy_from_slice(&(sector as u32 + 5).to_le_bytes());
    far.system_use = &ce;
    assert_eq!(iso.rock_ridge_name(&far).unwrap(), None);
}

/// The Debian arm64 kernel `cargo xtask` caches for the built-in guest, if it is there.
fn debian_kernel() -> Option<Vec<u8>> {
    let debian =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests/debian");
    let package = std::fs::read_dir(&debian)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("linux-image-"))?;
    let boot = std::fs::read_dir(package.path().join("boot")).ok()?;
    let kernel = boot
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))?;
    std::fs::read(kernel.path()).ok()
}

#[test]
fn a_debian_kernel_on_an_iso_and_on_its_own() {
    let Some(vmlinuz) = debian_kernel() else {
        eprintln!("skipped: no Debian kernel in target/guests (cargo xtask build fetches it)");
        return;
    };
    let image = builder(&[
        (
            "/boot/grub/grub.cfg",
            b"menuentry 'Debian' { linux /live/vmlinuz console=ttyAMA0 }".to_vec(),
        ),
        ("/live/vmlinuz", vmlinuz.clone()),
    ])
    .build()
    .unwrap()
    .image;
    let m = media(&image).unwrap();
    assert_eq!(m.kernel, vmlinuz);
    assert_eq!(m.initrd, None);
    assert!(m.source.ends_with("an arm64 Image"), "{}", m.source);
    assert_eq!(media(&vmlinuz).unwrap().kernel, vmlinuz);
}

#[test]
fn mutated_configurations_never_panic() {
    let grub_text = format!(
        "{GRUB}set default=\"1>0\"\nsubmenu 'S' --id s {{\n menuentry \"x$a\" {{ linux ($root)/k 'q' \\\" }}\n}}\n\
         if [ x = y ]; then source /boot/grub/grub.cfg; else configfile (cd0)/x.cfg; fi\n"
    );
    let syslinux_text = "UI menu.c32\nINCLUDE menu.cfg\nDEFAULT a\nLABEL a\n MENU DEFAULT\n KERNEL k\n \
                         APPEND initrd=i,j \"x y\" z\nLABEL b\n COM32 c.c32\nCONFIG other.cfg\n";
    let alphabet = b"{}\"'\\$;#\n \tmenuentry linux initrd set default=>0123 LABEL KERNEL APPEND INCLUDE initrd=,-";
    let mut rng = Rng(0xdead_beef);
    for round in 0..3000 {
        let base = if round % 2 == 0 {
            grub_text.as_bytes()
        } else {
            syslinux_text.as_bytes()
        };
        let mut text = base.to_vec();
        for _ in 0..1 + rng.below(10) {
            let at = rng.below(text.len() + 1);
            match rng.below(3) {
                0 => text.insert(at.min(text.len()), alphabet[rng.below(alphabet.len())]),
                1 if at < text.len() => {
                    text.remove(at);
                }
                _ => {
                    let from = rng.below(text.len());
                    let len = rng.below(40).min(text.len() - from);
                    let piece = text[from..from + len].to_vec();
                    text.splice(at.min(text.len())..at.min(text.len()), piece);
                }
            }
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        // Included files are the text itself: self-inclusion must end too.
        let mut read = |_: &str| -> Result<Option<String>, MediaError> { Ok(Some(text.clone())) };
        let _ = if round % 2 == 0 {
            grub::choose("/boot/grub/grub.cfg", &text, &mut read)
        } else {
            syslinux::choose("/isolinux/isolinux.cfg", &text, &mut read)
        };
    }
}

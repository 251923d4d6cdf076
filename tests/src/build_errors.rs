//! Build-time plan errors, checked the way a user meets them: `cargo xtask image` must exit
//! non-zero with exactly one `error:` line naming the slice and the field, and write nothing.

use std::path::PathBuf;
use std::process::Command;

use xtask::workspace::{cargo, render};

use crate::images::built;

/// What `cargo xtask image` did.
#[derive(Debug)]
pub struct XtaskRun {
    pub command: String,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// The `-o` file (absent unless the image was written).
    pub out: PathBuf,
}

impl XtaskRun {
    /// The `error:` lines on stderr.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect()
    }
}

/// The directory plans and files of build-error cases go to.
pub fn case_dir() -> PathBuf {
    built()
        .ws
        .target_dir
        .join("test-images")
        .join("build-errors")
}

/// Writes a file next to the plans (for plans that name image files).
pub fn write_case_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = case_dir();
    std::fs::create_dir_all(&dir).expect("creating the build-errors directory");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writing a case file");
    path
}

/// Runs `cargo xtask image --plan <case>.toml -o <case>.img` on `plan`.
pub fn xtask_image(case: &str, plan: &str) -> XtaskRun {
    let ws = &built().ws;
    let plan_path = write_case_file(&format!("{case}.toml"), plan.as_bytes());
    let out = case_dir().join(format!("{case}.img"));
    let _ = std::fs::remove_file(&out);
    let mut cmd: Command = cargo();
    cmd.args(["xtask", "image", "--plan"])
        .arg(&plan_path)
        .arg("-o")
        .arg(&out)
        .current_dir(&ws.root);
    let output = cmd.output().expect("running cargo xtask image");
    XtaskRun {
        command: render(&cmd),
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        out,
    }
}

/// Asserts `cargo xtask image` refuses `plan`: non-zero exit, no image, and exactly one
/// `error:` line that contains every string of `mentions` (the slice, the field, the problem).
pub fn assert_refused(case: &str, plan: &str, mentions: &[&str]) {
    let run = xtask_image(case, plan);
    let context = format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        run.command, run.stdout, run.stderr
    );
    assert!(!run.success, "plan {case} was accepted\n{context}");
    assert!(
        !run.out.exists(),
        "plan {case}: an image was written anyway\n{context}"
    );
    let errors = run.error_lines();
    assert_eq!(
        errors.len(),
        1,
        "plan {case}: expected one error line\n{context}"
    );
    for mention in mentions {
        assert!(
            errors[0].contains(mention),
            "plan {case}: error line does not mention {mention:?}: {}\n{context}",
            errors[0]
        );
    }
}

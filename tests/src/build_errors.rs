//! Build-time plan errors, checked the way a user meets them: `cargo xtask image` must exit
//! non-zero with exactly one `error:` line naming the slice and the field, and write nothing;
//! where the node is known (`cargo xtask plan`, `cargo xtask run`), so must a plan the node
//! cannot serve.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

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

/// Runs `cargo xtask <command> --plan <case>.toml --node <case>-node.toml` on `plan` and the
/// node profile `node` (TOML), or on the repository's profile `node` if it has no newline.
/// `run` is killed after `timeout` (it would boot QEMU if the plan were accepted).
fn xtask_on_node(command: &str, case: &str, plan: &str, node: &str) -> XtaskRun {
    let ws = &built().ws;
    let plan_path = write_case_file(&format!("{case}.toml"), plan.as_bytes());
    let node_arg = if node.contains('\n') {
        write_case_file(&format!("{case}-node.toml"), node.as_bytes())
    } else {
        PathBuf::from(node)
    };
    let mut cmd: Command = cargo();
    cmd.args(["xtask", command, "--plan"])
        .arg(&plan_path)
        .arg("--node")
        .arg(&node_arg)
        .current_dir(&ws.root);
    let command_line = render(&cmd);
    // In a process group of its own, killed whole at the limit, with both pipes drained
    // meanwhile: a `cargo xtask run` that wrongly accepted the plan starts QEMU, which would
    // outlive a kill of cargo alone and hold the pipes open for good (found in review).
    let finished = xtask::redfish_tools::process::run(&mut cmd, XTASK_TIMEOUT, None, "")
        .expect("running cargo xtask");
    XtaskRun {
        command: command_line,
        success: finished.success(),
        stdout: finished.stdout,
        stderr: finished.stderr,
        out: PathBuf::new(),
    }
}

/// How long `cargo xtask plan` or a refused `cargo xtask run` may take (xtask is built).
const XTASK_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `cargo xtask plan` on `plan` and `node` (see [`xtask_on_node`]).
pub fn xtask_plan(case: &str, plan: &str, node: &str) -> XtaskRun {
    xtask_on_node("plan", case, plan, node)
}

/// Asserts `cargo xtask plan` refuses `plan` on `node` (a profile's TOML, or a repository
/// profile's name): non-zero exit and exactly one `error:` line that contains every string of
/// `mentions`.
pub fn assert_refused_on_node(case: &str, plan: &str, node: &str, mentions: &[&str]) {
    assert_one_error(case, &xtask_plan(case, plan, node), mentions);
}

/// Asserts `cargo xtask run` refuses `plan` on `node` in the same way, before it builds or
/// boots anything (it never prints QEMU's command line).
pub fn assert_run_refused_on_node(case: &str, plan: &str, node: &str, mentions: &[&str]) {
    let run = xtask_on_node("run", case, plan, node);
    assert!(
        !run.stderr.contains("qemu-system-aarch64"),
        "plan {case}: QEMU was started\n{}\n{}",
        run.command,
        run.stderr
    );
    assert_one_error(case, &run, mentions);
}

fn assert_one_error(case: &str, run: &XtaskRun, mentions: &[&str]) {
    let context = format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        run.command, run.stdout, run.stderr
    );
    assert!(!run.success, "plan {case} was accepted\n{context}");
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

/// Asserts `cargo xtask image` refuses `plan`: non-zero exit, no image, and exactly one
/// `error:` line that contains every string of `mentions` (the slice, the field, the problem).
pub fn assert_refused(case: &str, plan: &str, mentions: &[&str]) {
    let run = xtask_image(case, plan);
    assert!(
        !run.out.exists(),
        "plan {case}: an image was written anyway\n{}\n{}",
        run.command,
        run.stderr
    );
    assert_one_error(case, &run, mentions);
}

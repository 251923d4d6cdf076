//! Progress reporting for long steps: an `indicatif` spinner when stderr is a terminal,
//! plain lines otherwise (CI logs, tests).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// One long-running step; shows a spinner until finished or dropped.
pub struct Step {
    bar: Option<ProgressBar>,
    label: String,
    quiet: bool,
}

impl Step {
    /// Starts a step. `quiet` steps print nothing unless on a terminal (library use from tests).
    pub fn start(label: impl Into<String>, quiet: bool) -> Self {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(label.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() && !quiet {
            eprintln!("{label} ...");
        }
        Self { bar, label, quiet }
    }

    /// Ends the step with a one-line result.
    pub fn finish(self, result: &str) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if self.quiet => return,
            None => {}
        }
        eprintln!("{}: {result}", self.label);
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

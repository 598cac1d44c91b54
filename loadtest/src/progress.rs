//! The live progress bar on stderr (indicatif), drawn only when stderr is a terminal: a run
//! whose stderr goes to a file or a pipe gets the final report and nothing else.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the bar redraws itself.
const REDRAWS_PER_SECOND: u8 = 4;

/// A bar of `len` steps with `prefix` before it and a message after it.
pub fn bar(len: u64, prefix: &'static str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr_with_hz(REDRAWS_PER_SECOND)
    } else {
        ProgressDrawTarget::hidden()
    };
    let style = ProgressStyle::with_template("{prefix:>8} [{elapsed_precise}] [{bar:30}] {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(Some(len), target)
        .with_style(style)
        .with_prefix(prefix);
    bar.enable_steady_tick(Duration::from_millis(1000 / u64::from(REDRAWS_PER_SECOND)));
    bar
}

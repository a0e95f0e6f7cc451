//! The progress bar (files and bytes) shown on a terminal while the image is written.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress of one build; a no-op when not on a terminal or with `-q`.
pub struct Progress {
    bar: Option<ProgressBar>,
    files: u64,
}

impl Progress {
    /// A bar for `total_bytes` when `visible`, nothing otherwise.
    pub fn new(visible: bool, total_bytes: u64) -> Progress {
        let bar = visible.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
                )
                .expect("static template"),
            );
            bar
        });
        Progress { bar, files: 0 }
    }

    /// Counts written content bytes.
    pub fn bytes(&mut self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Counts a finished file.
    pub fn file_done(&mut self) {
        self.files += 1;
        if let Some(bar) = &self.bar {
            if self.files % 64 == 0 {
                bar.set_message(format!("{} files", self.files));
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

//! An epoch's progress: a bar redrawn in place on a terminal; elsewhere
//! (output redirected to a file, a batch job) a log line at a steady interval,
//! so a long run still says where it stands.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub(crate) struct Progress {
    view: View,
    /// Iterations in the epoch, and done so far.
    len: usize,
    position: usize,
    /// Where this process started the epoch (a resumed epoch starts part-way).
    first: usize,
    /// 0-based epoch and the number of epochs.
    epoch: (usize, usize),
    batch_size: usize,
    started: Instant,
    /// The run's iteration count after the latest one.
    step: u64,
}

enum View {
    Bar(ProgressBar),
    Lines { every: Duration, last: Instant },
}

impl Progress {
    /// Progress of epoch `epoch.0` of `epoch.1`, `len` iterations from `position`.
    /// Off a terminal, a line every `every` (every iteration when zero).
    pub(crate) fn new(len: usize, position: usize, epoch: (usize, usize), batch_size: usize, every: Duration) -> Self {
        let view = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(len as u64);
            bar.set_position(position as u64);
            let style =
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta}  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(format!("{}/{}", epoch.0 + 1, epoch.1));
            View::Bar(bar)
        } else {
            View::Lines {
                every,
                last: Instant::now(),
            }
        };
        Self {
            view,
            len,
            position,
            first: position,
            epoch,
            batch_size,
            started: Instant::now(),
            step: 0,
        }
    }

    /// Iteration `step` (counted over the run) done; `losses` describes
    /// where the losses stand.
    pub(crate) fn advance(&mut self, step: u64, losses: String) {
        self.position += 1;
        self.step = step;
        match &mut self.view {
            View::Bar(bar) => {
                bar.inc(1);
                bar.set_message(losses);
            }
            View::Lines { every, last } => {
                if last.elapsed() >= *every || self.position == self.len {
                    *last = Instant::now();
                    tracing::info!("{}", self.line(&losses));
                }
            }
        }
    }

    /// `step 38, epoch 2/24 batch 10/28, 812.3 images/s, eta 0:41 (epoch), <losses>`.
    fn line(&self, losses: &str) -> String {
        let seconds = self.started.elapsed().as_secs_f64();
        let done = self.position - self.first;
        let rate = if seconds > 0.0 { done as f64 / seconds } else { 0.0 };
        let eta = if rate > 0.0 {
            let remaining = (self.len - self.position) as f64 / rate;
            format!("{}:{:02}", (remaining / 60.0) as u64, (remaining % 60.0) as u64)
        } else {
            "?".into()
        };
        format!(
            "step {}, epoch {}/{} batch {}/{}, {:.1} images/s, eta {eta} (epoch), {losses}",
            self.step,
            self.epoch.0 + 1,
            self.epoch.1,
            self.position,
            self.len,
            rate * self.batch_size as f64
        )
    }

    pub(crate) fn finish(self) {
        if let View::Bar(bar) = self.view {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_where_the_epoch_stands() {
        let mut progress = Progress::new(28, 9, (1, 24), 64, Duration::from_secs(3600));
        progress.advance(38, "L_AV 1.000".into());
        let line = progress.line("L_AV 1.000");
        assert!(line.starts_with("step 38, epoch 2/24 batch 10/28, "), "{line}");
        assert!(line.contains(" images/s, eta "), "{line}");
        assert!(line.ends_with("(epoch), L_AV 1.000"), "{line}");
    }
}

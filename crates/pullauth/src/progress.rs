//! Pull progress for people: per-layer bars on a terminal, one line per
//! event otherwise, nothing when quiet.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pullauth_docker::PullEvent;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Plain,
    Quiet,
}

impl Mode {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Plain
        }
    }
}

/// Progress display for one image.
pub struct Display {
    mode: Mode,
    image: String,
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    /// Last status printed per layer, so plain output skips repeats.
    last: HashMap<String, String>,
}

impl Display {
    pub fn new(mode: Mode, image: &str) -> Display {
        let multi = MultiProgress::with_draw_target(if mode == Mode::Bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Display {
            mode,
            image: image.to_owned(),
            multi,
            bars: HashMap::new(),
            last: HashMap::new(),
        }
    }

    /// Shows one engine event.
    pub fn event(&mut self, event: PullEvent) {
        match (self.mode, event) {
            (Mode::Quiet, _) => {}
            (
                mode,
                PullEvent::Retrying {
                    attempt,
                    delay,
                    error,
                },
            ) => {
                let line = format!(
                    "{}: attempt {attempt} failed ({error}); retrying in {:.1}s",
                    self.image,
                    delay.as_secs_f64()
                );
                self.line(mode, &line);
            }
            (Mode::Plain, PullEvent::Status { id, status, .. }) => {
                let layer = id.unwrap_or_default();
                if self.last.get(&layer) == Some(&status) {
                    return;
                }
                if layer.is_empty() {
                    eprintln!("{}: {status}", self.image);
                } else {
                    eprintln!("{}: {layer}: {status}", self.image);
                }
                self.last.insert(layer, status);
            }
            (
                Mode::Bars,
                PullEvent::Status {
                    id: Some(id),
                    status,
                    current,
                    total,
                },
            ) => {
                let bar = self.bars.entry(id.clone()).or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new(0));
                    bar.set_style(style());
                    bar.set_prefix(id);
                    bar
                });
                if let (Some(current), Some(total)) = (current, total) {
                    bar.set_length(total);
                    bar.set_position(current);
                }
                bar.set_message(status);
                bar.tick();
            }
            (
                Mode::Bars,
                PullEvent::Status {
                    id: None, status, ..
                },
            ) => {
                let line = format!("{}: {status}", self.image);
                self.line(Mode::Bars, &line);
            }
        }
    }

    fn line(&self, mode: Mode, line: &str) {
        if mode == Mode::Bars {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// Removes the bars once the pull has ended.
    pub fn finish(self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>12} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Seconds with millisecond precision, for reports.
pub fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

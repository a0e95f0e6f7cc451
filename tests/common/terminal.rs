//! A command on a real terminal (`script` gives it a pty) that a test types into and reads:
//! how a person uses crashcart interactively.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::wait_until;

/// A shell command line running on a pty; killed on drop if still running.
pub struct Terminal {
    child: Child,
    input: Option<ChildStdin>,
    seen: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Terminal {
    /// Starts `command` (a shell command line) on a new pty. `CRASHCART_IMAGE` is removed from
    /// its environment, so the image is the one the command line names.
    pub fn start(command: &str) -> Terminal {
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", command, "/dev/null"])
            .env_remove("CRASHCART_IMAGE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs");
        let seen = Arc::new(Mutex::new(String::new()));
        let mut output = child.stdout.take().expect("piped stdout");
        let reader = {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = output.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&text);
                }
            })
        };
        Terminal {
            input: child.stdin.take(),
            child,
            seen,
            reader: Some(reader),
        }
    }

    /// Everything the terminal has shown so far.
    pub fn output(&self) -> String {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits (at most 20 s) until the output shows `text` `times` times in all; panics with what
    /// it showed otherwise.
    pub fn shows_n(&mut self, text: &str, times: usize) {
        let ok = wait_until(Duration::from_secs(20), || {
            self.output().matches(text).count() >= times
        });
        if !ok {
            let _ = self.child.kill();
            panic!("terminal never showed {text:?}:\n{:?}", self.output());
        }
    }

    /// Waits (at most 20 s) until the output shows `text`.
    pub fn shows(&mut self, text: &str) {
        self.shows_n(text, 1)
    }

    /// Types `text`.
    pub fn type_in(&mut self, text: &str) {
        let input = self.input.as_mut().expect("input still open");
        input
            .write_all(text.as_bytes())
            .expect("type into the terminal");
        input.flush().expect("flush the terminal's input");
    }

    /// Closes the input, waits (at most 20 s) for the program to exit, and returns its exit
    /// code and everything the terminal showed.
    pub fn finish(mut self) -> (Option<i32>, String) {
        drop(self.input.take());
        let exited = wait_until(Duration::from_secs(20), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.child.kill();
            panic!("terminal still running after 20 s:\n{:?}", self.output());
        }
        let status = self.child.wait().expect("wait for script");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status.code(), self.output())
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

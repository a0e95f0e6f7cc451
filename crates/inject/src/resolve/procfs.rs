//! The few facts about a process that resolution needs, read from `/proc/PID/stat`.
//!
//! A PID taken from a state file or from the user may name a process that has exited, a
//! zombie, or (after PID reuse) a different process altogether. The start time in field 22
//! lets a caller that knows when the container's init started tell the two apart.

use std::io;
use std::path::{Path, PathBuf};

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// One-letter state (`R`, `S`, `D`, `Z`, `X`, ...).
    pub state: char,
    /// Parent PID (in the namespace of the proc mount read).
    pub ppid: u32,
    /// Start time in clock ticks after boot; unique per process together with the PID.
    pub start_time: u64,
}

impl ProcStat {
    /// True for a process that has exited and is only waiting to be reaped (or is being).
    /// Nothing can enter its namespaces any more.
    pub fn is_exiting(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Reads `<proc_root>/<pid>/stat`.
pub(crate) fn read_stat(proc_root: &Path, pid: u32) -> io::Result<ProcStat> {
    let text = std::fs::read_to_string(stat_path(proc_root, pid))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected format of /proc/{pid}/stat"),
        )
    })
}

/// Path of a process's `stat` file, for error messages.
pub(crate) fn stat_path(proc_root: &Path, pid: u32) -> PathBuf {
    proc_root.join(pid.to_string()).join("stat")
}

/// Parses the text of `/proc/PID/stat`.
///
/// The command name (field 2) is in parentheses and may itself contain spaces and `)`; a
/// container controls its processes' names, so fields are counted after the *last* `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    // Field 22 (starttime) is the 20th after the command name.
    let start_time = fields.nth(17)?.parse().ok()?;
    Some(ProcStat {
        state,
        ppid,
        start_time,
    })
}

/// PIDs of all processes visible under `proc_root`, in no particular order.
pub(crate) fn all_pids(proc_root: &Path) -> io::Result<Vec<u32>> {
    Ok(std::fs::read_dir(proc_root)?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_after_a_hostile_command_name() {
        let line = "4242 (evil) S 1 2 3 (x) Z 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21) R 17 4242 \
                    4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                state: 'R',
                ppid: 17,
                start_time: 987654
            }
        );
    }

    #[test]
    fn zombie_is_exiting() {
        let line = "9 (sleep) Z 1 9 9 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0 0\n";
        let stat = parse_stat(line).unwrap();
        assert!(stat.is_exiting());
        assert_eq!(stat.start_time, 555);
    }

    #[test]
    fn truncated_stat_is_rejected() {
        assert_eq!(parse_stat("9 (sleep) S 1 9"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_own_stat() {
        let stat = read_stat(Path::new("/proc"), std::process::id()).unwrap();
        assert!(!stat.is_exiting());
        assert!(stat.start_time > 0);
    }
}

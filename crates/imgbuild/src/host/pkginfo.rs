//! Which host package owns a bundled program, and its version, for the manifest.
//!
//! Asks dpkg (one `dpkg-query -S` for every program, one `dpkg-query -W` for the versions),
//! else rpm. Debian's merged `/usr` registers files under their pre-merge path (`/bin/bash`
//! while PATH finds `/usr/bin/bash`), so each program is asked about under its path as found,
//! its canonical path, and the other side of the merge of each. Unknown stays unknown: the
//! manifest records what the package manager says, never a guess.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `(package, version)` for each `(found path, canonical path)`, in order.
pub fn lookup(programs: &[(&Path, &Path)]) -> Vec<Option<(String, String)>> {
    let candidates: Vec<Vec<PathBuf>> = programs
        .iter()
        .map(|(found, canonical)| candidate_paths(found, canonical))
        .collect();
    dpkg_lookup(&candidates)
        .or_else(|| rpm_lookup(programs))
        .unwrap_or_else(|| vec![None; programs.len()])
}

/// The paths a package database may know a file under, in order of preference.
fn candidate_paths(found: &Path, canonical: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for path in [found, canonical] {
        let other_side = match path.strip_prefix("/usr") {
            Ok(rest) => Path::new("/").join(rest),
            Err(_) => Path::new("/usr").join(path.strip_prefix("/").unwrap_or(path)),
        };
        for p in [path.to_path_buf(), other_side] {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

fn dpkg_lookup(candidates: &[Vec<PathBuf>]) -> Option<Vec<Option<(String, String)>>> {
    let all: Vec<&PathBuf> = candidates.iter().flatten().collect();
    // Exits 1 when any one path is unknown; the known ones are still printed.
    let out = Command::new("dpkg-query")
        .arg("-S")
        .args(&all)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let owners = parse_dpkg_search(&String::from_utf8_lossy(&out.stdout));
    let packages: Vec<Option<String>> = candidates
        .iter()
        .map(|paths| paths.iter().find_map(|p| owners.get(p).cloned()))
        .collect();
    let mut wanted: Vec<&String> = packages.iter().flatten().collect();
    wanted.sort();
    wanted.dedup();
    let versions = if wanted.is_empty() {
        HashMap::new()
    } else {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f", "${binary:Package}\t${Version}\n"])
            .args(&wanted)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        parse_tab_pairs(&String::from_utf8_lossy(&out.stdout))
    };
    Some(
        packages
            .into_iter()
            .map(|pkg| {
                let pkg = pkg?;
                let version = versions.get(&pkg)?.clone();
                let name = pkg.split(':').next().unwrap_or(&pkg).to_string();
                Some((name, version))
            })
            .collect(),
    )
}

/// Parses `dpkg-query -S` output: `pkg[:arch][, pkg2]: /path` per line; diversion notes
/// are skipped.
fn parse_dpkg_search(stdout: &str) -> HashMap<PathBuf, String> {
    stdout
        .lines()
        .filter(|line| !line.starts_with("diversion by "))
        .filter_map(|line| {
            let (packages, path) = line.split_once(": ")?;
            let first = packages.split(", ").next()?.trim();
            Some((PathBuf::from(path.trim()), first.to_string()))
        })
        .collect()
}

fn parse_tab_pairs(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn rpm_lookup(programs: &[(&Path, &Path)]) -> Option<Vec<Option<(String, String)>>> {
    Some(
        programs
            .iter()
            .map(|(_, canonical)| {
                let out = Command::new("rpm")
                    .args(["-qf", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"])
                    .arg(canonical)
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .output()
                    .ok()?;
                if !out.status.success() {
                    return None;
                }
                parse_tab_pairs(&String::from_utf8_lossy(&out.stdout))
                    .into_iter()
                    .next()
            })
            .collect(),
    )
    .filter(|found: &Vec<_>| found.iter().any(Option::is_some))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usrmerge_candidates_cover_both_sides() {
        let c = candidate_paths(Path::new("/usr/bin/ps"), Path::new("/usr/bin/ps"));
        assert_eq!(c, [PathBuf::from("/usr/bin/ps"), PathBuf::from("/bin/ps")]);
        let c = candidate_paths(Path::new("/sbin/ip"), Path::new("/usr/sbin/ip"));
        assert_eq!(
            c,
            [PathBuf::from("/sbin/ip"), PathBuf::from("/usr/sbin/ip")]
        );
    }

    #[test]
    fn dpkg_search_output() {
        let owners = parse_dpkg_search(
            "diversion by foo from: /bin/x\nbash: /bin/bash\nlibc6:amd64, libc6-dev: /lib/x\n",
        );
        assert_eq!(owners[Path::new("/bin/bash")], "bash");
        assert_eq!(owners[Path::new("/lib/x")], "libc6:amd64");
        assert_eq!(owners.len(), 2);
    }
}

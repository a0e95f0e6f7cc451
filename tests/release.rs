//! The release's inputs, checked without running the release: the workflow file parses (PyYAML,
//! an independent YAML reader), its shell steps pass `bash -n`, it builds on two runner images
//! and compares their digests, pins the nix container by digest, publishes the compressed image
//! with a window crashcart's decoder accepts; and `nix/pin.json` agrees with the verification
//! record in `nix/README.md`.

use std::io::Write;
use std::process::{Command, Stdio};

use crashcart_tests::{have, run, run_ok, skip, workspace_root};
use serde_json::Value;

const WORKFLOW: &str = ".github/workflows/release-image.yml";

/// The workflow as JSON, read by PyYAML; `None` (with a skip) without python3-yaml.
fn workflow() -> Option<Value> {
    if !have("python3") {
        skip("python3 not installed");
        return None;
    }
    let probe = run(Command::new("python3").args(["-c", "import yaml"]));
    if !probe.status.success() {
        skip("python3-yaml not installed (apt-get install python3-yaml)");
        return None;
    }
    // YAML 1.1 reads the key `on` as true: keys are written as strings.
    let json = run_ok(
        Command::new("python3")
            .args([
                "-c",
                "import json, sys, yaml\n\
                 data = yaml.safe_load(open(sys.argv[1]))\n\
                 print(json.dumps(data, default=str))",
            ])
            .arg(workspace_root().join(WORKFLOW)),
    );
    Some(serde_json::from_str(&json).expect("PyYAML's JSON"))
}

/// Every `run:` script of a job, with its step's name.
fn scripts(job: &Value) -> Vec<(String, String)> {
    job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|step| {
            let script = step["run"].as_str()?;
            let name = step["name"].as_str().unwrap_or("unnamed").to_string();
            Some((name, script.to_string()))
        })
        .collect()
}

#[test]
fn the_release_workflow_parses_and_its_scripts_are_valid_shell() {
    let Some(wf) = workflow() else { return };
    let jobs = wf["jobs"].as_object().expect("jobs");
    assert!(jobs.contains_key("build") && jobs.contains_key("publish"));
    assert_eq!(wf["jobs"]["publish"]["needs"], "build");
    let mut count = 0;
    for (job, body) in jobs {
        for (name, script) in scripts(body) {
            let mut bash = Command::new("bash")
                .arg("-n")
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            bash.stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            let out = bash.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{job}/{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            count += 1;
        }
    }
    assert!(count >= 5, "only {count} scripts found");
}

#[test]
fn the_two_builds_run_on_different_runner_images_and_are_compared() {
    let Some(wf) = workflow() else { return };
    let build = &wf["jobs"]["build"];
    let runners: Vec<&str> = build["strategy"]["matrix"]["runner"]
        .as_array()
        .expect("matrix.runner")
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(runners.len(), 2, "{runners:?}");
    assert_ne!(runners[0], runners[1]);
    assert_eq!(build["runs-on"], "${{ matrix.runner }}");
    let compare = scripts(&wf["jobs"]["publish"])
        .into_iter()
        .find(|(name, _)| name.contains("same digest"))
        .expect("the digest comparison step")
        .1;
    for runner in &runners {
        assert!(
            compare.contains(&format!("crashcart-image-{runner}/crashcart.img.sha256")),
            "{runner} not compared:\n{compare}"
        );
    }
}

#[test]
fn the_nix_container_is_pinned_by_digest() {
    let Some(wf) = workflow() else { return };
    let image = wf["env"]["NIX_IMAGE"].as_str().expect("env.NIX_IMAGE");
    let (name, digest) = image.split_once("@sha256:").expect("pinned by digest");
    assert!(
        name == "docker.io/nixos/nix" || name.starts_with("docker.io/nixos/nix:"),
        "{image}"
    );
    assert_eq!(digest.len(), 64, "{image}");
    assert!(
        digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{image}"
    );
    let build = scripts(&wf["jobs"]["build"])
        .into_iter()
        .map(|(_, s)| s)
        .collect::<String>();
    assert!(build.contains("--nix-container \"$NIX_IMAGE\""), "{build}");
}

/// The published `.zst` must unpack with crashcart's own limits (`packed`: window 2^27).
#[test]
fn the_compressed_image_is_published_in_a_form_crashcart_unpacks() {
    let Some(wf) = workflow() else { return };
    let publish = scripts(&wf["jobs"]["publish"])
        .into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join("\n");
    let compress = publish
        .lines()
        .find(|l| l.trim_start().starts_with("zstd ") && l.contains("-o crashcart.img.zst"))
        .expect("a zstd command writing crashcart.img.zst");
    let long = compress
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--long="))
        .map(|n| n.parse::<u32>().unwrap())
        .unwrap_or(0);
    assert!(
        long <= 27,
        "--long={long} exceeds crashcart's window: {compress}"
    );
    assert!(compress.contains("-T1"), "not single-threaded: {compress}");
    assert!(
        !compress.contains("--no-check"),
        "crashcart refuses frames without a checksum: {compress}"
    );
    for published in [
        "crashcart.img.zst",
        "crashcart.img.zst.sha256",
        "crashcart.img ",
    ] {
        assert!(
            publish.contains(published),
            "{published} not published:\n{publish}"
        );
    }
}

/// `nix/pin.json` is well formed and its hash is the narHash recorded in `nix/README.md`
/// (converted by nix itself).
#[test]
fn the_nixpkgs_pin_matches_its_verification_record() {
    let root = workspace_root();
    let pin: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("nix/pin.json")).unwrap()).unwrap();
    let rev = pin["rev"].as_str().unwrap();
    let sha256 = pin["sha256"].as_str().unwrap();
    let branch = pin["branch"].as_str().unwrap();
    assert_eq!(rev.len(), 40);
    assert!(rev.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(sha256.len(), 52, "not nix base32: {sha256}");
    assert!(branch.starts_with("nixos-"), "{branch}");
    let readme = std::fs::read_to_string(root.join("nix/README.md")).unwrap();
    for value in [rev, sha256, branch] {
        assert!(
            readme.contains(value),
            "nix/README.md does not record {value}"
        );
    }
    if !have("nix-hash") {
        skip("nix-hash not installed (apt-get install nix-bin)");
        return;
    }
    let sri = readme
        .lines()
        .find(|l| l.starts_with("| narHash"))
        .and_then(|l| l.split('`').nth(1))
        .expect("the narHash row");
    let base64 = sri.strip_prefix("sha256-").expect("an SRI sha256");
    let base32 = run_ok(Command::new("nix-hash").args(["--type", "sha256", "--to-base32", base64]));
    assert_eq!(base32, sha256, "pin.json and the recorded narHash differ");
}

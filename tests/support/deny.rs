//! `crashcart-test-deny WHAT COMMAND [ARGS...]`: runs COMMAND under a seccomp filter that
//! models a CI runner's restriction, for the tests of `--packages` on such machines.
//!
//! - `mount`: every mount call fails with EPERM (old and new mount API), as under Ubuntu
//!   24.04's AppArmor rule for unprivileged user namespaces: they can be created, not mounted in.
//! - `userns`: `clone`/`unshare` with `CLONE_NEWUSER` fail with EPERM, as inside Docker's
//!   default seccomp profile; `clone3` fails with ENOSYS (a filter cannot read its flags; glibc
//!   then falls back to `clone`), as Docker's profile does too.
//!
//! The filters are inherited by every process COMMAND starts, through `execve` and `setuid`.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

const MOUNT_CALLS: &[libc::c_long] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
];

fn filter(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> seccompiler::BpfProgram {
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        ARCH,
    )
    .and_then(TryInto::try_into)
    .expect("filter compiles")
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let what = args
        .next()
        .expect("usage: crashcart-test-deny mount|userns COMMAND...");
    let command: Vec<_> = args.collect();
    assert!(!command.is_empty(), "no command given");
    let filters = match what.to_str() {
        Some("mount") => vec![filter(
            MOUNT_CALLS.iter().map(|&nr| (nr, Vec::new())).collect(),
            libc::EPERM,
        )],
        Some("userns") => {
            let newuser = libc::CLONE_NEWUSER as u32 as u64;
            let flag_at = |arg| {
                SeccompRule::new(vec![SeccompCondition::new(
                    arg,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(newuser),
                    newuser,
                )
                .expect("condition")])
                .expect("rule")
            };
            vec![
                filter(
                    BTreeMap::from([
                        (libc::SYS_clone, vec![flag_at(0)]),
                        (libc::SYS_unshare, vec![flag_at(0)]),
                    ]),
                    libc::EPERM,
                ),
                filter(
                    BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
                    libc::ENOSYS,
                ),
            ]
        }
        _ => panic!("unknown restriction {what:?}: mount or userns"),
    };
    for program in &filters {
        seccompiler::apply_filter(program).expect("install the seccomp filter");
    }
    let error = std::process::Command::new(&command[0])
        .args(&command[1..])
        .exec();
    panic!("cannot run {:?}: {error}", command[0]);
}

//! Programs built to switch to a user of their own when started as root, a user that the
//! container being debugged does not have.
//!
//! Debian and Ubuntu (and other distributions) build tcpdump with `--with-user=tcpdump`: as
//! root, tcpdump takes `tcpdump` as its `-Z` user unless one is given (`if (!username)
//! username = WITH_USER;` in `tcpdump.c`), and after opening the capture device calls
//! `droproot`, whose `getpwnam`
//! fails in a container with no such line in its `/etc/passwd` (every distroless and
//! `FROM scratch` image): `tcpdump: Couldn't find user 'tcpdump'`, before a single packet.
//! `-Z root` is no way out there either: tcpdump 4.99.3 and older still ask `getpwnam("root")`,
//! and a bare container has no `/etc/passwd` at all.
//!
//! The image's copy is made to behave like a build without `--with-user`: the one instruction
//! that loads the address of the compiled-in user name is replaced by one that loads NULL (same
//! register, flags untouched, padded with `nop`s). tcpdump then keeps the session's privileges
//! (which crashcart's profile bounds) unless `-Z USER` is given, which works as before. The
//! patch is made only when it is unambiguous: x86-64 code, the user name a whole C string in
//! a data section, and exactly one RIP-relative `lea` of it in the executable sections;
//! otherwise the program is left as built and the builder says so.

use std::path::Path;

use goblin::elf::header::EM_X86_64;
use goblin::elf::section_header::{SHF_ALLOC, SHF_EXECINSTR, SHT_NOBITS};
use goblin::elf::Elf;

use super::HostError;

/// Program file names (on the host) and the user name compiled into them.
const DEFAULT_USERS: &[(&str, &str)] = &[("tcpdump", "tcpdump")];

/// Patches the staged copy `staged` of the host program `host_path` when it is one of
/// [`DEFAULT_USERS`]; returns a note for the user when it could not be.
pub fn patch(host_path: &Path, staged: &Path) -> Result<Option<String>, HostError> {
    let Some(name) = host_path.file_name().and_then(|n| n.to_str()) else {
        return Ok(None);
    };
    let Some((_, user)) = DEFAULT_USERS.iter().find(|(program, _)| *program == name) else {
        return Ok(None);
    };
    let mut bytes = std::fs::read(staged).map_err(|source| HostError::Read {
        path: staged.to_path_buf(),
        source,
    })?;
    match default_user_load(&bytes, user) {
        Some(at) => {
            null_load(&mut bytes[at..at + LEA_LEN]);
            std::fs::write(staged, &bytes).map_err(|source| HostError::Write {
                path: staged.to_path_buf(),
                source,
            })?;
            Ok(None)
        }
        None => Ok(Some(format!(
            "{name}: left as built: as root it switches to user {user}, which a container may \
             lack (then run it with -Z and a user the container has)"
        ))),
    }
}

/// Length of `lea disp32(%rip), %r64`: REX.W, 0x8d, ModRM, disp32.
const LEA_LEN: usize = 7;

/// The file offset of the only instruction that loads the address of the C string `user`.
fn default_user_load(bytes: &[u8], user: &str) -> Option<usize> {
    let elf = Elf::parse(bytes).ok()?;
    if elf.header.e_machine != EM_X86_64 || !elf.is_64 {
        return None;
    }
    let whole = [b"\0", user.as_bytes(), b"\0"].concat();
    let mut string_addresses = Vec::new();
    for section in &elf.section_headers {
        let data_section = section.sh_flags & u64::from(SHF_ALLOC) != 0
            && section.sh_flags & u64::from(SHF_EXECINSTR) == 0
            && section.sh_type != SHT_NOBITS;
        if !data_section {
            continue;
        }
        let data = section_bytes(bytes, section)?;
        for at in memchr::memmem::find_iter(data, &whole) {
            string_addresses.push(section.sh_addr + at as u64 + 1);
        }
    }
    if string_addresses.is_empty() {
        return None;
    }
    let mut loads = Vec::new();
    for section in &elf.section_headers {
        if section.sh_flags & u64::from(SHF_EXECINSTR) == 0 || section.sh_type == SHT_NOBITS {
            continue;
        }
        let code = section_bytes(bytes, section)?;
        for at in 0..code.len().saturating_sub(LEA_LEN - 1) {
            let Some(target) = lea_target(&code[at..at + LEA_LEN], section.sh_addr + at as u64)
            else {
                continue;
            };
            if string_addresses.contains(&target) {
                loads.push(section.sh_offset as usize + at);
            }
        }
    }
    match loads.as_slice() {
        [only] => Some(*only),
        _ => None,
    }
}

fn section_bytes<'a>(bytes: &'a [u8], section: &goblin::elf::SectionHeader) -> Option<&'a [u8]> {
    let start = usize::try_from(section.sh_offset).ok()?;
    let end = start.checked_add(usize::try_from(section.sh_size).ok()?)?;
    bytes.get(start..end)
}

/// The address a `lea disp32(%rip), %r64` at `address` loads, if `insn` is one.
fn lea_target(insn: &[u8], address: u64) -> Option<u64> {
    let [rex, 0x8d, modrm, d0, d1, d2, d3] = *insn else {
        return None;
    };
    // REX.W (any R), opcode LEA, ModRM mod=00 rm=101: RIP-relative.
    if rex & 0xf8 != 0x48 || modrm & 0xc7 != 0x05 {
        return None;
    }
    let displacement = i32::from_le_bytes([d0, d1, d2, d3]);
    Some(
        address
            .wrapping_add(LEA_LEN as u64)
            .wrapping_add(displacement as i64 as u64),
    )
}

/// Rewrites the `lea` in `insn` as `mov $0, %r32` (zero-extended to the 64-bit register; no
/// flags changed) padded with `nop`s.
fn null_load(insn: &mut [u8]) {
    let register = ((insn[0] >> 2) & 1) << 3 | (insn[2] >> 3) & 7;
    let mov: Vec<u8> = if register < 8 {
        vec![0xb8 + register, 0, 0, 0, 0]
    } else {
        vec![0x41, 0xb8 + (register - 8), 0, 0, 0, 0]
    };
    insn.fill(0x90);
    insn[..mov.len()].copy_from_slice(&mov);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lea_targets_are_rip_relative() {
        // lea 0x10(%rip), %rax at 0x1000: 0x1000 + 7 + 0x10.
        let insn = [0x48, 0x8d, 0x05, 0x10, 0, 0, 0];
        assert_eq!(lea_target(&insn, 0x1000), Some(0x1017));
        // lea -8(%rip), %r9 (REX.WR).
        let insn = [0x4c, 0x8d, 0x0d, 0xf8, 0xff, 0xff, 0xff];
        assert_eq!(lea_target(&insn, 0x1000), Some(0xfff));
        // lea (%rax), %rax is not RIP-relative; mov is not lea.
        assert_eq!(lea_target(&[0x48, 0x8d, 0x00, 0, 0, 0, 0], 0), None);
        assert_eq!(lea_target(&[0x48, 0x8b, 0x05, 0, 0, 0, 0], 0), None);
    }

    #[test]
    fn the_load_becomes_mov_zero_into_the_same_register() {
        let mut insn = [0x48, 0x8d, 0x15, 1, 2, 3, 4]; // lea ..(%rip), %rdx
        null_load(&mut insn);
        assert_eq!(insn, [0xba, 0, 0, 0, 0, 0x90, 0x90]); // mov $0, %edx; nop; nop
        let mut insn = [0x4c, 0x8d, 0x05, 1, 2, 3, 4]; // lea ..(%rip), %r8
        null_load(&mut insn);
        assert_eq!(insn, [0x41, 0xb8, 0, 0, 0, 0, 0x90]); // mov $0, %r8d; nop
    }

    /// tcpdump is installed by tests/setup.sh.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn host_tcpdump_has_exactly_one_load_of_its_user() {
        let bytes = std::fs::read("/usr/bin/tcpdump")
            .or_else(|_| std::fs::read("/usr/sbin/tcpdump"))
            .expect("tcpdump installed (tests/setup.sh)");
        let at = default_user_load(&bytes, "tcpdump").expect("one lea of \"tcpdump\"");
        assert_eq!(bytes[at + 1], 0x8d);
        // A name no code loads is never patched.
        assert_eq!(default_user_load(&bytes, "crashcart-no-such-user"), None);
    }
}

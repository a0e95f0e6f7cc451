//! `.crashcart/manifest.json`: [`Manifest`] is what the builder writes, [`SessionManifest`]
//! the part crashcart reads, and the checks both sides rely on.
//!
//! crashcart reads manifests of images it did not build, some written by hand or by older
//! builders: it takes only the fields a session uses, ignores the others, and checks what it
//! takes, since the image may come from anywhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the manifest format.
pub const FORMAT: u32 = 1;

/// The content hash of a file in the digest: BLAKE3 over each 4096-byte block that is not all
/// zeros, numbered, then the size (crashcart-imgbuild's `digest` module has the definition).
pub const DIGEST_SCHEME: &str = "blake3-nonzero-4k-v2";

/// The filesystem flavour of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fs {
    /// Journal and block-mapped files.
    Ext3,
    /// ext3 plus extent-mapped files.
    Ext4,
}

/// An equal-length rewrite of a store directory in file contents and symlink targets: the
/// content was built for `from`, and reads `to` in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relocation {
    /// The store directory the content was built for, e.g. `/nix/store`.
    pub from: String,
    /// The path that replaces it, e.g. `/dev/.cart`, which crashcart makes resolve to the
    /// image's store.
    pub to: String,
}

/// Why a relocation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelocationError {
    /// No `=` in the spec.
    #[error("--relocate {0:?}: expected FROM=TO")]
    Syntax(String),
    /// FROM and TO differ in length (offsets inside binaries would move).
    #[error("--relocate {spec:?}: FROM and TO must have the same length ({from} vs {to} bytes)")]
    Length {
        /// The spec as given.
        spec: String,
        /// Length of FROM.
        from: usize,
        /// Length of TO.
        to: usize,
    },
    /// Not absolute paths without a trailing slash.
    #[error("--relocate {0:?}: FROM and TO must be absolute paths without a trailing slash")]
    NotAbsolute(String),
}

impl Relocation {
    /// Checks and builds a relocation: two absolute paths of the same length, so that every
    /// offset in a rewritten file stays where it was.
    pub fn new(from: &str, to: &str) -> Result<Relocation, RelocationError> {
        let spec = format!("{from}={to}");
        let ok = |p: &str| p.len() > 1 && p.starts_with('/') && !p.ends_with('/');
        if !ok(from) || !ok(to) {
            return Err(RelocationError::NotAbsolute(spec));
        }
        if from.len() != to.len() {
            return Err(RelocationError::Length {
                spec,
                from: from.len(),
                to: to.len(),
            });
        }
        Ok(Relocation {
            from: from.to_string(),
            to: to.to_string(),
        })
    }
}

impl std::str::FromStr for Relocation {
    type Err = RelocationError;

    /// Parses `FROM=TO`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (from, to) = spec
            .split_once('=')
            .ok_or_else(|| RelocationError::Syntax(spec.to_string()))?;
        Relocation::new(from, to).map_err(|e| match e {
            RelocationError::Length { from, to, .. } => RelocationError::Length {
                spec: spec.to_string(),
                from,
                to,
            },
            _ => RelocationError::NotAbsolute(spec.to_string()),
        })
    }
}

/// One bundled host program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// Name under `bin/`.
    pub name: String,
    /// Where it came from on the host.
    pub host_path: String,
    /// Owning package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One line of a `--packages` file, as built: what it installs and what it costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// The nixpkgs attribute, as the packages file names it.
    pub name: String,
    /// The store paths of the outputs it installs (as `nix-env -i` would).
    pub outputs: Vec<String>,
    /// Store paths in the closure of those outputs, shared ones included.
    pub closure_paths: u64,
    /// Bytes of that closure (the sum of nix's NAR sizes).
    pub closure_bytes: u64,
}

/// The whole manifest, as the builder writes it; fields in documented order (serialization
/// order is the declaration order, and the bytes are part of a reproducible image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// `crashcart-imgbuild <version>`.
    pub builder: String,
    /// `ext3` or `ext4`.
    pub fs: Fs,
    /// Path crashcart makes resolve to the image's `store/` (one name under `/dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_alias: Option<String>,
    /// The rewrite applied to contents and symlink targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relocation: Option<Relocation>,
    /// Environment for the session.
    pub env: BTreeMap<String, String>,
    /// Container paths the image's programs never read: their names are cut out of every
    /// ELF file, so crashcart need not cover them.
    pub ignores: Vec<String>,
    /// Store paths in the image, as nix names them.
    pub store_paths: Vec<String>,
    /// Host programs bundled.
    pub programs: Vec<Program>,
    /// `--packages`: each package with the size of its closure, in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<Package>,
    /// How many files' contents the relocation rewrote (symlinks not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relocated_files: Option<u64>,
    /// Non-directory entries, the manifest excluded.
    pub files: u64,
    /// Bytes of file contents, the manifest excluded.
    pub bytes: u64,
    /// Content digest of everything but the manifest (`blake3:<hex>`).
    pub digest: String,
    /// How file contents enter the digest ([`DIGEST_SCHEME`]); empty in manifests from
    /// before it was recorded, which hashed every byte.
    #[serde(default)]
    pub digest_scheme: String,
}

impl Manifest {
    /// Pretty JSON with a trailing newline: the manifest file's bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }
}

/// What a session takes from the manifest (everything else is for auditors), checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionManifest {
    /// Name of the `/dev` entry to point at the image's store (e.g. `.cart`), checked by
    /// [`alias_name`].
    pub store_alias: Option<String>,
    /// Variables to set for the command, in manifest order.
    pub env: Vec<(String, String)>,
    /// Container paths the image's programs were built never to read (`ignores`), such as
    /// `/etc/ld.so.preload`.
    pub ignores: Vec<String>,
}

/// The fields a session reads, as they stand in the file: unknown fields are ignored, a
/// missing or `null` field is empty.
#[derive(Deserialize)]
struct SessionFields {
    #[serde(default)]
    store_alias: Option<String>,
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    ignores: Option<Vec<String>>,
}

impl SessionManifest {
    /// Parses manifest JSON and checks the alias and the environment.
    pub fn parse(text: &str) -> Result<SessionManifest, String> {
        let fields: SessionFields = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let store_alias = fields.store_alias.as_deref().map(alias_name).transpose()?;
        let mut env = Vec::new();
        for (k, v) in fields.env.unwrap_or_default() {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(format!("env has an invalid variable {k:?}"));
            }
            env.push((k, v));
        }
        Ok(SessionManifest {
            store_alias,
            env,
            ignores: fields.ignores.unwrap_or_default(),
        })
    }
}

/// `/dev/NAME` → `NAME`, refusing anything but one plain component other than the image's
/// own mount point.
pub fn alias_name(alias: &str) -> Result<String, String> {
    let name = alias
        .strip_prefix("/dev/")
        .ok_or(format!("store_alias {alias:?} is not under /dev"))?;
    if name.is_empty()
        || name == "."
        || name == ".."
        || name == crate::MOUNT_NAME
        || name.contains('/')
        || name.contains('\0')
    {
        return Err(format!(
            "store_alias {alias:?} is not one plain name under /dev"
        ));
    }
    Ok(name.to_string())
}

/// Whether `name` can be exported by the rc file's shell (the builder's check: the rc file
/// exports the manifest's `env`).
pub fn exportable_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_fields() {
        let m = SessionManifest::parse(
            r#"{"format":1,"store_alias":"/dev/.cart","env":{"A":"1","TERMINFO_DIRS":"/x"},"files":3}"#,
        )
        .unwrap();
        assert_eq!(m.store_alias.as_deref(), Some(".cart"));
        assert_eq!(m.env.len(), 2);
        let m = SessionManifest::parse(r#"{"ignores":["/etc/ld.so.preload"]}"#).unwrap();
        assert_eq!(m.ignores, ["/etc/ld.so.preload"]);
        assert!(SessionManifest::parse(r#"{"ignores":"x"}"#).is_err());
        assert_eq!(
            SessionManifest::parse("{}").unwrap(),
            SessionManifest::default()
        );
        let nulls = r#"{"store_alias":null,"env":null,"ignores":null,"future":{"x":[1]}}"#;
        assert_eq!(
            SessionManifest::parse(nulls).unwrap(),
            SessionManifest::default()
        );
    }

    #[test]
    fn manifests_without_a_digest_scheme_still_parse() {
        let old = r#"{"format":1,"builder":"crashcart-imgbuild 0.1.0","fs":"ext3","env":{},
            "ignores":[],"store_paths":[],"programs":[],"files":1,"bytes":2,
            "digest":"blake3:00"}"#;
        let m: Manifest = serde_json::from_str(old).unwrap();
        assert_eq!(m.digest_scheme, "");
        let new = String::from_utf8(
            Manifest {
                digest_scheme: DIGEST_SCHEME.into(),
                ..m
            }
            .to_json(),
        )
        .unwrap();
        assert!(
            new.contains(r#""digest_scheme": "blake3-nonzero-4k-v2""#),
            "{new}"
        );
        assert_eq!(
            SessionManifest::parse(&new).unwrap(),
            SessionManifest::default()
        );
    }

    #[test]
    fn hostile_aliases_are_refused() {
        for a in [
            "/dev/../etc",
            "/dev/a/b",
            "/tmp/x",
            "/dev/",
            "/dev/crashcart",
            "/dev/..",
        ] {
            let text = format!(r#"{{"store_alias":"{a}"}}"#);
            assert!(SessionManifest::parse(&text).is_err(), "{a}");
        }
        assert!(SessionManifest::parse(r#"{"store_alias":1}"#).is_err());
        assert!(SessionManifest::parse(r#"{"env":{"A=B":"x"}}"#).is_err());
        assert!(SessionManifest::parse(r#"{"env":{"":"x"}}"#).is_err());
        assert!(SessionManifest::parse("[1]").is_err());
    }

    #[test]
    fn env_names_are_checked() {
        assert!(exportable_env_name("TERMINFO_DIRS"));
        assert!(!exportable_env_name("1X"));
        assert!(!exportable_env_name("A-B"));
    }

    #[test]
    fn relocations_are_parsed_and_checked() {
        assert_eq!(
            "/nix/store=/dev/.cart".parse::<Relocation>().unwrap(),
            Relocation::new("/nix/store", "/dev/.cart").unwrap()
        );
        assert!(matches!(
            "/nix/store=/dev/x".parse::<Relocation>(),
            Err(RelocationError::Length {
                from: 10,
                to: 6,
                ..
            })
        ));
        assert!(matches!(
            "nix".parse::<Relocation>(),
            Err(RelocationError::Syntax(_))
        ));
        assert!(matches!(
            "nix/store=dev/.cart".parse::<Relocation>(),
            Err(RelocationError::NotAbsolute(_))
        ));
    }

    #[test]
    fn manifest_fields_in_documented_order_and_read_back() {
        let m = Manifest {
            format: FORMAT,
            builder: "crashcart-imgbuild 0.1.0".into(),
            fs: Fs::Ext3,
            store_alias: Some("/dev/.cart".into()),
            relocation: Some(Relocation {
                from: "/nix/store".into(),
                to: "/dev/.cart".into(),
            }),
            env: BTreeMap::from([("A".into(), "1".into())]),
            ignores: vec!["/etc/ld.so.preload".into()],
            store_paths: vec![],
            programs: vec![],
            packages: vec![Package {
                name: "strace".into(),
                outputs: vec!["/nix/store/x-strace-6.1".into()],
                closure_paths: 3,
                closure_bytes: 4096,
            }],
            relocated_files: Some(7),
            files: 1,
            bytes: 2,
            digest: "blake3:00".into(),
            digest_scheme: DIGEST_SCHEME.into(),
        };
        let json = String::from_utf8(m.to_json()).unwrap();
        let keys: Vec<usize> = [
            "\"format\"",
            "\"builder\"",
            "\"fs\": \"ext3\"",
            "\"store_alias\"",
            "\"relocation\"",
            "\"env\"",
            "\"ignores\"",
            "\"store_paths\"",
            "\"programs\"",
            "\"packages\"",
            "\"relocated_files\"",
            "\"files\"",
            "\"bytes\"",
            "\"digest\"",
            "\"digest_scheme\"",
        ]
        .iter()
        .map(|k| {
            json.find(k)
                .unwrap_or_else(|| panic!("{k} missing in {json}"))
        })
        .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{json}");
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        let session = SessionManifest::parse(&json).unwrap();
        assert_eq!(session.store_alias.as_deref(), Some(".cart"));
        assert_eq!(session.env, [("A".to_string(), "1".to_string())]);
        assert_eq!(session.ignores, m.ignores);
    }
}

//! What nix tells us about a build, parsed: the plan (`nix/default.nix`'s `plan`: per package
//! the store paths of the outputs it installs) and the store's registration of the closure
//! (`nix-store --dump-db`: NAR size and references of each path), from which the cost of each
//! line of the packages file is worked out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crashcart_layout::Package;

use super::NixError;

/// One package of the plan, in packages-file order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct PlannedPackage {
    /// The attribute name.
    pub name: String,
    /// The store paths of the outputs it installs.
    pub outputs: Vec<PathBuf>,
}

/// Parses the JSON `nix-instantiate --eval --strict --json -A plan` prints.
pub fn parse_plan(json: &str) -> Result<Vec<PlannedPackage>, NixError> {
    serde_json::from_str(json.trim()).map_err(|e| NixError::BadNixOutput {
        what: "the package plan",
        detail: e.to_string(),
    })
}

/// A store path's registration: NAR size and references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathInfo {
    /// Bytes of its NAR serialisation (what nix reports as its size).
    pub nar_size: u64,
    /// The store paths it references (itself included when it does).
    pub references: Vec<PathBuf>,
}

/// Parses `nix-store --dump-db PATHS...`: per path, lines `path`, `hash`, `narSize`,
/// `deriver` (maybe empty), `count`, then `count` references.
pub fn parse_dump_db(text: &str) -> Result<BTreeMap<PathBuf, PathInfo>, NixError> {
    let bad = |detail: String| NixError::BadNixOutput {
        what: "nix-store --dump-db",
        detail,
    };
    let mut lines = text.lines();
    let mut infos = BTreeMap::new();
    while let Some(path) = lines.next() {
        if path.is_empty() {
            continue;
        }
        let mut next = |field: &str| {
            lines
                .next()
                .ok_or_else(|| bad(format!("{path}: no {field} line")))
        };
        let _hash = next("hash")?;
        let nar_size = next("size")?
            .parse()
            .map_err(|_| bad(format!("{path}: size is not a number")))?;
        let _deriver = next("deriver")?;
        let count: usize = next("reference count")?
            .parse()
            .map_err(|_| bad(format!("{path}: reference count is not a number")))?;
        let references = (0..count)
            .map(|_| next("reference").map(PathBuf::from))
            .collect::<Result<_, _>>()?;
        infos.insert(
            PathBuf::from(path),
            PathInfo {
                nar_size,
                references,
            },
        );
    }
    Ok(infos)
}

/// Each package with the number of store paths and bytes of its own closure (paths other
/// packages share are counted in each).
pub fn costs(packages: &[PlannedPackage], infos: &BTreeMap<PathBuf, PathInfo>) -> Vec<Package> {
    packages
        .iter()
        .map(|package| {
            let mut seen: BTreeSet<&PathBuf> = BTreeSet::new();
            let mut todo: Vec<&PathBuf> = package.outputs.iter().collect();
            while let Some(path) = todo.pop() {
                if !seen.insert(path) {
                    continue;
                }
                if let Some(info) = infos.get(path) {
                    todo.extend(info.references.iter().filter(|r| !seen.contains(r)));
                }
            }
            Package {
                name: package.name.clone(),
                outputs: package
                    .outputs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
                closure_paths: seen.len() as u64,
                closure_bytes: seen
                    .iter()
                    .filter_map(|p| infos.get(*p))
                    .map(|i| i.nar_size)
                    .sum(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_read_in_file_order() {
        let plan = parse_plan(
            r#"[{"name":"cart-check","outputs":["/nix/store/a-cart-check"]},
                {"name":"bind.dnsutils","outputs":["/nix/store/b-bind-dnsutils"]}]"#,
        )
        .unwrap();
        assert_eq!(plan[0].name, "cart-check");
        assert_eq!(
            plan[1].outputs,
            [PathBuf::from("/nix/store/b-bind-dnsutils")]
        );
        assert!(parse_plan("not json").is_err());
    }

    const DB: &str = "/nix/store/a-app\n\
        0000\n\
        100\n\
        /nix/store/a-app.drv\n\
        2\n\
        /nix/store/a-app\n\
        /nix/store/c-libc\n\
        /nix/store/b-tool\n\
        0000\n\
        20\n\
        \n\
        1\n\
        /nix/store/c-libc\n\
        /nix/store/c-libc\n\
        0000\n\
        3\n\
        \n\
        0\n";

    #[test]
    fn dump_db_and_closure_costs() {
        let infos = parse_dump_db(DB).unwrap();
        assert_eq!(infos.len(), 3);
        assert_eq!(infos[&PathBuf::from("/nix/store/a-app")].nar_size, 100);
        let plan = vec![
            PlannedPackage {
                name: "app".into(),
                outputs: vec!["/nix/store/a-app".into()],
            },
            PlannedPackage {
                name: "tool".into(),
                outputs: vec!["/nix/store/b-tool".into()],
            },
        ];
        let costs = costs(&plan, &infos);
        assert_eq!((costs[0].closure_paths, costs[0].closure_bytes), (2, 103));
        assert_eq!((costs[1].closure_paths, costs[1].closure_bytes), (2, 23));
    }

    #[test]
    fn truncated_dump_db_is_an_error() {
        assert!(parse_dump_db("/nix/store/a-app\n0000\n").is_err());
        assert!(parse_dump_db("/nix/store/a-app\n0000\nbig\n\n0\n").is_err());
    }
}

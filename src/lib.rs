//! Rust engine behind the `metrics` Django app: families, label sets, stores and encoders.
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cell;
pub mod desc;
pub mod encode;
pub mod error;
pub mod exemplar;
pub mod family;
pub mod float;
pub mod names;
pub mod native;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod sync;

#[cfg(feature = "python")]
pub mod py;

/// The layers, bottom first: a module may use only the modules of the layers below its own, so
/// the crate has no dependency cycle. Tests (`#[cfg(test)]` code) may reach further up to build
/// their fixtures.
#[cfg(test)]
const LAYERS: &[&[&str]] = &[
    &["error", "float", "names", "sync"],
    &["native"],
    &["desc", "exemplar"],
    &["cell", "snapshot"],
    &["family"],
    &["store"],
    &["encode", "registry"],
    &["py"],
];

/// The layers of the bindings (`src/py/`), bottom first, by the same rule: a file may use
/// (`super::...`) only the files of the layers below its own.
#[cfg(test)]
const PY_LAYERS: &[&[&str]] = &[
    &["context", "registry"],
    &["metric"],
    &["request"],
    &["fields"],
    &["compat"],
    &["middleware"],
    &["mod"],
];

#[cfg(test)]
mod layering {
    use super::{LAYERS, PY_LAYERS};
    use std::path::Path;

    fn layer_of(module: &str) -> usize {
        LAYERS.iter().position(|l| l.contains(&module)).unwrap_or_else(|| panic!("{module} is in no layer"))
    }

    /// The top-level modules `source` names as `crate::<module>`, before its tests.
    fn used(source: &str) -> Vec<String> {
        let code = source.split("#[cfg(test)]").next().unwrap_or("");
        code.match_indices("crate::")
            .map(|(i, _)| {
                code[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
            })
            .collect()
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_module_uses_only_lower_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let mut wrong = Vec::new();
        for path in all {
            let rel = path.strip_prefix(&src).unwrap();
            let module = rel.iter().next().unwrap().to_str().unwrap().trim_end_matches(".rs");
            if module == "lib" {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for dep in used(&source) {
                if dep != module && layer_of(&dep) >= layer_of(module) {
                    wrong.push(format!("{} uses crate::{dep}", rel.display()));
                }
            }
        }
        assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
    }

    #[test]
    fn every_binding_file_uses_only_lower_layers() {
        let layer = |file: &str| {
            PY_LAYERS
                .iter()
                .position(|l| l.contains(&file))
                .unwrap_or_else(|| panic!("py/{file} is in no layer"))
        };
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join("py");
        let mut wrong = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let source = std::fs::read_to_string(&path).unwrap();
            let code = source.split("#[cfg(test)]").next().unwrap_or("");
            for (i, _) in code.match_indices("super::") {
                let dep: String =
                    code[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if dep != file && layer(&dep) >= layer(&file) {
                    wrong.push(format!("py/{file}.rs uses super::{dep}"));
                }
            }
        }
        assert!(wrong.is_empty(), "layering of the bindings broken:\n{}", wrong.join("\n"));
    }
}

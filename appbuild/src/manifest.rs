//! The path dependencies a crate's `Cargo.toml` declares, found by parsing it (`toml_edit`),
//! never by scanning text: this is a security check, and `path='..'`, `path="..."` without
//! spaces, a multi-line table or a `[target.'cfg(..)'.dependencies]` table must all be seen.
//!
//! A dependency's `path` may stand in `[dependencies]`, `[dev-dependencies]`,
//! `[build-dependencies]` (and their `_` spellings), the same under `[target.<cfg>]`,
//! `[workspace.dependencies]`, `[patch.<source>]` and `[replace]`.

use toml_edit::{DocumentMut, Item, TableLike, Value};

/// The tables whose entries are dependencies.
const DEPENDENCY_TABLES: [&str; 5] = [
    "dependencies",
    "dev-dependencies",
    "dev_dependencies",
    "build-dependencies",
    "build_dependencies",
];

/// Why a manifest could not be read as one.
#[derive(Debug, thiserror::Error)]
#[error("Cargo.toml does not parse: {0}")]
pub struct ManifestError(#[from] toml_edit::TomlError);

/// A parsed manifest.
#[derive(Debug)]
pub struct Manifest {
    doc: DocumentMut,
}

impl Manifest {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Ok(Manifest {
            doc: text.parse::<DocumentMut>()?,
        })
    }

    /// Whether it has a `[workspace]` table (a workspace root).
    pub fn has_workspace(&self) -> bool {
        self.doc.get("workspace").is_some_and(Item::is_table_like)
    }

    /// `[package] name`, when it has one.
    pub fn package_name(&self) -> Option<&str> {
        self.doc.get("package")?.get("name")?.as_str()
    }

    /// Adds an empty `[workspace]` table when there is none (the staged crate is built as a
    /// workspace of its own).
    pub fn ensure_workspace(&mut self) {
        if !self.has_workspace() {
            self.doc["workspace"] = toml_edit::table();
        }
    }

    /// The `path` of every dependency entry, as written.
    pub fn dependency_paths(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_path(|p| {
            out.push(p.to_string());
            None
        });
        out
    }

    /// Replaces each dependency `path` for which `rewrite` answers a new value.
    pub fn rewrite_paths(&mut self, mut rewrite: impl FnMut(&str) -> Option<String>) {
        self.for_each_path(&mut rewrite);
    }

    /// The manifest as text (formatting and comments kept).
    pub fn to_text(&self) -> String {
        self.doc.to_string()
    }

    /// The dotted keys of dependency entries that name a git repository or a registry
    /// other than crates.io (`dependencies.x.git`, `patch.crates-io.y.registry-index`).
    pub fn foreign_sources(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_entry(|table, name, entry| {
            for key in ["git", "registry", "registry-index"] {
                if entry.contains_key(key) {
                    out.push(format!("{table}.{name}.{key}"));
                }
            }
        });
        out
    }

    fn for_each_path(&mut self, mut f: impl FnMut(&str) -> Option<String>) {
        self.for_each_entry(|_, _, entry| {
            let Some(path) = entry.get_mut("path") else {
                return;
            };
            let Some(path) = path.as_value_mut() else {
                return;
            };
            // A `path` that is not a string is cargo's error to report; nothing to check.
            let Some(text) = path.as_str() else { return };
            if let Some(new) = f(text) {
                let decor = path.decor().clone();
                *path = Value::from(new);
                *path.decor_mut() = decor;
            }
        });
    }

    /// Calls `f(table, name, entry)` for every dependency entry written as a table.
    fn for_each_entry(&mut self, mut f: impl FnMut(&str, &str, &mut dyn TableLike)) {
        let root = self.doc.as_table_mut();
        let mut tables: Vec<(String, &mut Item)> = Vec::new();
        for (key, item) in root.iter_mut() {
            match key.get() {
                k if DEPENDENCY_TABLES.contains(&k) => tables.push((k.to_string(), item)),
                "target" => {
                    if let Some(targets) = item.as_table_like_mut() {
                        for (cfg_name, cfg) in targets.iter_mut() {
                            let cfg_name = cfg_name.get().to_string();
                            if let Some(cfg) = cfg.as_table_like_mut() {
                                for (k, deps) in cfg.iter_mut() {
                                    if DEPENDENCY_TABLES.contains(&k.get()) {
                                        tables
                                            .push((format!("target.{cfg_name}.{}", k.get()), deps));
                                    }
                                }
                            }
                        }
                    }
                }
                "workspace" => {
                    if let Some(ws) = item.as_table_like_mut()
                        && let Some(deps) = ws.get_mut("dependencies")
                    {
                        tables.push(("workspace.dependencies".into(), deps));
                    }
                }
                "patch" => {
                    if let Some(sources) = item.as_table_like_mut() {
                        for (name, source) in sources.iter_mut() {
                            tables.push((format!("patch.{}", name.get()), source));
                        }
                    }
                }
                "replace" => tables.push(("replace".into(), item)),
                _ => {}
            }
        }
        for (table_name, table) in tables {
            let Some(table) = table.as_table_like_mut() else {
                continue;
            };
            for (name, entry) in table.iter_mut() {
                let entry: &mut dyn TableLike = match entry {
                    Item::Table(t) => t,
                    Item::Value(Value::InlineTable(t)) => t,
                    _ => continue,
                };
                f(&table_name, name.get(), entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_path_dependency_is_found() {
        let text = r#"
[package]
name = "x"
[lib]
path = "src/lib.rs"
[dependencies]
a = { path = "../a" }
b = {path='../b', version = "1"}
c = "1"
[dependencies.d]
path = "../d"
[dev_dependencies]
e = { path="../e" }
[build-dependencies]
f = { path = """../f""" }
[target.'cfg(unix)'.dependencies]
g = { path = "../g" }
[workspace.dependencies]
h = { path = "../h" }
[patch.crates-io]
i = { path = "../i" }
[replace]
"j:1.0.0" = { path = "../j" }
"#;
        let mut m = Manifest::parse(text).unwrap();
        let mut found = m.dependency_paths();
        found.sort();
        assert_eq!(
            found,
            [
                "../a", "../b", "../d", "../e", "../f", "../g", "../h", "../i", "../j"
            ]
        );
        assert!(m.has_workspace());
    }

    #[test]
    fn paths_are_rewritten_in_place_and_a_workspace_is_added() {
        let text = "[package]\nname = \"x\"\n# keep me\n[dependencies]\na = { path = \"../a\" } # and me\nb = { path = \"../b\" }\n";
        let mut m = Manifest::parse(text).unwrap();
        assert!(!m.has_workspace());
        m.rewrite_paths(|p| (p == "../a").then(|| "/src/a".to_string()));
        m.ensure_workspace();
        let out = m.to_text();
        assert!(out.contains(r#"a = { path = "/src/a" } # and me"#), "{out}");
        assert!(out.contains(r#"b = { path = "../b" }"#), "{out}");
        assert!(out.contains("# keep me"), "{out}");
        assert!(Manifest::parse(&out).unwrap().has_workspace(), "{out}");
    }

    #[test]
    fn a_manifest_that_does_not_parse_is_refused() {
        assert!(Manifest::parse("[dependencies\na = 1").is_err());
    }
}

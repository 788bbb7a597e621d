//! `weft new NAME --kind http|mapreduce|locked`: a plugin crate written from templates
//! embedded in the binary: the SDK dependency, a README, native tests that pass with
//! `cargo test`, and a release build that gives a component for `wasm32-wasip2`.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::id::FunctionName;

/// What the new plugin is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Kind {
    /// An HTTP handler (`wasi:http/incoming-handler`) with key-value state.
    Http,
    /// A map/reduce task with a combiner.
    Mapreduce,
    /// A lock-protected HTTP handler (deploy with `--lock path:1`).
    Locked,
}

/// The toolchain this `weft` was built with, which the plugin pins too.
const TOOLCHAIN: &str = include_str!("../../../rust-toolchain.toml");

/// The SDK of the checkout this `weft` was built from, if it is still there.
const BUILT_FROM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

/// The files of a plugin of `kind`: path in the crate, template.
fn files(kind: Kind) -> [(&'static str, &'static str); 5] {
    let (lib, readme) = match kind {
        Kind::Http => (
            include_str!("templates/http/lib.rs.txt"),
            include_str!("templates/http/README.md"),
        ),
        Kind::Mapreduce => (
            include_str!("templates/mapreduce/lib.rs.txt"),
            include_str!("templates/mapreduce/README.md"),
        ),
        Kind::Locked => (
            include_str!("templates/locked/lib.rs.txt"),
            include_str!("templates/locked/README.md"),
        ),
    };
    [
        ("Cargo.toml", include_str!("templates/Cargo.toml.tmpl")),
        (
            "rust-toolchain.toml",
            include_str!("templates/rust-toolchain.toml.tmpl"),
        ),
        (".gitignore", include_str!("templates/gitignore.tmpl")),
        ("README.md", readme),
        ("src/lib.rs", lib),
    ]
}

/// Writes the plugin `name` of `kind` into `dir` (default `./NAME`), depending on the SDK in
/// `sdk` (default: the checkout this `weft` was built from).
pub(super) fn run(
    name: &str,
    kind: Kind,
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> anyhow::Result<()> {
    name.parse::<FunctionName>()
        .with_context(|| format!("`{name}` cannot name a plugin"))?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        anyhow::bail!(
            "{} exists and is not empty: choose another name or --dir",
            dir.display()
        );
    }
    let sdk = match sdk {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(BUILT_FROM),
    };
    let sdk = sdk
        .canonicalize()
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
        .with_context(|| {
            format!(
                "no Weft SDK at {}: give the `sdk` directory of a Weft checkout with --sdk PATH",
                sdk.display()
            )
        })?;
    let toolchain = TOOLCHAIN
        .lines()
        .find_map(|l| l.strip_prefix("channel = "))
        .map(|c| c.trim_matches('"'))
        .expect("rust-toolchain.toml names its channel");
    let crate_name = name.replace('-', "_");
    let (feature, description) = match kind {
        Kind::Http => ("http", "A Weft HTTP handler."),
        Kind::Mapreduce => ("mapreduce", "A Weft map/reduce task."),
        Kind::Locked => ("http", "A Weft lock-protected HTTP handler."),
    };
    let sdk_dep = format!("path = {}", toml::Value::from(sdk.display().to_string()));
    for (path, template) in files(kind) {
        let text = template
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{description}}", description)
            .replace("{{feature}}", feature)
            .replace("{{sdk}}", &sdk_dep)
            .replace("{{toolchain}}", toolchain)
            .replace("{{rust_version}}", env!("CARGO_PKG_RUST_VERSION"));
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    println!("created {} `{name}` in {}", kind_name(kind), dir.display());
    println!("  cd {}", dir.display());
    println!("  cargo test");
    println!("  cargo build --release --target wasm32-wasip2");
    let lock = if kind == Kind::Locked {
        " --lock path:1"
    } else {
        ""
    };
    println!("  weft deploy target/wasm32-wasip2/release/{crate_name}.wasm --name {name}{lock}");
    Ok(())
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Http => "an HTTP handler",
        Kind::Mapreduce => "a map/reduce task",
        Kind::Locked => "a lock-protected handler",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        let dir = tempfile::tempdir().unwrap();
        for (i, kind) in [Kind::Http, Kind::Mapreduce, Kind::Locked]
            .into_iter()
            .enumerate()
        {
            let to = dir.path().join(format!("p{i}"));
            run("my-plugin", kind, Some(&to), None).unwrap();
            for (path, _) in files(kind) {
                let text = std::fs::read_to_string(to.join(path)).unwrap();
                assert!(!text.contains("{{"), "{path} of {kind:?}: {text}");
            }
            let manifest = std::fs::read_to_string(to.join("Cargo.toml")).unwrap();
            let parsed: toml::Table = toml::from_str(&manifest).unwrap();
            assert_eq!(parsed["package"]["name"].as_str(), Some("my-plugin"));
            assert!(parsed.contains_key("workspace"), "a workspace of its own");
            // Not twice into the same place, and not under a bad name.
            assert!(run("my-plugin", kind, Some(&to), None).is_err());
        }
        let e = run("My Plugin", Kind::Http, Some(&dir.path().join("x")), None).unwrap_err();
        assert!(format!("{e:#}").contains("cannot name a plugin"), "{e:#}");
        let e = run(
            "p",
            Kind::Http,
            Some(&dir.path().join("y")),
            Some(dir.path()),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("--sdk"), "{e:#}");
    }
}

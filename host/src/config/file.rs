//! The node's configuration file (`weft node --config weft.toml`): TOML with the keys of
//! [`NodeConfig`], read strictly, so that a misspelt key or a bad value stops the node with an
//! error naming the file, the line and the key instead of being ignored.

use std::path::{Path, PathBuf};

use super::NodeConfig;

/// A documented configuration file holding every key at its default (`weft config example`).
pub const EXAMPLE: &str = include_str!("example.toml");

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read the configuration file {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, holds an unknown key, or a value of the wrong kind.
    #[error("{}, line {line}: {}{message}", file.display(), key_prefix(key))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The line of the bad key or value, counted from 1.
        line: usize,
        /// The key's path, such as `cluster.listen` (empty when the file is not TOML).
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("`{key}`: ")
    }
}

impl NodeConfig {
    /// Reads a configuration file; keys it leaves out keep the defaults of its `profile`.
    pub fn from_file(file: &Path) -> Result<NodeConfig, ConfigFileError> {
        NodeConfig::from_file_as(file, None)
    }

    /// [`NodeConfig::from_file`], with `profile` (when given) in place of the file's own.
    pub fn from_file_as(
        file: &Path,
        profile: Option<super::Profile>,
    ) -> Result<NodeConfig, ConfigFileError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigFileError::Read {
            file: file.to_owned(),
            source,
        })?;
        NodeConfig::from_toml_as(&text, file, profile)
    }

    /// Reads a configuration from TOML text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &Path) -> Result<NodeConfig, ConfigFileError> {
        NodeConfig::from_toml_as(text, file, None)
    }

    fn from_toml_as(
        text: &str,
        file: &Path,
        profile: Option<super::Profile>,
    ) -> Result<NodeConfig, ConfigFileError> {
        let invalid = |e: &toml::de::Error, key: String| ConfigFileError::Invalid {
            file: file.to_owned(),
            line: e.span().map_or(1, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            }),
            key,
            message: e.message().trim_end().to_owned(),
        };
        let de = toml::Deserializer::parse(text).map_err(|e| invalid(&e, String::new()))?;
        let config: NodeConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = match e.path().to_string() {
                root if root == "." => String::new(),
                key => key,
            };
            invalid(e.inner(), key)
        })?;
        for ns in config.replication.namespaces.keys() {
            if let Err(e) = ns.parse::<crate::replication::Namespace>() {
                return Err(ConfigFileError::Invalid {
                    file: file.to_owned(),
                    line: text
                        .lines()
                        .position(|l| l.contains(ns.as_str()))
                        .map_or(1, |i| i + 1),
                    key: format!("replication.namespaces.{ns}"),
                    message: e.to_string(),
                });
            }
        }
        let given: toml::Table = toml::from_str(text).unwrap_or_default();
        let profile = profile.unwrap_or(config.profile);
        let mut config = config
            .with_profile_defaults(&given, profile)
            .map_err(|message| ConfigFileError::Invalid {
                file: file.to_owned(),
                line: 1,
                key: "profile".into(),
                message,
            })?;
        config.data_dir = from_home(&config.data_dir);
        config.cluster.dir = config.cluster.dir.as_deref().map(from_home);
        Ok(config)
    }
}

/// `~/x` as `$HOME/x`, as a shell would read it.
fn from_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaf keys of a TOML table, as dotted paths.
    fn keys(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    keys(v, &path, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }

    #[test]
    fn the_example_holds_every_key_at_its_default() {
        let from_example = NodeConfig::from_toml(EXAMPLE, Path::new("example.toml")).unwrap();
        let written = |c: &NodeConfig| toml::Value::try_from(c).unwrap();
        assert_eq!(written(&from_example), written(&NodeConfig::default()));
        // Every key a default configuration writes is written out in the example, not just
        // defaulted: an added setting must be documented there.
        let mut all = vec![];
        keys(&written(&NodeConfig::default()), "", &mut all);
        let example: toml::Value = toml::from_str(EXAMPLE).unwrap();
        let mut shown = vec![];
        keys(&example, "", &mut shown);
        let missing: Vec<_> = all.iter().filter(|k| !shown.contains(k)).collect();
        assert!(
            missing.is_empty(),
            "keys missing from example.toml: {missing:?}"
        );
        // The optional keys are there too, commented out.
        for key in [
            "# worker_threads =",
            "# dir =",
            "# name =",
            "# advertise =",
            "# require_tag =",
            "# tasks_per_node =",
        ] {
            assert!(EXAMPLE.contains(key), "{key}");
        }
    }

    #[test]
    fn keys_left_out_keep_their_defaults_and_durations_take_units() {
        let c = NodeConfig::from_toml(
            "http = \"0.0.0.0:8080\"\n[cluster]\ntags = [\"edge\"]\n[cluster.locks]\ndefault_lease = \"30s\"\nlock_delay = 1500\n[replication.namespaces]\nsessions = \"5/3/3\"\n",
            Path::new("w.toml"),
        )
        .unwrap();
        assert_eq!(c.http.to_string(), "0.0.0.0:8080");
        assert_eq!(c.cluster.tags, ["edge"]);
        assert_eq!(
            c.cluster.locks.default_lease,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(
            c.cluster.locks.lock_delay,
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(c.replication.quorum("sessions").to_string(), "5/3/3");
        assert_eq!(c.cluster.listen, NodeConfig::default().cluster.listen);
        assert_eq!(c.store.cache_bytes, NodeConfig::default().store.cache_bytes);
    }

    /// `text` is refused with an error naming the file, `line` and `key`, and saying `what`.
    fn check(text: &str, line: usize, key: &str, what: &str) {
        let e = NodeConfig::from_toml(text, Path::new("/etc/weft.toml")).unwrap_err();
        let shown = e.to_string();
        match &e {
            ConfigFileError::Invalid {
                line: l, key: k, ..
            } => {
                assert_eq!((*l, k.as_str()), (line, key), "{shown}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            shown.starts_with(&format!("/etc/weft.toml, line {line}: ")),
            "{shown}"
        );
        if !key.is_empty() {
            assert!(shown.contains(&format!("`{key}`")), "{shown}");
        }
        assert!(shown.contains(what), "{shown}");
    }

    #[test]
    fn a_bad_key_or_value_is_named_with_its_file_and_line() {
        check("htp = \"127.0.0.1:1\"\n", 1, "htp", "unknown field `htp`");
        check(
            "\n[cluster]\nlisen = \"127.0.0.1:1\"\n",
            3,
            "cluster.lisen",
            "expected one of",
        );
        check(
            "[cluster.locks]\nlock_delay = \"2 seconds\"\n",
            2,
            "cluster.locks.lock_delay",
            "duration",
        );
        check(
            "[cluster]\nlisten = \"here\"\n",
            2,
            "cluster.listen",
            "socket address",
        );
        check(
            "[replication]\ndefault = \"3/4/2\"\n",
            2,
            "replication.default",
            "must not exceed n",
        );
        check("[store]\ncache_bytes = -1\n", 2, "store.cache_bytes", "");
        check(
            "[replication.namespaces]\n\"a b\" = \"3/2/2\"\n",
            2,
            "replication.namespaces.a b",
            "",
        );
        check("[cluster\nname = 1\n", 1, "", "");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = NodeConfig::from_file(Path::new("/no/such/weft.toml")).unwrap_err();
        assert!(matches!(e, ConfigFileError::Read { .. }));
        assert!(e.to_string().contains("/no/such/weft.toml"), "{e}");
    }
}

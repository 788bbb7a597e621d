//! Presets of a node's configuration for the machine it runs on: `default` for a server, and
//! `edge` for a small device (a Raspberry-class board with a few hundred megabytes of memory
//! and a flash card). A preset only changes defaults: every key a file, a variable or a flag
//! sets still wins.

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::NodeConfig;

/// Which defaults a node starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Sized for a server.
    #[default]
    Default,
    /// Sized for a small device: 32 instances, 256 MiB of guest memory at most (64 MiB by
    /// default), 8 MiB of database cache, 32 MiB of map output in memory, 256 MiB of compiled
    /// modules on disk, 256 client connections, and the executable's start-up code given
    /// back to the kernel once the node serves.
    Edge,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(Profile::Default),
            "edge" => Ok(Profile::Edge),
            _ => Err(format!("`{s}` is not a profile: use default or edge")),
        }
    }
}

impl NodeConfig {
    /// The defaults of `profile`.
    pub fn for_profile(profile: Profile) -> NodeConfig {
        let mut c = NodeConfig {
            profile,
            ..NodeConfig::default()
        };
        if profile == Profile::Edge {
            c.runtime.max_instances = NonZeroU32::new(32).expect("non-zero");
            c.runtime.max_memory_bytes = NonZeroU64::new(256 << 20).expect("non-zero");
            c.runtime.default_memory_bytes = NonZeroU64::new(64 << 20).expect("non-zero");
            c.runtime.compiled_cache_bytes = 256 << 20;
            c.runtime.memory_keep_resident_bytes = 128 << 10;
            c.store.cache_bytes = 8 << 20;
            c.jobs.shuffle_memory_bytes = 32 << 20;
            c.limits.max_connections = NonZeroUsize::new(256).expect("non-zero");
            c.release_startup_code = true;
        }
        c
    }

    /// `self`, read from a file whose keys are `given`, with every key the file left out
    /// taken from `profile` instead of the plain defaults.
    pub(super) fn with_profile_defaults(
        self,
        given: &toml::Table,
        profile: Profile,
    ) -> Result<NodeConfig, String> {
        if profile == Profile::Default {
            return Ok(NodeConfig { profile, ..self });
        }
        let mut out = toml::Value::try_from(&self).map_err(|e| e.to_string())?;
        let preset =
            toml::Value::try_from(NodeConfig::for_profile(profile)).map_err(|e| e.to_string())?;
        fill(&mut out, &preset, Some(given));
        let mut config: NodeConfig = out.try_into().map_err(|e| e.to_string())?;
        config.profile = profile;
        Ok(config)
    }
}

/// Copies every leaf of `preset` into `out` where `given` (the file) has no such key.
fn fill(out: &mut toml::Value, preset: &toml::Value, given: Option<&toml::Table>) {
    let (toml::Value::Table(out), toml::Value::Table(preset)) = (out, preset) else {
        return;
    };
    for (key, value) in preset {
        let given_here = given.and_then(|g| g.get(key));
        match (value, out.get_mut(key)) {
            (toml::Value::Table(_), Some(slot @ toml::Value::Table(_))) => {
                fill(slot, value, given_here.and_then(toml::Value::as_table));
            }
            _ if given_here.is_some() => {}
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::membership::MembershipConfig;

    #[test]
    fn the_edge_profile_fills_what_a_file_leaves_out() {
        let edge = NodeConfig::for_profile(Profile::Edge);
        assert_eq!(edge.runtime.max_instances.get(), 32);
        assert_eq!(edge.runtime.memory_keep_resident_bytes, 128 << 10);
        assert_eq!(edge.store.cache_bytes, 8 << 20);

        let file = "profile = \"edge\"\n[store]\ncache_bytes = 1234\n";
        let c = NodeConfig::from_toml(file, Path::new("edge.toml")).unwrap();
        assert_eq!(c.profile, Profile::Edge);
        assert_eq!(c.store.cache_bytes, 1234, "the file's key wins");
        assert_eq!(
            c.runtime.max_instances.get(),
            32,
            "the preset fills the rest"
        );
        assert_eq!(c.jobs.shuffle_memory_bytes, 32 << 20);
        assert_eq!(c.limits.max_connections.get(), 256);
        assert!(c.release_startup_code);

        // Without the key, the defaults.
        let c =
            NodeConfig::from_toml("[store]\ncache_bytes = 1234\n", Path::new("d.toml")).unwrap();
        assert_eq!(c.profile, Profile::Default);
        assert_eq!(c.runtime.max_instances.get(), 256);
        assert!(!c.release_startup_code);

        let e = NodeConfig::from_toml("profile = \"tiny\"\n", Path::new("t.toml")).unwrap_err();
        assert!(e.to_string().contains("profile"), "{e}");
    }

    #[test]
    fn the_edge_example_is_a_valid_flaky_link_configuration() {
        let text = include_str!("../../../examples/edge/edge.toml");
        let c = NodeConfig::from_toml(text, Path::new("examples/edge/edge.toml")).unwrap();
        assert_eq!(c.profile, Profile::Edge);
        assert_eq!(c.runtime.max_instances.get(), 32);
        assert_eq!(
            c.replication.placement.require_tag.as_deref(),
            Some("server")
        );
        assert_eq!(c.cluster.tags, vec!["edge".to_string()]);
        let default = MembershipConfig::default();
        assert!(c.cluster.membership.probe_rtt > default.probe_rtt);
    }
}

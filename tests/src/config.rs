//! The one builder of test configs for members started in-process.
//!
//! Every test cluster wants the same few departures from the production
//! defaults (loopback on port 0, this process's secret, gossip fast enough
//! that a failure is noticed within the seconds a test runs, no fsync, a
//! small memtable) and then its own few more; the builder names each, so a
//! test reads as its differences. Anything else goes through
//! [`Fast::edit`].

use std::path::Path;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use shoal_node::config::{Config, ConfigError, SecretText, SyncMode};

/// A config under construction; [`Fast::build`] finishes it.
#[derive(Debug, Clone)]
pub struct Fast {
    config: Config,
}

impl Fast {
    /// Member `id` on 127.0.0.1 port 0 with this process's secret, gossip
    /// every 50 ms and a peer suspected after 1 s of silence.
    pub fn member(id: &str) -> Self {
        let mut c = Config::default();
        c.member.id = id.into();
        c.member.listen = "127.0.0.1:0".into();
        c.security.cluster_secret = Some(crate::secret::secret());
        c.gossip.interval_ms = 50;
        c.gossip.failure_timeout_ms = 1_000;
        Self { config: c }
    }

    /// A storage node: [`Fast::member`] with its data under `dir/id`, no
    /// fsync (in-process tests never lose power) and a 1 MiB memtable, so
    /// flushes and compactions happen within a test's few thousand writes.
    pub fn node(id: &str, dir: &Path) -> Self {
        let mut f = Self::member(id);
        f.config.member.data_dir = dir.join(id);
        f.config.storage.sync = SyncMode::Never;
        f.config.storage.memtable_bytes = 1 << 20;
        f
    }

    /// A gateway: [`Fast::member`] serving HTTP on 127.0.0.1 port 0, each
    /// request bounded by 2 s.
    pub fn gateway(id: &str) -> Self {
        let mut f = Self::member(id);
        f.config.http.listen = "127.0.0.1:0".into();
        f.config.http.request_timeout_ms = 2_000;
        f
    }

    /// The members to join through.
    pub fn seeds(mut self, seeds: &[String]) -> Self {
        self.config.member.seeds = seeds.to_vec();
        self
    }

    /// How long a silent peer takes to be suspected.
    pub fn failure_timeout_ms(mut self, ms: u64) -> Self {
        self.config.gossip.failure_timeout_ms = ms;
        self
    }

    /// How often stored hints are retried.
    pub fn handoff_retry_ms(mut self, ms: u64) -> Self {
        self.config.handoff.retry_interval_ms = ms;
        self
    }

    /// When writes are fsynced.
    pub fn sync(mut self, mode: SyncMode) -> Self {
        self.config.storage.sync = mode;
        self
    }

    /// Another cluster secret (the simulation's fixed one).
    pub fn secret(mut self, secret: SecretText) -> Self {
        self.config.security.cluster_secret = Some(secret);
        self
    }

    /// Any other change.
    pub fn edit(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// The config.
    pub fn build(self) -> Config {
        self.config
    }

    /// The config with `toml` (whole sections, as in a config file) applied
    /// over it and validated, as a member loading that file would.
    pub fn build_with_toml(self, toml: &str) -> Result<Config, ConfigError> {
        let mut base = self.config;
        // The secret is put back after the merge (a `[security]` section in
        // `toml` wins), so it never passes through serialization.
        let secret = base.security.cluster_secret.take();
        let mut config: Config = Figment::from(Serialized::defaults(base))
            .merge(Toml::string(toml))
            .extract()
            .map_err(|e| ConfigError::Parse {
                message: e.to_string(),
            })?;
        if config.security.cluster_secret.is_none() {
            config.security.cluster_secret = secret;
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_with_toml_is_the_config_its_toml_file_gives() {
        let seeds = vec!["127.0.0.1:7001".to_string()];
        let extra = "[limits]\nmax_value_bytes = 1024\n";
        let built = Fast::gateway("gw-1")
            .seeds(&seeds)
            .build_with_toml(extra)
            .unwrap();
        let text = format!(
            "[member]\nid = \"gw-1\"\nlisten = \"127.0.0.1:0\"\nseeds = [\"127.0.0.1:7001\"]\n\
             [gossip]\ninterval_ms = 50\nfailure_timeout_ms = 1000\n\
             [http]\nlisten = \"127.0.0.1:0\"\nrequest_timeout_ms = 2000\n{extra}"
        );
        let mut parsed = Config::from_toml(&text).unwrap();
        parsed.security.cluster_secret = Some(crate::secret::secret());
        assert_eq!(built, parsed);
        assert_eq!(built.limits.max_value_bytes, 1024);
    }

    #[test]
    fn bad_toml_is_a_typed_error() {
        assert!(matches!(
            Fast::gateway("gw").build_with_toml("[gossip]\ninterval_ms = \"soon\"\n"),
            Err(ConfigError::Parse { .. })
        ));
    }
}

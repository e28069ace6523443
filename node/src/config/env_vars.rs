//! A figment provider over an explicit list of `SHOAL_*` variables, so tests
//! never depend on the process environment.

use super::ENV_PREFIX;

/// A figment provider over an explicit list of `SHOAL_*` variables, mapped the
/// way figment's `Env::prefixed("SHOAL_").split("__")` maps them (that provider
/// reads the process environment itself, which tests must not depend on).
pub(super) struct EnvVars(pub(super) Vec<(String, String)>);

impl figment::Provider for EnvVars {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("environment variable(s)")
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut dict = figment::value::Dict::new();
        for (key, value) in &self.0 {
            let path: Vec<String> = key[ENV_PREFIX.len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            if path.iter().any(String::is_empty) {
                return Err(figment::Error::from(format!(
                    "environment variable {key} does not name a config key"
                )));
            }
            // The same value syntax as figment's `Env` provider: numbers,
            // booleans, `[arrays]` and `{dicts}` parse, anything else is a string.
            let parsed: figment::value::Value = value
                .parse()
                .unwrap_or_else(|e: std::convert::Infallible| match e {});
            insert_path(&mut dict, &path, parsed);
        }
        Ok(figment::Profile::Default.collect(dict))
    }
}

fn insert_path(dict: &mut figment::value::Dict, path: &[String], value: figment::value::Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| figment::value::Value::from(figment::value::Dict::new()));
            if let figment::value::Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            } else {
                let mut inner = figment::value::Dict::new();
                insert_path(&mut inner, rest, value);
                *entry = figment::value::Value::from(inner);
            }
        }
    }
}

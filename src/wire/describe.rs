//! The `describe` subcommand: the JSON modern Packer (and 1.6.6 for `packer-plugin-*` files)
//! reads to learn a plugin's version, API version and components. It runs without the magic
//! cookie. Field order and names follow the SDK's `SetDescription` (`plugin/set.go@v0.6.10`).

use serde::Serialize;

/// The component name that makes `packer-plugin-NAME` usable as plain `post-processor "NAME"`
/// after `packer plugins install` (modern Packer only; 1.6.6 does not know it).
pub const DEFAULT_PLUGIN_NAME: &str = "-packer-default-plugin-name-";

/// Packer's plugin API version, copied verbatim into installed file names.
pub const API_VERSION: &str = "x5.0";

/// The SDK protocol level we mirror (informational for Packer).
pub const SDK_VERSION: &str = "0.6.10";

#[derive(Serialize)]
struct SetDescription<'a> {
    version: &'a str,
    sdk_version: &'a str,
    api_version: &'a str,
    builders: [&'a str; 0],
    post_processors: Vec<&'a str>,
    provisioners: [&'a str; 0],
    datasources: Vec<&'a str>,
    protocol_version: &'a str,
}

/// The `describe` line (without the trailing newline) for a plugin at `version` with the given
/// post-processor names (and no data source). `protocol_version` is `v2`, as every plugin built
/// on packer-plugin-sdk v0.6.x prints it (`plugin/set.go`, `ProtocolVersion2`): Packer ≥ 1.12
/// then starts us with `--protobuf` (unless `PACKER_FORCE_GOB` is set), while Packer 1.7–1.11
/// decode describe into a struct without that field and ignore it, starting us in gob mode,
/// which we serve as well (1.9.4 in tests/it/packer.rs, the SDK client in tests/it/sdkhost.rs).
pub fn describe_json(version: &str, post_processors: &[&str]) -> String {
    describe_json_with(version, post_processors, &[])
}

/// The `describe` line with post-processors and data sources. Packer names a data source
/// component `C` of plugin `NAME` `NAME-C` (`data "NAME-C"`), or just `NAME` when `C` is
/// [`DEFAULT_PLUGIN_NAME`] (`packer/plugin.go` `discoverExternalComponents`).
pub fn describe_json_with(version: &str, post_processors: &[&str], datasources: &[&str]) -> String {
    let mut pps = post_processors.to_vec();
    pps.sort_unstable();
    let mut dss = datasources.to_vec();
    dss.sort_unstable();
    let d = SetDescription {
        version,
        sdk_version: SDK_VERSION,
        api_version: API_VERSION,
        builders: [],
        post_processors: pps,
        provisioners: [],
        datasources: dss,
        protocol_version: "v2",
    };
    serde_json::to_string(&d).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_sdk_shape() {
        assert_eq!(
            describe_json("0.1.0", &[DEFAULT_PLUGIN_NAME]),
            r#"{"version":"0.1.0","sdk_version":"0.6.10","api_version":"x5.0","builders":[],"post_processors":["-packer-default-plugin-name-"],"provisioners":[],"datasources":[],"protocol_version":"v2"}"#
        );
    }

    #[test]
    fn lists_data_sources_sorted() {
        let d = describe_json_with("0.1.0", &[DEFAULT_PLUGIN_NAME], &["z", "preflight"]);
        assert!(d.contains(r#""datasources":["preflight","z"]"#), "{d}");
    }
}

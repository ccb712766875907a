//! The plugin driven by packer-plugin-sdk v0.6.10's own RPC client (`amikey-sdkhost`, our Go host
//! in tests/peers/sdkhost, built by `scripts/setup`): the code Packer core runs on its side, in
//! protobuf mode (Packer 1.12+: describe says protocol_version "v2", the host passes
//! `--protobuf`) and in gob mode (`PACKER_FORCE_GOB=1`, the encoding of Packer 1.7–1.11). Every
//! assertion reads what the SDK decoded (ConfigSpec, OutputSpec, the result artifact, the Execute
//! value as go-cty gave it back), never our own decoding.

use std::process::Command;

use serde_json::{Value, json};

use crate::external;
use crate::moto::{Enc, Moto, create_ami, create_key};

const PLUGIN: &str = env!("CARGO_BIN_EXE_packer-plugin-amikey");

/// The two encodings: (extra host flag, expected protocol, expected `start` argv).
const MODES: [(&[&str], &str); 2] = [(&[], "protobuf"), (&["--gob"], "gob")];

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Runs the host; returns its JSON report (it exits 1 with `host_error` set on a host failure).
fn host(args: &[&str]) -> Value {
    let out = Command::new(external::require("amikey-sdkhost"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "host printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "host failed: {v:#}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(v["plugin_exit"], "ok", "the plugin must exit cleanly when the session closes: {v:#}");
    v
}

fn hcl_file(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("block.hcl");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// `[{name, type (cty JSON), required}]` of a spec, as the host prints the SDK's decoding.
fn spec_json(attrs: &[amikey::wire::AttrSpec]) -> Value {
    let mut v: Vec<Value> = attrs
        .iter()
        .map(|a| json!({"name": a.name, "type": amikey::wire::cty_msgpack::type_json(&a.ty), "required": a.required}))
        .collect();
    v.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Value::Array(v)
}

/// The post-processor's spec as the host prints it: the attributes, and each repeated block with
/// its nested attributes.
fn pp_spec_json() -> Value {
    let Value::Array(mut v) = spec_json(&amikey::postprocessor::config_spec()) else { unreachable!() };
    for b in amikey::postprocessor::config_blocks() {
        v.push(json!({"name": b.name, "required": false, "block": spec_json(&b.nested)}));
    }
    v.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Value::Array(v)
}

fn check_start(v: &Value, protocol: &str, kind: &str, name: &str) {
    assert_eq!(v["protocol"], protocol, "{v:#}");
    let args = if protocol == "protobuf" {
        json!(["start", kind, "--protobuf", name])
    } else {
        json!(["start", kind, name])
    };
    assert_eq!(v["args"], args);
    assert!(v["handshake"].as_str().unwrap().starts_with("5|0|unix|/"), "{v:#}");
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: amikey-sdkhost")]
fn sdk_decodes_the_post_processor_config_spec_and_configure_takes_hcl_values() {
    let dir = tempfile::tempdir().unwrap();
    let good = hcl_file(
        &dir,
        "kms_key_id = \"alias/x\"\nami_users = [\"111122223333\"]\nmax_retries = 2\nregion_kms_key_ids = { eu-west-1 = \"alias/eu\" }\ncopy_to {\n  account = \"210987654321\"\n  kms_key_id = \"alias/mine\"\n  regions = [\"eu-west-1\"]\n}\ncopy_to {\n  account = \"111122223333\"\n  role_name = \"copier\"\n}\n",
    );
    for (flags, protocol) in MODES {
        let mut args = vec!["pp", "--plugin", PLUGIN, "--hcl", &good];
        args.extend_from_slice(flags);
        let v = host(&args);
        check_start(&v, protocol, "post-processor", "-packer-default-plugin-name-");
        assert_eq!(v["config_spec"], pp_spec_json(), "{protocol}");
        assert!(
            v["config_spec"].as_array().is_some_and(|a| a.iter().any(|e| e["name"] == "copy_to")),
            "{v:#}"
        );
        assert_eq!(v["configure_error"], Value::Null, "{protocol}: {v:#}");
    }
    // hcldec itself refuses what the spec does not allow; amikey refuses bad values.
    let bad = hcl_file(&dir, "kms_key_id = \"alias/x\"\non_violation = \"sometimes\"\n");
    for (flags, protocol) in MODES {
        let mut args = vec!["pp", "--plugin", PLUGIN, "--hcl", &bad];
        args.extend_from_slice(flags);
        let v = host(&args);
        let e = v["configure_error"].as_str().unwrap_or_else(|| panic!("{protocol}: no error: {v:#}"));
        assert!(e.contains("on_violation"), "{protocol}: {e}");
    }
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: amikey-sdkhost")]
fn sdk_decodes_the_data_source_config_and_output_specs() {
    for (flags, protocol) in MODES {
        let mut args = vec!["ds", "--plugin", PLUGIN];
        args.extend_from_slice(flags);
        let v = host(&args);
        check_start(&v, protocol, "datasource", "preflight");
        assert_eq!(v["config_spec"], spec_json(&amikey::datasource::config_spec()), "{protocol}");
        assert_eq!(v["output_spec"], spec_json(&amikey::datasource::output_spec()), "{protocol}");
    }
}

fn moto_hcl(m: &Moto, extra: &str) -> String {
    format!(
        "access_key = \"testing\"\nsecret_key = \"testing\"\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\nmax_retries = 2\n{extra}\n",
        m.endpoint
    )
}

/// Two regions, a CMK each, an AMI each encrypted with `eu`'s choice of key.
fn seed(m: &Moto, eu_enc: fn(&str) -> Enc) -> (String, String, Vec<String>) {
    block_on(async {
        let aws = m.aws(None).await;
        let east_key = create_key(&aws, "us-east-1", "alias/images").await;
        let west_key = create_key(&aws, "eu-west-1", "alias/images").await;
        let (east, _) = create_ami(&aws, "us-east-1", &[("/dev/xvda", Enc::Key(east_key))]).await;
        let (west, west_snaps) = create_ami(&aws, "eu-west-1", &[("/dev/xvda", eu_enc(&west_key))]).await;
        (east, west, west_snaps)
    })
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: amikey-sdkhost, moto")]
fn post_process_good_verifies_shares_and_publishes_protobuf_and_gob() {
    for (flags, protocol) in MODES {
        let m = Moto::take();
        let (east, west, _) = seed(&m, |k| Enc::Key(k.to_string()));
        let dir = tempfile::tempdir().unwrap();
        let hcl = hcl_file(
            &dir,
            &moto_hcl(
                &m,
                "kms_key_id = \"alias/images\"\nami_users = [\"111122223333\"]\nssm_path = \"/amis/app\"",
            ),
        );
        let id = format!("eu-west-1:{west},us-east-1:{east}");
        let mut args = vec!["pp", "--plugin", PLUGIN, "--hcl", &hcl, "--artifact-id", &id];
        args.extend_from_slice(flags);
        let v = host(&args);
        let pp = &v["post_process"];
        assert_eq!(pp["error"], Value::Null, "{protocol}: {v:#}");
        assert_eq!(pp["keep"], true, "{protocol}: the builder's AMIs must be kept");
        let a = &pp["artifact"];
        assert_eq!(a["id"], id.as_str(), "{protocol}: {a:#}");
        assert!(a["string"].as_str().unwrap().contains("amikey verified 2 AMI(s)"), "{a:#}");
        let g = &a["generated_data"];
        assert_eq!(g["AmikeyVerified"], "true", "{protocol}: {a:#}");
        assert_eq!(g["AmiId_us_east_1"], east.as_str(), "{protocol}: {a:#}");
        block_on(async {
            let aws = m.aws(None).await;
            for (region, ami) in [("us-east-1", &east), ("eu-west-1", &west)] {
                let p = aws.ssm(region).get_parameter().name("/amis/app/image_id").send().await.unwrap();
                assert_eq!(p.parameter().unwrap().value(), Some(ami.as_str()), "{protocol} {region}");
                let users = amikey::aws::gather::launch_permissions(&aws, region, ami).await.unwrap().users;
                assert!(users.iter().any(|u| u == "111122223333"), "{protocol} {region}: {users:?}");
            }
        });
    }
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: amikey-sdkhost, moto")]
fn post_process_on_aws_ebs_fails_naming_region_and_snapshot_protobuf_and_gob() {
    for (flags, protocol) in MODES {
        let m = Moto::take();
        let (east, west, west_snaps) = seed(&m, |_| Enc::AwsManaged);
        let dir = tempfile::tempdir().unwrap();
        let hcl = hcl_file(&dir, &moto_hcl(&m, "kms_key_id = \"alias/images\"\nssm_path = \"/amis/app\""));
        let id = format!("eu-west-1:{west},us-east-1:{east}");
        let mut args = vec!["pp", "--plugin", PLUGIN, "--hcl", &hcl, "--artifact-id", &id];
        args.extend_from_slice(flags);
        let v = host(&args);
        let pp = &v["post_process"];
        let e = pp["error"].as_str().unwrap_or_else(|| panic!("{protocol}: no error: {v:#}"));
        assert!(e.contains("eu-west-1") && e.contains(&west_snaps[0]), "{protocol}: {e}");
        assert_eq!(pp["artifact"], Value::Null);
        block_on(async {
            let aws = m.aws(None).await;
            let r = aws.ssm("us-east-1").get_parameter().name("/amis/app/image_id").send().await;
            assert!(r.is_err(), "{protocol}: nothing may be published on a violation");
        });
    }
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: amikey-sdkhost")]
fn cancel_from_the_sdk_context_ends_post_process_cleanly_protobuf_and_gob() {
    // An endpoint that accepts connections and never answers: PostProcess waits on AWS until
    // the SDK's context is cancelled (on amikey's first Ui line), which calls PostProcessor.Cancel.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hang.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let hcl = hcl_file(
        &dir,
        &format!(
            "kms_key_id = \"alias/x\"\nmax_retries = 1\naccess_key = \"a\"\nsecret_key = \"b\"\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\n"
        ),
    );
    for (flags, protocol) in MODES {
        let mut args = vec![
            "pp",
            "--plugin",
            PLUGIN,
            "--hcl",
            &hcl,
            "--artifact-id",
            "us-east-1:ami-0123456789abcdef0",
            "--cancel-on",
            "Checking 1 AMI(s)",
        ];
        args.extend_from_slice(flags);
        let started = std::time::Instant::now();
        let v = host(&args);
        let pp = &v["post_process"];
        assert_eq!(pp["cancelled"], true, "{protocol}: {v:#}");
        let e = pp["error"].as_str().unwrap_or_default();
        assert!(e.starts_with("cancelled: Packer cancelled the build"), "{protocol}: {e}");
        assert!(v["plugin_stderr"].as_str().unwrap().contains("PostProcessor.Cancel"), "{protocol}: {v:#}");
        // Well before the AWS SDK's own 30 s read timeout would have ended it.
        assert!(started.elapsed().as_secs() < 20, "{protocol}: took {:?}", started.elapsed());
    }
    drop(hang);
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: amikey-sdkhost, moto")]
fn data_source_full_cycle_protobuf_and_gob_decoded_by_go_cty() {
    for (flags, protocol) in MODES {
        let m = Moto::take();
        let (east, west) = block_on(async {
            let aws = m.aws(None).await;
            let east = create_key(&aws, "us-east-1", "alias/images").await;
            let west = create_key(&aws, "eu-west-1", "alias/images").await;
            aws.ec2("eu-west-1").enable_ebs_encryption_by_default().send().await.unwrap();
            (east, west)
        });
        let dir = tempfile::tempdir().unwrap();
        let hcl = hcl_file(
            &dir,
            &moto_hcl(&m, "regions = [\"us-east-1\", \"eu-west-1\"]\nkms_key_id = \"alias/images\""),
        );
        let mut args = vec!["ds", "--plugin", PLUGIN, "--hcl", &hcl];
        args.extend_from_slice(flags);
        let v = host(&args);
        assert_eq!(v["configure_error"], Value::Null, "{protocol}: {v:#}");
        let x = &v["execute"];
        assert_eq!(x["error"], Value::Null, "{protocol}: {v:#}");
        assert_eq!(x["conforms"], true, "{protocol}: the value's type is not the OutputSpec's: {x:#}");
        assert_eq!(
            x["type"],
            amikey::wire::cty_msgpack::object_type_json(&amikey::datasource::output_spec())
        );
        let val = &x["value"];
        assert_eq!(val["kms_key_arns"], json!({"eu-west-1": west, "us-east-1": east}), "{protocol}");
        assert_eq!(val["ebs_encryption_by_default"], json!({"eu-west-1": true, "us-east-1": false}));
        assert!(
            val["ebs_default_kms_key_arns"]["eu-west-1"]
                .as_str()
                .unwrap()
                .starts_with("arn:aws:kms:eu-west-1:")
        );
        let w = val["warnings"].as_array().unwrap();
        assert!(
            w.len() == 1 && w[0].as_str().unwrap().starts_with("EBS_DEFAULT_AWS_MANAGED: eu-west-1:"),
            "{w:?}"
        );
    }
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: amikey-sdkhost, moto")]
fn data_source_execute_error_reaches_the_sdk_protobuf_and_gob() {
    for (flags, protocol) in MODES {
        let m = Moto::take();
        let east = block_on(async {
            let aws = m.aws(None).await;
            create_key(&aws, "eu-west-1", "alias/images").await;
            create_key(&aws, "us-east-1", "alias/images").await
        });
        let dir = tempfile::tempdir().unwrap();
        let extra = format!(
            "regions = [\"us-east-1\", \"eu-west-1\"]\nkms_key_id = \"alias/images\"\nregion_kms_key_ids = {{ eu-west-1 = \"{east}\" }}"
        );
        let hcl = hcl_file(&dir, &moto_hcl(&m, &extra));
        let mut args = vec!["ds", "--plugin", PLUGIN, "--hcl", &hcl];
        args.extend_from_slice(flags);
        let v = host(&args);
        let e = v["execute"]["error"].as_str().unwrap_or_else(|| panic!("{protocol}: no error: {v:#}"));
        assert!(e.contains("KEY_WRONG_REGION") && e.contains("eu-west-1"), "{protocol}: {e}");
    }
}

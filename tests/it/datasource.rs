//! The `amikey-preflight` data source through the conformance harness (Packer's side of the
//! protocol, played against the real plugin binary): `describe` lists it, `start datasource`
//! handshakes, ConfigSpec/OutputSpec decode to the documented schema in both encodings,
//! Configure takes cty JSON, and Execute against moto returns the key map as go-cty msgpack.
//! Packer 1.6.6 has no data sources, so real Packer cannot drive this here.

use amikey::datasource::{config_spec, output_spec};
use amikey::wire::codec::{map_get, struct_value};
use amikey::wire::cty_msgpack::{decode_dynamic, object_type_json};
use amikey::wire::hcl_spec;
use rmpv::Value;
use serde_json::json;
use tokio::process::Command;

use crate::conformance::{BIN, Packer, Plugin, T};
use crate::moto::{Moto, create_key};

/// `DatasourceConfigureArgs{Configs: [cty JSON of the block]}`, every spec attribute present.
fn configure_args(block: serde_json::Value) -> Value {
    let mut types = serde_json::Map::new();
    let mut full = serde_json::Map::new();
    for a in config_spec() {
        types.insert(a.name.clone(), amikey::wire::cty_msgpack::type_json(&a.ty));
        full.insert(a.name.clone(), block.get(&a.name).cloned().unwrap_or(serde_json::Value::Null));
    }
    let cty = json!({"value": full, "type": ["object", types]});
    struct_value(vec![("Configs", Value::Array(vec![Value::Binary(serde_json::to_vec(&cty).unwrap())]))])
}

async fn configure(p: &Packer, block: serde_json::Value) -> Result<Value, String> {
    p.call("Datasource.Configure", configure_args(block)).await
}

fn moto_block(m: &Moto, extra: serde_json::Value) -> serde_json::Value {
    let mut b = json!({
        "access_key": "testing",
        "secret_key": "testing",
        "region": "us-east-1",
        "endpoint_url": m.endpoint,
        "max_retries": 2,
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

#[tokio::test]
async fn describe_lists_the_preflight_data_source() {
    let out = Command::new(BIN).arg("describe").env_clear().output().await.unwrap();
    assert!(out.status.success());
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["datasources"], json!(["preflight"]));
    assert_eq!(d["post_processors"], json!(["-packer-default-plugin-name-"]));
}

#[tokio::test]
async fn protobuf_start_handshakes_and_serves_both_specs() {
    let plugin = Plugin::start(&["start", "datasource", "--protobuf", "preflight"], &[]).await;
    assert!(plugin.line.starts_with("5|0|unix|/"), "{}", plugin.line);
    let packer = plugin.connect().await;
    let reply = packer.call("Datasource.ConfigSpec", Value::Nil).await.unwrap();
    let Some(Value::Binary(pb)) = map_get(&reply, "ConfigSpec") else { panic!("no bin ConfigSpec: {reply}") };
    assert_eq!(hcl_spec::decode_proto_spec(pb).unwrap(), config_spec());
    let reply = packer.call("Datasource.OutputSpec", Value::Nil).await.unwrap();
    let Some(Value::Binary(pb)) = map_get(&reply, "OutputSpec") else { panic!("no bin OutputSpec: {reply}") };
    let out = hcl_spec::decode_proto_spec(pb).unwrap();
    assert_eq!(out, output_spec());
    let names: Vec<&str> = out.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["ebs_default_kms_key_arns", "ebs_encryption_by_default", "kms_key_arns", "warnings"]);
    let err = packer.call("Datasource.Nope", Value::Nil).await.unwrap_err();
    assert!(err.contains("can't find method"), "{err}");
}

#[tokio::test]
async fn gob_start_serves_gob_specs() {
    let plugin = Plugin::start(&["start", "datasource", "preflight"], &[]).await;
    let packer = plugin.connect().await;
    let reply = packer.call("Datasource.ConfigSpec", Value::Nil).await.unwrap();
    let Some(Value::Binary(gob)) = map_get(&reply, "ConfigSpec") else { panic!() };
    assert_eq!(hcl_spec::decode_gob_spec(gob).unwrap(), config_spec());
    let reply = packer.call("Datasource.OutputSpec", Value::Nil).await.unwrap();
    let Some(Value::Binary(gob)) = map_get(&reply, "OutputSpec") else { panic!() };
    assert_eq!(hcl_spec::decode_gob_spec(gob).unwrap(), output_spec());
}

/// Gob mode (Packer 1.7–1.11): Execute answers the cty.Value's own gob, carrying the same value
/// as protobuf mode's msgpack. The bytes are the codec's, pinned to go-cty's in its unit tests;
/// Go's decoding of them is proven by the SDK host (tests/it/sdkhost.rs) and by real Packer 1.9.4
/// (tests/it/packer.rs).
#[tokio::test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
async fn gob_execute_on_moto_returns_the_same_value_as_go_cty_gob() {
    let m = Moto::take();
    let aws = m.aws(None).await;
    create_key(&aws, "us-east-1", "alias/images").await;
    let block = moto_block(&m, json!({"regions": ["us-east-1"], "kms_key_id": "alias/images"}));
    let mut replies = Vec::new();
    for args in
        [&["start", "datasource", "preflight"][..], &["start", "datasource", "--protobuf", "preflight"]]
    {
        let plugin = Plugin::start(args, &[]).await;
        let packer = plugin.connect().await;
        configure(&packer, block.clone()).await.unwrap();
        let reply =
            tokio::time::timeout(T, packer.call("Datasource.Execute", Value::Nil)).await.unwrap().unwrap();
        assert_eq!(map_get(&reply, "Error"), Some(&Value::Nil));
        let Some(Value::Binary(bytes)) = map_get(&reply, "Value") else { panic!("no bin Value: {reply}") };
        replies.push(bytes.clone());
    }
    let (_, value) = decode_dynamic(&replies[1]).unwrap();
    assert!(value["kms_key_arns"]["us-east-1"].as_str().unwrap().starts_with("arn:aws:kms:us-east-1:"));
    let want =
        amikey::wire::cty_gob::encode_execute_value(&output_spec(), value.as_object().unwrap()).unwrap();
    assert_eq!(replies[0], want);
}

#[tokio::test]
async fn an_unknown_data_source_name_is_refused() {
    let out = Command::new(BIN)
        .args(["start", "datasource", "nope"])
        .env_clear()
        .env(amikey::wire::handshake::MAGIC_COOKIE_KEY, amikey::wire::handshake::MAGIC_COOKIE_VALUE)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no handshake line");
    assert!(String::from_utf8_lossy(&out.stderr).contains("amikey-preflight"));
}

#[tokio::test]
async fn configure_names_bad_input() {
    let plugin = Plugin::start(&["start", "datasource", "--protobuf", "preflight"], &[]).await;
    let packer = plugin.connect().await;
    let err = configure(&packer, json!({"kms_key_id": "alias/x"})).await.unwrap_err();
    assert!(err.contains("`regions` is required"), "{err}");
    let err = configure(&packer, json!({"regions": ["us-east-1"], "max_retries": "many"})).await.unwrap_err();
    assert!(err.contains("max_retries"), "{err}");
    let garbage = struct_value(vec![("Configs", Value::Array(vec![Value::Binary(b"{not json".to_vec())]))]);
    let err = packer.call("Datasource.Configure", garbage).await.unwrap_err();
    assert!(err.contains("cty JSON"), "{err}");
    let err = packer.call("Datasource.Execute", Value::Nil).await.unwrap_err();
    assert!(err.contains("before Configure"), "{err}");
}

#[tokio::test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
async fn execute_on_moto_returns_the_key_map_as_cty_msgpack() {
    let m = Moto::take();
    let aws = m.aws(None).await;
    let east = create_key(&aws, "us-east-1", "alias/images").await;
    let west = create_key(&aws, "eu-west-1", "alias/images").await;
    aws.ec2("eu-west-1").enable_ebs_encryption_by_default().send().await.unwrap();
    let plugin = Plugin::start(&["start", "datasource", "--protobuf", "preflight"], &[]).await;
    let packer = plugin.connect().await;
    let block = moto_block(&m, json!({"regions": ["us-east-1", "eu-west-1"], "kms_key_id": "alias/images"}));
    let reply = configure(&packer, block).await.unwrap();
    assert_eq!(map_get(&reply, "Error"), Some(&Value::Nil));
    let reply =
        tokio::time::timeout(T, packer.call("Datasource.Execute", Value::Nil)).await.unwrap().unwrap();
    assert_eq!(map_get(&reply, "Error"), Some(&Value::Nil));
    let Some(Value::Binary(bytes)) = map_get(&reply, "Value") else { panic!("no bin Value: {reply}") };
    let (ty, v) = decode_dynamic(bytes).unwrap();
    assert_eq!(ty, object_type_json(&output_spec()));
    assert_eq!(v["kms_key_arns"], json!({"eu-west-1": west, "us-east-1": east}));
    assert_eq!(v["ebs_encryption_by_default"], json!({"eu-west-1": true, "us-east-1": false}));
    assert!(
        v["ebs_default_kms_key_arns"]["eu-west-1"].as_str().unwrap().starts_with("arn:aws:kms:eu-west-1:")
    );
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].as_str().unwrap().starts_with("EBS_DEFAULT_AWS_MANAGED: eu-west-1:"));
}

#[tokio::test]
#[cfg_attr(not(amikey_external), ignore = "external: moto")]
async fn execute_fails_with_the_preflight_text_on_a_wrong_region_key() {
    let m = Moto::take();
    let aws = m.aws(None).await;
    let east = create_key(&aws, "us-east-1", "alias/images").await;
    let plugin = Plugin::start(&["start", "datasource", "--protobuf", "preflight"], &[]).await;
    let packer = plugin.connect().await;
    let block = moto_block(
        &m,
        json!({"regions": ["eu-west-1", "us-east-1"], "kms_key_id": "alias/images",
               "region_kms_key_ids": {"eu-west-1": east}}),
    );
    configure(&packer, block).await.unwrap();
    let err =
        tokio::time::timeout(T, packer.call("Datasource.Execute", Value::Nil)).await.unwrap().unwrap_err();
    assert!(err.contains("KEY_WRONG_REGION") && err.contains("FAIL eu-west-1"), "{err}");
    assert!(err.contains("ok   us-east-1"), "{err}");
}

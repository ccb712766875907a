//! Real modern Packer drives amikey: Packer 1.9.4 (the newest MPL-2.0 Packer the Go module
//! proxy serves; built from source by `scripts/setup` as `packer-1.9.4`) with amikey installed
//! where `required_plugins` wants it, on the moto emulator. The builder is 1.9.4's bundled
//! amazon plugin (v1.2.1), or packer-plugin-amazon v1.8.2 installed as an external plugin
//! (`packer-plugin-amazon_v1.8.2`, also built by `scripts/setup`), which then replaces the
//! bundled `amazon-ebs`.
//!
//! The scenarios and their machinery are `packer_e2e.rs`'s, which runs the same ones on Packer
//! 1.6.6 with the legacy plugin name: the migration pair of templates, one build.

use crate::moto::Moto;
use crate::packer_e2e::*;

/// The 1.7+ example is the 1.6.6 example plus the `packer { required_plugins }` block (and its
/// own header comment): the migration is exactly that block.
#[test]
fn the_modern_example_is_the_legacy_one_plus_required_plugins() {
    /// Without the leading comment: the code.
    fn body(text: &str) -> String {
        let code: Vec<&str> =
            text.lines().skip_while(|l| l.starts_with('#') || l.trim().is_empty()).collect();
        code.join("\n")
    }
    let legacy = body(&example(LEGACY_HCL));
    let modern = body(&example(MODERN_HCL));
    let block = "packer {\n  required_plugins {\n    amikey = {\n      source  = \"github.com/amikey/amikey\"\n      version = \">= 0.1.0\"\n    }\n  }\n}";
    assert!(
        modern.starts_with(block),
        "{MODERN_HCL} should start with the required_plugins block:\n{modern}"
    );
    assert_eq!(
        modern[block.len()..].trim(),
        legacy,
        "{MODERN_HCL} and {LEGACY_HCL} differ beyond the packer block"
    );
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4")]
fn required_plugins_install_inits_offline_and_validates() {
    let p = Packer::v1_9_4(false);
    let mut keys = std::collections::BTreeMap::new();
    for r in REGIONS {
        keys.insert(r.to_string(), "alias/amikey-demo".to_string());
    }
    let w = Workdir::new(&p, "http://127.0.0.1:9", &keys);
    let (version, api) = describe(std::path::Path::new(PLUGIN));
    let bin = format!("github.com/amikey/amikey/packer-plugin-amikey_v{version}_{api}_linux_amd64");
    assert_eq!(w.plugin_files(), [bin.clone(), format!("{bin}_SHA256SUM")]);
    w.write("amazon-ebs.pkr.hcl", &example(MODERN_HCL));
    assert_init_is_offline_noop(&w, "amazon-ebs.pkr.hcl");
    assert_validates(&w, "amazon-ebs.pkr.hcl");
    // Packer found amikey through required_plugins' layout and started it as a component of a
    // multi-component plugin, after asking it to describe itself.
    let log = w.log("validate.log");
    assert!(log.contains("packer-plugin-amikey_v") && log.contains("start post-processor"), "{log}");

    // A checksum that does not match: Packer ignores the binary, and the template no longer
    // validates, naming the missing plugin.
    std::fs::write(w.path(&format!("plugins/{bin}_SHA256SUM")), "00".repeat(32)).unwrap();
    let v = w.run(&["validate", "-var-file=vars.json", "amazon-ebs.pkr.hcl"], "validate-bad.log");
    assert!(!v.status.success(), "validate passed with a bad checksum:\n{}", v.text);
    assert!(v.text.contains("amikey"), "{}", v.text);
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, moto")]
fn bundled_amazon_ebs_build_verifies_shares_and_publishes_in_three_regions() {
    good_hcl2_build(&Packer::v1_9_4(false));
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, moto")]
fn bundled_amazon_ebs_region_left_on_aws_ebs_fails_naming_region_and_snapshot() {
    aws_managed_build(&Packer::v1_9_4(false));
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, moto")]
fn bundled_amazon_ebs_on_violation_warn_keeps_the_amis() {
    warn_build(&Packer::v1_9_4(false));
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, moto")]
fn legacy_json_template_builds_on_1_9_4() {
    json_build(&Packer::v1_9_4(false));
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, moto")]
fn sigint_while_amikey_verifies_cancels_cleanly() {
    sigint_while_verifying(&Packer::v1_9_4(false));
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, moto")]
fn sigint_while_amikey_writes_cancels_cleanly() {
    sigint_while_writing(&Packer::v1_9_4(false));
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, packer-plugin-amazon v1.8.2, moto")]
fn current_amazon_plugin_region_left_on_aws_ebs_fails_naming_region_and_snapshot() {
    aws_managed_build(&Packer::v1_9_4(true));
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, packer-plugin-amazon v1.8.2, moto")]
fn current_amazon_plugin_build_verifies_shares_and_publishes_in_three_regions() {
    good_hcl2_build(&Packer::v1_9_4(true));
}

/// The modern example with its keys taken from `data "amikey-preflight"` instead of variables:
/// the data source resolves `alias/amikey-demo` in each region, and its `kms_key_arns` feed the
/// builder's `kms_key_id` / `region_kms_key_ids` and amikey's own.
fn preflight_fed(example_text: &str) -> String {
    let data = "data \"amikey-preflight\" \"keys\" {\n  regions      = [\"us-east-1\", \"us-west-2\", \"eu-west-1\"]\n  kms_key_id   = \"alias/amikey-demo\"\n  access_key   = \"testing\"\n  secret_key   = \"testing\"\n  region       = \"us-east-1\"\n  endpoint_url = var.endpoint\n}\n\nsource \"amazon-ebs\" \"base\" {";
    let arn = |r: &str| format!("data.amikey-preflight.keys.kms_key_arns[\"{r}\"]");
    edit(
        example_text,
        &[
            ("source \"amazon-ebs\" \"base\" {", data),
            ("  kms_key_id   = var.kms_us_east_1\n", &format!("  kms_key_id   = {}\n", arn("us-east-1"))),
            (
                "  region_kms_key_ids = {\n    \"us-west-2\" = var.kms_us_west_2\n    \"eu-west-1\" = var.kms_eu_west_1\n  }\n",
                &format!(
                    "  region_kms_key_ids = {{\n    \"us-west-2\" = {}\n    \"eu-west-1\" = {}\n  }}\n",
                    arn("us-west-2"),
                    arn("eu-west-1")
                ),
            ),
            (
                "    kms_key_id = var.kms_us_east_1\n    region_kms_key_ids = {\n      \"us-west-2\" = var.kms_us_west_2\n      \"eu-west-1\" = var.kms_eu_west_1\n    }\n",
                "    kms_key_id         = data.amikey-preflight.keys.kms_key_arns[\"us-east-1\"]\n    region_kms_key_ids = data.amikey-preflight.keys.kms_key_arns\n",
            ),
        ],
    )
}

/// `data "amikey-preflight"` on Packer 1.9.4 (gob): its outputs are the keys of the same
/// amazon-ebs build, which amikey then verifies against them and publishes.
#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, moto")]
fn preflight_outputs_feed_the_builds_keys_and_the_build_passes_verification() {
    let p = Packer::v1_9_4(false);
    let m = Moto::take();
    let keys = seed_keys(&m);
    let w = Workdir::new(&p, &m.endpoint, &keys);
    let template = preflight_fed(&p.hcl_example());
    assert!(!template.contains("var.kms_"), "every key comes from the data source:\n{template}");
    w.write("fed.pkr.hcl", &template);
    // Plain `validate` does not execute data sources: the builder sees unknown keys and
    // amazon-ebs refuses them. With -evaluate-datasources amikey's data source runs first.
    let v = w.run(&["validate", "-var-file=vars.json", "fed.pkr.hcl"], "validate.log");
    assert!(!v.status.success() && v.text.contains("is not a valid KMS Key Id"), "{}", v.text);
    let v = w
        .run(&["validate", "-evaluate-datasources", "-var-file=vars.json", "fed.pkr.hcl"], "validate-ds.log");
    assert!(v.status.success(), "{}\n{}", v.text, w.log("validate-ds.log"));
    assert!(v.text.trim().ends_with("The configuration is valid."), "{}", v.text);
    let b = w.build("fed.pkr.hcl");
    assert!(b.status.success(), "build failed:\n{}\n{}", b.text, w.log("build.log"));
    assert!(b.text.contains("amikey verified 3 AMI(s)"), "{}", b.text);
    let log = w.log("build.log");
    assert!(log.contains(r#""start", "datasource", "preflight"}"#), "{log}");
    assert_plugin_did_not_panic(&w, "build.log");
    assert_published(&m, &keys, "amikey-demo-base", "/amikey-demo/base", true);
}

/// `copy_to` in a real build: after verifying, sharing and publishing the producer's AMIs, the
/// post-processor copies each into the consumer account under that account's own key, verifies
/// the copy and publishes it there.
#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, moto")]
fn copy_to_in_a_real_build_gives_the_consumer_its_own_verified_copies() {
    let p = Packer::v1_9_4(false);
    let m = Moto::take();
    let keys = seed_keys(&m);
    // The producer's key policies let the consumer copy; the consumer has its own key per region.
    let mine = block_on(async {
        let producer = m.aws(None).await;
        for r in REGIONS {
            let policy = crate::copy::allow_consumers(&[crate::moto::CONSUMER]);
            producer
                .kms(r)
                .put_key_policy()
                .key_id(&keys[r])
                .policy_name("default")
                .policy(policy)
                .send()
                .await
                .unwrap();
        }
        let consumer = m.aws(Some(crate::moto::CONSUMER)).await;
        let mut mine = std::collections::BTreeMap::new();
        for r in REGIONS {
            mine.insert(r.to_string(), crate::moto::create_key(&consumer, r, "alias/mine").await);
        }
        mine
    });
    let w = Workdir::new(&p, &m.endpoint, &keys);
    let template = edit(
        &p.hcl_example(),
        &[(
            "    publish_role_name = \"amikey-publisher\"\n",
            "    publish_role_name = \"amikey-publisher\"\n\n    copy_to {\n      account    = var.consumer_account\n      role_name  = \"amikey-copy\"\n      kms_key_id = \"alias/mine\"\n      ssm_path   = \"/amikey-demo/copy\"\n    }\n",
        )],
    );
    w.write("copy.pkr.hcl", &template);
    assert_validates(&w, "copy.pkr.hcl");
    let b = w.build("copy.pkr.hcl");
    assert!(b.status.success(), "build failed:\n{}\n{}", b.text, w.log("build.log"));
    assert_plugin_did_not_panic(&w, "build.log");
    assert_published(&m, &keys, "amikey-demo-base", "/amikey-demo/base", true);
    block_on(async {
        let producer = m.aws(None).await;
        let consumer = m.aws(Some(crate::moto::CONSUMER)).await;
        for r in REGIONS {
            let got = params(&consumer, r, "/amikey-demo/copy").await;
            let source = amis_named(&producer, r, "amikey-demo-base").await.into_keys().next().unwrap();
            assert_eq!(got.get("/amikey-demo/copy/source_image_id"), Some(&source), "{r}: {got:?}");
            assert_eq!(got.get("/amikey-demo/copy/kms_key_arn"), Some(&mine[r]), "{r}: {got:?}");
            let copy = &got["/amikey-demo/copy/image_id"];
            assert_ne!(copy, &source, "{r}: the consumer must own a copy, not the shared AMI");
            let images = consumer.ec2(r).describe_images().image_ids(copy).send().await.unwrap();
            let image = &images.images()[0];
            assert_eq!(image.owner_id(), Some(crate::moto::CONSUMER), "{r}");
            let snaps: Vec<&str> =
                image.block_device_mappings().iter().filter_map(|d| d.ebs()?.snapshot_id()).collect();
            assert!(!snaps.is_empty(), "{r}: the copy has no snapshots");
            for s in snaps {
                assert_eq!(snapshot_key(&consumer, r, s).await.as_deref(), Some(mine[r].as_str()), "{r} {s}");
            }
        }
    });
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, packer-plugin-amazon v1.8.2, moto")]
fn current_amazon_plugin_on_violation_warn_keeps_the_amis() {
    warn_build(&Packer::v1_9_4(true));
}

#[test]
#[cfg_attr(not(amikey_external), ignore = "external: packer 1.9.4, packer-plugin-amazon v1.8.2, moto")]
fn current_amazon_plugin_sigint_while_amikey_writes_cancels_cleanly() {
    sigint_while_writing(&Packer::v1_9_4(true));
}

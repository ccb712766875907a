//! A conformance harness of our own: Packer's side of the plugin protocol exactly as
//! docs/protocol.md describes it (yamux client, broker id 0, msgpack net/rpc, Ui/Artifact callback
//! server on our broker id 1, dialling the result artifact), run against the real
//! `packer-plugin-amikey` binary started with the magic cookie.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amikey::core::config::{FIELDS, FieldKind};
use amikey::wire::codec::{as_text, map_get, str_value, struct_value};
use amikey::wire::conn::{RpcClient, Service, serve_rpc};
use amikey::wire::handshake::{MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE};
use amikey::wire::hcl_spec::{self, CtyType};
use amikey::wire::mux::{FrameHeader, FrameType, Mode, MuxBroker, MuxSession, flags};
use futures::future::BoxFuture;
use rmpv::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio_util::compat::TokioAsyncReadCompatExt;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_packer-plugin-amikey");
pub(crate) const T: Duration = Duration::from_secs(20);

pub(crate) struct Plugin {
    pub(crate) child: Child,
    pub(crate) line: String,
    pub(crate) stderr: Arc<Mutex<String>>,
}

impl Plugin {
    pub(crate) async fn start(args: &[&str], env: &[(&str, &str)]) -> Plugin {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
            .env("AMIKEY_LOG", "debug")
            // Keep the AWS SDK away from real credentials and the instance metadata service.
            .env("AWS_ACCESS_KEY_ID", "AKIDCONFORMANCE")
            .env("AWS_SECRET_ACCESS_KEY", "conformance")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn plugin");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = err_lines.next_line().await {
                sink.lock().unwrap().push_str(&format!("{l}\n"));
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::time::timeout(T, out.read_line(&mut line)).await.expect("handshake line in time").unwrap();
        // Anything after the handshake line would be stdout pollution.
        tokio::spawn(async move {
            let mut rest = String::new();
            let _ = out.read_to_string(&mut rest).await;
            assert!(rest.is_empty(), "stdout after the handshake: {rest:?}");
        });
        Plugin { child, line: line.trim_end().to_string(), stderr }
    }

    fn socket(&self) -> String {
        self.line.rsplit('|').next().unwrap().to_string()
    }

    pub(crate) async fn connect(&self) -> Packer {
        let stream = tokio::net::UnixStream::connect(self.socket()).await.unwrap();
        Packer::over(stream).await
    }
}

/// Packer's side of one session.
pub(crate) struct Packer {
    broker: MuxBroker,
    main: RpcClient,
}

impl Packer {
    async fn over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(s: S) -> Packer {
        let (session, inbound, _driver) = MuxSession::start(s.compat(), Mode::Client);
        let broker = MuxBroker::new(session, inbound);
        let main = RpcClient::new(broker.dial(0).await.expect("broker id 0"));
        Packer { broker, main }
    }

    pub(crate) async fn call(&self, method: &str, body: Value) -> Result<Value, String> {
        tokio::time::timeout(T, self.main.call(method, body))
            .await
            .expect("reply in time")
            .map_err(|e| e.to_string())
    }

    async fn configure(&self, configs: Vec<Value>) -> Result<Value, String> {
        self.call("PostProcessor.Configure", struct_value(vec![("Configs", Value::Array(configs))])).await
    }

    /// Serves `svc` as Packer's Ui/Artifact server on our broker id and returns the id.
    fn serve_callbacks(&self, svc: Arc<FakeArtifact>) -> u32 {
        let id = self.broker.next_id();
        let broker = self.broker.clone();
        tokio::spawn(async move {
            let stream = broker.accept(id).await.expect("plugin dials our Ui/Artifact id");
            let _ = serve_rpc(stream, svc).await;
        });
        id
    }
}

/// Packer's input artifact + Ui, recording every call.
struct FakeArtifact {
    builder_id: String,
    id: String,
    calls: Mutex<Vec<(String, String)>>,
    /// When set, `Artifact.Id` never answers (to hold PostProcess open for Cancel).
    hang_on_id: bool,
    builder_id_asked: Notify,
}

impl FakeArtifact {
    fn new(builder_id: &str, id: &str) -> Arc<FakeArtifact> {
        Arc::new(FakeArtifact {
            builder_id: builder_id.into(),
            id: id.into(),
            calls: Mutex::new(Vec::new()),
            hang_on_id: false,
            builder_id_asked: Notify::new(),
        })
    }
}

impl Service for FakeArtifact {
    fn call(self: Arc<Self>, method: String, body: Value) -> BoxFuture<'static, Result<Value, String>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push((method.clone(), as_text(&body).unwrap_or_default()));
            match method.as_str() {
                "Ui.Say" | "Ui.Message" | "Ui.Error" | "Ui.Machine" => Ok(Value::Nil),
                "Artifact.BuilderId" => {
                    self.builder_id_asked.notify_one();
                    Ok(str_value(&self.builder_id))
                }
                "Artifact.Id" => {
                    if self.hang_on_id {
                        futures::future::pending::<()>().await;
                    }
                    Ok(str_value(&self.id))
                }
                "Artifact.String" => Ok(str_value("AMIs were created:\n")),
                "Artifact.Files" => Ok(Value::Array(vec![])),
                "Artifact.State" => Ok(Value::Nil),
                other => Err(format!("rpc: can't find method {other}")),
            }
        })
    }
}

fn packer_json_args(user: Value) -> Vec<Value> {
    vec![
        user,
        struct_value(vec![
            ("packer_build_name", str_value("amazon-ebs")),
            ("packer_builder_type", str_value("amazon-ebs")),
            ("packer_core_version", str_value("1.6.6")),
            ("packer_debug", Value::Boolean(false)),
            ("packer_force", Value::Boolean(false)),
            ("packer_on_error", str_value("")),
            ("packer_template_path", str_value("/tmp/t.json")),
            (
                "packer_user_variables",
                struct_value(vec![("", str_value("")), ("key", str_value("alias/amikey"))]),
            ),
        ]),
        struct_value(vec![("ID", str_value("Build_ID. To set this dynamically…"))]),
    ]
}

fn hcl2_args(value: serde_json::Value) -> Vec<Value> {
    let mut types = serde_json::Map::new();
    let mut full = serde_json::Map::new();
    for f in FIELDS.iter().filter(|f| !matches!(f.kind, FieldKind::Blocks(_))) {
        let t = match f.kind.hcl() {
            "list(string)" => serde_json::json!(["list", "string"]),
            "map(string)" => serde_json::json!(["map", "string"]),
            s => serde_json::json!(s),
        };
        types.insert(f.name.into(), t);
        full.insert(f.name.into(), value.get(f.name).cloned().unwrap_or(serde_json::Value::Null));
    }
    let cty = serde_json::json!({"value": full, "type": ["object", types]});
    vec![
        struct_value(vec![
            ("packer_build_name", str_value("n")),
            ("packer_builder_type", str_value("amazon-ebs")),
        ]),
        Value::Binary(serde_json::to_vec(&cty).unwrap()),
    ]
}

fn expected_spec() -> Vec<hcl_spec::AttrSpec> {
    let mut v = amikey::postprocessor::config_spec();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn post_process_err(reply: &Value) -> Option<String> {
    map_get(reply, "Err").and_then(|e| map_get(e, "Message")).and_then(as_text)
}

/// The environment Packer 1.6.x gives every plugin (its main.go clears both before wrapping).
const PACKER_1_6_ENV: &[(&str, &str)] = &[("PACKER_LOG", ""), ("PACKER_LOG_PATH", "")];

#[tokio::test]
async fn legacy_start_prints_three_fields_and_serves_a_gob_spec_of_the_attributes_without_blocks() {
    let plugin = Plugin::start(&[], PACKER_1_6_ENV).await;
    assert!(plugin.line.starts_with("5|unix|/"), "{}", plugin.line);
    let packer = plugin.connect().await;
    // The socket is unlinked once the connection is accepted.
    assert!(!std::path::Path::new(&plugin.socket()).exists());
    let reply = packer.call("PostProcessor.ConfigSpec", Value::Nil).await.unwrap();
    let Some(Value::Binary(gob)) = map_get(&reply, "ConfigSpec") else {
        panic!("no bin ConfigSpec: {reply}")
    };
    let (spec, blocks) = hcl_spec::decode_gob_spec_with_blocks(gob).unwrap();
    assert_eq!(spec, expected_spec());
    // Packer 1.6.x cannot decode a nested object spec (it crashes): no blocks for it
    // (docs/protocol.md §7); every attribute is there.
    assert_eq!(blocks, []);
    assert!(!amikey::postprocessor::config_blocks().is_empty());
    assert_eq!(spec.len() + amikey::postprocessor::config_blocks().len(), FIELDS.len());
    for (a, f) in spec.iter().zip({
        let mut f: Vec<_> =
            FIELDS.iter().filter(|f| !matches!(f.kind, FieldKind::Blocks(_))).copied().collect();
        f.sort_by_key(|f| f.name);
        f
    }) {
        assert_eq!(a.name, f.name);
        let want = match f.kind.hcl() {
            "string" => CtyType::String,
            "bool" => CtyType::Bool,
            "number" => CtyType::Number,
            "list(string)" => CtyType::List(Box::new(CtyType::String)),
            _ => CtyType::Map(Box::new(CtyType::String)),
        };
        assert_eq!(a.ty, want, "{}", f.name);
        assert!(!a.required);
    }
}

#[tokio::test]
async fn legacy_name_under_packer_1_7_plus_prints_four_fields_and_1_6_gets_a_rename_hint() {
    // Packer 1.9.4 passes the user's PACKER_LOG/PACKER_LOG_PATH through, or nothing.
    for env in
        [&[][..], &[("PACKER_LOG", "1")][..], &[("PACKER_LOG", "1"), ("PACKER_LOG_PATH", "/tmp/x.log")][..]]
    {
        let plugin = Plugin::start(&[], env).await;
        assert!(plugin.line.starts_with("5|0|unix|/"), "{env:?}: {}", plugin.line);
        let packer = plugin.connect().await;
        let reply = packer.call("PostProcessor.ConfigSpec", Value::Nil).await.unwrap();
        let Some(Value::Binary(gob)) = map_get(&reply, "ConfigSpec") else { panic!() };
        assert_eq!(hcl_spec::decode_gob_spec(gob).unwrap(), expected_spec());
        assert!(!plugin.stderr.lock().unwrap().contains("rename"), "{env:?}");
    }
    let plugin = Plugin::start(&[], PACKER_1_6_ENV).await;
    assert!(plugin.line.starts_with("5|unix|/"), "{}", plugin.line);
    let _packer = plugin.connect().await;
    let deadline = tokio::time::Instant::now() + T;
    while !plugin.stderr.lock().unwrap().contains("rename the binary") {
        assert!(tokio::time::Instant::now() < deadline, "no rename hint: {}", plugin.stderr.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = plugin.stderr.lock().unwrap().clone();
    assert!(err.contains("packer-post-processor-amikey to packer-plugin-amikey"), "{err}");
    // AMIKEY_HANDSHAKE=4 overrides the guess.
    let plugin = Plugin::start(&[], &[PACKER_1_6_ENV[0], PACKER_1_6_ENV[1], ("AMIKEY_HANDSHAKE", "4")]).await;
    assert!(plugin.line.starts_with("5|0|unix|/"), "{}", plugin.line);
}

#[tokio::test]
async fn modern_start_prints_four_fields_and_serves_a_protobuf_spec() {
    let plugin =
        Plugin::start(&["start", "post-processor", "--protobuf", "-packer-default-plugin-name-"], &[]).await;
    assert!(plugin.line.starts_with("5|0|unix|/"), "{}", plugin.line);
    let packer = plugin.connect().await;
    let reply = packer.call("PostProcessor.ConfigSpec", Value::Nil).await.unwrap();
    let Some(Value::Binary(pb)) = map_get(&reply, "ConfigSpec") else { panic!("no bin ConfigSpec") };
    assert_eq!(
        hcl_spec::decode_proto_spec_with_blocks(pb).unwrap(),
        (expected_spec(), amikey::postprocessor::config_blocks())
    );
}

#[tokio::test]
async fn modern_start_without_protobuf_uses_gob_and_env_forces_three_fields() {
    let plugin = Plugin::start(&["start", "post-processor", "amikey"], &[("AMIKEY_HANDSHAKE", "3")]).await;
    assert!(plugin.line.starts_with("5|unix|/"), "{}", plugin.line);
    let packer = plugin.connect().await;
    let reply = packer.call("PostProcessor.ConfigSpec", Value::Nil).await.unwrap();
    let Some(Value::Binary(gob)) = map_get(&reply, "ConfigSpec") else { panic!() };
    assert_eq!(hcl_spec::decode_gob_spec(gob).unwrap(), expected_spec());
}

#[tokio::test]
async fn json_mode_configure_renders_templates_and_names_bad_keys() {
    let plugin = Plugin::start(&[], &[]).await;
    let packer = plugin.connect().await;
    let ok = struct_value(vec![
        ("kms_key_id", str_value("{{user `key`}}")),
        ("max_retries", Value::F64(3.0)),
        ("ssm_path", str_value("/amis/{{build_name}}")),
        ("ami_users", Value::Array(vec![str_value("111122223333")])),
    ]);
    assert_eq!(packer.configure(packer_json_args(ok)).await, Ok(Value::Nil));
    // nil block (no keys at all) is fine too.
    assert_eq!(packer.configure(packer_json_args(Value::Nil)).await, Ok(Value::Nil));

    let unknown = struct_value(vec![("kms_key", str_value("alias/x"))]);
    let e = packer.configure(packer_json_args(unknown)).await.unwrap_err();
    assert!(e.contains("`kms_key`"), "{e}");
    let wrong = struct_value(vec![("ami_users", str_value("111122223333"))]);
    let e = packer.configure(packer_json_args(wrong)).await.unwrap_err();
    assert!(e.contains("`ami_users` must be list(string)"), "{e}");
    let func = struct_value(vec![("ssm_path", str_value("/x/{{isotime}}"))]);
    let e = packer.configure(packer_json_args(func)).await.unwrap_err();
    assert!(e.contains("isotime"), "{e}");
}

#[tokio::test]
async fn hcl2_mode_configure_twice_with_unknowns_first() {
    let plugin = Plugin::start(&[], &[]).await;
    let packer = plugin.connect().await;
    packer.call("PostProcessor.ConfigSpec", Value::Nil).await.unwrap();
    let first =
        serde_json::json!({"kms_key_id": "alias/amikey", "ssm_path": "/amis/<unknown>", "max_retries": 2});
    assert_eq!(packer.configure(hcl2_args(first)).await, Ok(Value::Nil));
    packer.call("PostProcessor.ConfigSpec", Value::Nil).await.unwrap();
    let second =
        serde_json::json!({"kms_key_id": "alias/amikey", "ssm_path": "/amis/Null", "max_retries": 2});
    assert_eq!(packer.configure(hcl2_args(second)).await, Ok(Value::Nil));

    let wrong = serde_json::json!({"max_retries": "many"});
    let e = packer.configure(hcl2_args(wrong)).await.unwrap_err();
    assert!(e.contains("`max_retries`"), "{e}");
    let mut args = hcl2_args(serde_json::json!({}));
    args[1] = Value::Binary(br#"{"value":{"nope":"x"},"type":["object",{"nope":"string"}]}"#.to_vec());
    let e = packer.configure(args).await.unwrap_err();
    assert!(e.contains("`nope`"), "{e}");
}

#[tokio::test]
async fn post_process_refuses_a_non_amazon_builder_through_ui_artifact_callbacks() {
    let plugin = Plugin::start(&[], &[]).await;
    let packer = plugin.connect().await;
    packer.configure(packer_json_args(Value::Nil)).await.unwrap();
    let fake = FakeArtifact::new("fnoeding.null", "Null");
    let id = packer.serve_callbacks(fake.clone());
    assert_eq!(id, 1);
    let reply = packer.call("PostProcessor.PostProcess", Value::from(id)).await.unwrap();
    let err = post_process_err(&reply).expect("an Err");
    assert!(err.contains("unsupported builder \"fnoeding.null\""), "{err}");
    assert_eq!(map_get(&reply, "StreamId").and_then(Value::as_u64), Some(0));
    assert_eq!(map_get(&reply, "Keep"), Some(&Value::Boolean(false)));
    assert!(fake.calls.lock().unwrap().iter().any(|(m, _)| m == "Artifact.BuilderId"));
}

#[tokio::test]
async fn post_process_engine_failure_is_a_clean_error_not_a_hang() {
    let plugin = Plugin::start(&[], &[]).await;
    let packer = plugin.connect().await;
    let cfg = struct_value(vec![
        ("kms_key_id", str_value("alias/amikey")),
        ("region", str_value("us-east-1")),
        ("endpoint_url", str_value("http://127.0.0.1:1")),
        ("max_retries", Value::from(1)),
    ]);
    packer.configure(packer_json_args(cfg)).await.unwrap();
    let fake = FakeArtifact::new("mitchellh.amazonebs", "us-east-1:ami-0123456789abcdef0");
    let id = packer.serve_callbacks(fake.clone());
    let reply = packer.call("PostProcessor.PostProcess", Value::from(id)).await.unwrap();
    let err = post_process_err(&reply).expect("an Err");
    assert!(err.starts_with("amikey"), "{err}");
    assert!(err.contains("Packer will now delete"), "{err}");
    let calls = fake.calls.lock().unwrap().clone();
    assert!(
        calls.iter().any(|(m, a)| m.starts_with("Ui.") && a.contains("ami-0123456789abcdef0")),
        "the user is told which AMIs are checked: {calls:?}"
    );
}

#[tokio::test]
async fn cancel_is_served_while_post_process_runs() {
    let plugin = Plugin::start(&[], &[]).await;
    let packer = Arc::new(plugin.connect().await);
    packer.configure(packer_json_args(Value::Nil)).await.unwrap();
    let fake = Arc::new(FakeArtifact {
        hang_on_id: true,
        ..Arc::into_inner(FakeArtifact::new("mitchellh.amazonebs", "x")).unwrap()
    });
    let id = packer.serve_callbacks(fake.clone());
    let pp = tokio::spawn({
        let packer = packer.clone();
        async move { packer.call("PostProcessor.PostProcess", Value::from(id)).await }
    });
    tokio::time::timeout(T, fake.builder_id_asked.notified()).await.unwrap();
    assert_eq!(packer.call("PostProcessor.Cancel", Value::Nil).await, Ok(Value::Nil));
    let reply = tokio::time::timeout(Duration::from_secs(5), pp).await.unwrap().unwrap().unwrap();
    let err = post_process_err(&reply).expect("an Err");
    assert!(err.contains("cancelled"), "{err}");
}

#[tokio::test]
async fn unknown_methods_get_go_s_error() {
    let plugin = Plugin::start(&[], &[]).await;
    let packer = plugin.connect().await;
    let e = packer.call("PostProcessor.Bogus", Value::Nil).await.unwrap_err();
    assert_eq!(e, "rpc: can't find method PostProcessor.Bogus");
    // The stream is still in sync afterwards.
    assert!(packer.call("PostProcessor.ConfigSpec", Value::Nil).await.is_ok());
}

#[tokio::test]
async fn a_yamux_ping_is_answered() {
    let plugin = Plugin::start(&[], &[]).await;
    let mut s = tokio::net::UnixStream::connect(plugin.socket()).await.unwrap();
    let ping = FrameHeader { kind: FrameType::Ping, flags: flags::SYN, stream_id: 0, length: 0x1234 };
    s.write_all(&ping.encode()).await.unwrap();
    let mut buf = Vec::new();
    let answered = tokio::time::timeout(T, async {
        loop {
            let mut chunk = [0u8; 1024];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "plugin closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            while let Some((h, _, used)) = FrameHeader::decode_frame(&buf).unwrap() {
                buf.drain(..used);
                if h.kind == FrameType::Ping && h.has(flags::ACK) && h.length == 0x1234 {
                    return;
                }
            }
        }
    })
    .await;
    assert!(answered.is_ok(), "no Ping ACK");
}

#[tokio::test]
async fn garbage_after_the_handshake_makes_the_plugin_exit_with_an_error() {
    let mut plugin = Plugin::start(&[], &[]).await;
    let mut s = tokio::net::UnixStream::connect(plugin.socket()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let status = tokio::time::timeout(T, plugin.child.wait()).await.expect("exits").unwrap();
    assert!(!status.success());
    assert!(plugin.stderr.lock().unwrap().contains("yamux"), "{}", plugin.stderr.lock().unwrap());
}

#[tokio::test]
async fn closing_the_session_exits_cleanly() {
    let mut plugin = Plugin::start(&[], &[]).await;
    let packer = plugin.connect().await;
    packer.call("PostProcessor.ConfigSpec", Value::Nil).await.unwrap();
    packer.broker.session().close();
    let status = tokio::time::timeout(T, plugin.child.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "{}", plugin.stderr.lock().unwrap());
}

#[tokio::test]
async fn without_the_cookie_it_refuses_and_describe_needs_none() {
    let out = Command::new(BIN).env_clear().output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Please do not execute plugins directly"));

    let out = Command::new(BIN).arg("describe").env_clear().output().await.unwrap();
    assert!(out.status.success());
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["api_version"], "x5.0");
    assert_eq!(d["protocol_version"], "v2");
    assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(d["post_processors"], serde_json::json!(["-packer-default-plugin-name-"]));

    let out = Command::new(BIN).arg("--help").env_clear().output().await.unwrap();
    assert!(out.status.success() && out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("packer plugins install"));
}

/// The result artifact (served on a fresh broker id) cannot be reached through the binary until
/// the engine can succeed without AWS, so this drives `wire::server::serve` in-process with a
/// stand-in post-processor.
mod result_artifact {
    use super::*;
    use amikey::wire::{
        AttrSpec, ConfigureRequest, InputArtifact, PostProcessContext, PostProcessor, ResultArtifact, Ui,
    };

    struct Stub;

    impl PostProcessor for Stub {
        fn config_spec(&self) -> Vec<AttrSpec> {
            vec![]
        }
        fn configure(&self, _: ConfigureRequest) -> Result<(), String> {
            Ok(())
        }
        async fn post_process<U: Ui + 'static, A: InputArtifact + 'static>(
            &self,
            ctx: PostProcessContext<U, A>,
        ) -> Result<ResultArtifact, String> {
            ctx.ui.say("stub: hello").await?;
            let id = ctx.input.id().await?;
            Ok(ResultArtifact {
                builder_id: ctx.input.builder_id().await?,
                id,
                string: "stub artifact".into(),
                files: vec!["/tmp/f".into()],
                state: BTreeMap::from([(
                    "generated_data".to_string(),
                    serde_json::json!({"KmsKeyArn_us_east_1": "arn:k"}),
                )]),
                keep: true,
                force_override: true,
            })
        }
    }

    #[tokio::test]
    async fn result_artifact_is_served_on_a_fresh_broker_id() {
        let (a, b) = tokio::io::duplex(1 << 16);
        tokio::spawn(amikey::wire::server::serve(a, Arc::new(Stub), hcl_spec::SpecEncoding::Gob));
        let packer = Packer::over(b).await;
        let fake = FakeArtifact::new("mitchellh.amazonebs", "us-east-1:ami-0123456789abcdef0");
        let id = packer.serve_callbacks(fake.clone());
        let reply = packer.call("PostProcessor.PostProcess", Value::from(id)).await.unwrap();
        assert_eq!(map_get(&reply, "Err"), Some(&Value::Nil));
        assert_eq!(map_get(&reply, "Keep"), Some(&Value::Boolean(true)));
        assert_eq!(map_get(&reply, "ForceOverride"), Some(&Value::Boolean(true)));
        let stream_id = map_get(&reply, "StreamId").and_then(Value::as_u64).unwrap() as u32;
        assert_eq!(stream_id, 1, "the plugin's own counter starts at 1");
        let art = RpcClient::new(packer.broker.dial(stream_id).await.unwrap());
        let text = |v: Value| as_text(&v).unwrap();
        assert_eq!(text(art.call("Artifact.BuilderId", Value::Nil).await.unwrap()), "mitchellh.amazonebs");
        assert_eq!(
            text(art.call("Artifact.Id", Value::Nil).await.unwrap()),
            "us-east-1:ami-0123456789abcdef0"
        );
        assert_eq!(text(art.call("Artifact.String", Value::Nil).await.unwrap()), "stub artifact");
        assert_eq!(
            art.call("Artifact.Files", Value::Nil).await.unwrap(),
            Value::Array(vec![str_value("/tmp/f")])
        );
        let gd = art.call("Artifact.State", str_value("generated_data")).await.unwrap();
        assert_eq!(map_get(&gd, "KmsKeyArn_us_east_1").and_then(as_text).as_deref(), Some("arn:k"));
        assert_eq!(art.call("Artifact.State", str_value("nope")).await.unwrap(), Value::Nil);
        assert_eq!(art.call("Artifact.Destroy", Value::Nil).await.unwrap(), Value::Nil);
        assert!(fake.calls.lock().unwrap().iter().any(|(m, a)| m == "Ui.Say" && a == "stub: hello"));
    }
}

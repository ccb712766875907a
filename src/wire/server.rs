//! The plugin side of a Packer session: accept broker id 0, serve the `PostProcessor` service on
//! it, dial Packer's Ui/Artifact server for each `PostProcess`, and serve the result artifact on
//! a fresh broker id; or serve the `Datasource` service (`ConfigSpec`, `OutputSpec`,
//! `Configure`, `Execute`, `Cancel`, SDK `rpc/datasource.go`), which needs no callbacks.
//!
//! Every request runs in its own task ([`conn::serve_rpc`]), so `PostProcessor.Cancel` is seen
//! while `PostProcess` runs. Replies mirror the SDK's `rpc/post_processor.go`:
//! `PostProcess` answers `{Err, Keep, ForceOverride, StreamId}`; the acceptor for `StreamId` is
//! armed when the reply is sent (a 5 s timer started earlier once expired and Packer hung,
//! docs/protocol.md §3). The session ending (Packer gone, EOF, garbage) ends [`serve`]; pending work
//! is cancelled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use rmpv::Value;
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;

use super::codec::{self, as_text, map_get, str_value, struct_value, to_json};
use super::conn::{self, ConnError, RpcClient, Service};
use super::handshake::Io;
use super::hcl_spec::{self, SpecEncoding};
use super::mux::{Mode, MuxBroker, MuxError, MuxSession};
use super::{
    ConfigureRequest, Datasource, InputArtifact, PackerConfig, PostProcessContext, PostProcessor,
    ResultArtifact, Ui,
};

/// Why serving ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The yamux session or broker failed.
    #[error(transparent)]
    Mux(#[from] MuxError),
    /// The main RPC stream carried garbage.
    #[error(transparent)]
    Rpc(#[from] ConnError),
}

/// Serves one Packer connection until the session ends. `Ok` when Packer closed it cleanly.
pub async fn serve<P: PostProcessor, T: Io + 'static>(
    io: T,
    pp: Arc<P>,
    spec: SpecEncoding,
) -> Result<(), ServeError> {
    serve_with(io, "PostProcessor", |broker, session_end| {
        Arc::new(PostProcessorServer { pp, broker, spec, cancel: Mutex::new(session_end.child_token()) })
    })
    .await
}

/// Serves one data source (`start datasource [--protobuf] NAME`) until the session ends.
pub async fn serve_datasource<D: Datasource, T: Io + 'static>(
    io: T,
    ds: Arc<D>,
    spec: SpecEncoding,
) -> Result<(), ServeError> {
    serve_with(io, "Datasource", |_broker, session_end| {
        Arc::new(DatasourceServer { ds, spec, cancel: Mutex::new(session_end.child_token()) })
    })
    .await
}

/// The session around one service on broker id 0: `make` gets the broker and a token
/// cancelled when the session ends.
async fn serve_with<S: Service, T: Io + 'static>(
    io: T,
    name: &str,
    make: impl FnOnce(MuxBroker, &CancellationToken) -> Arc<S>,
) -> Result<(), ServeError> {
    let (session, inbound, mut driver) = MuxSession::start(io.compat(), Mode::Server);
    let broker = MuxBroker::new(session.clone(), inbound);
    let session_end = CancellationToken::new();
    let main = tokio::select! {
        r = broker.accept(0) => r?,
        d = &mut driver => {
            return match d {
                Ok(r) => r.map_err(ServeError::from),
                Err(e) => Err(MuxError::Io { id: 0, source: std::io::Error::other(e) }.into()),
            };
        }
    };
    tracing::debug!("broker id 0 accepted; serving {name}");
    let service = make(broker, &session_end);
    let rpc = conn::serve_rpc(main, service);
    tokio::pin!(rpc);
    let result = tokio::select! {
        d = &mut driver => match d {
            Ok(r) => r.map_err(ServeError::from),
            Err(e) => Err(MuxError::Io { id: 0, source: std::io::Error::other(e) }.into()),
        },
        r = &mut rpc => match r {
            // Packer closed the main stream: wait for the session to end.
            Ok(()) => match (&mut driver).await {
                Ok(r) => r.map_err(ServeError::from),
                Err(e) => Err(MuxError::Io { id: 0, source: std::io::Error::other(e) }.into()),
            },
            Err(e) => {
                session.close();
                Err(e.into())
            }
        },
    };
    session_end.cancel();
    match result {
        Err(e) if closed_by_peer(&e) => {
            tracing::info!("Packer reset the connection ({e}): the session is over");
            Ok(())
        }
        other => other,
    }
}

/// True when the session ended because Packer's side went away abruptly (a reset connection or
/// a broken pipe): Packer closing a socket with unread data resets it, which ends the session
/// as surely as a clean close. Garbage on the wire is never this.
fn closed_by_peer(e: &ServeError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) {
                return true;
            }
            // An io::Error wrapping another error (yamux's own) keeps it behind `get_ref`.
            if let Some(inner) = io.get_ref() {
                cur = Some(inner);
                continue;
            }
        }
        cur = err.source();
    }
    false
}

/// `Datasource.*` method names, spelled as in Go (SDK `rpc/datasource.go`, endpoint
/// `Datasource` from `rpc/server.go`).
pub mod datasource_methods {
    /// `Datasource.ConfigSpec` (the SDK's `commonServer.ConfigSpec`).
    pub const CONFIG_SPEC: &str = "Datasource.ConfigSpec";
    /// `Datasource.OutputSpec`
    pub const OUTPUT_SPEC: &str = "Datasource.OutputSpec";
    /// `Datasource.Configure`
    pub const CONFIGURE: &str = "Datasource.Configure";
    /// `Datasource.Execute`
    pub const EXECUTE: &str = "Datasource.Execute";
    /// `Datasource.Cancel`
    pub const CANCEL: &str = "Datasource.Cancel";
}

struct DatasourceServer<D> {
    ds: Arc<D>,
    spec: SpecEncoding,
    cancel: Mutex<CancellationToken>,
}

/// Decodes `DatasourceConfigureArgs{Configs []interface{}}`: Packer passes one cty JSON blob
/// (`datasource.Configure(decoded)` in `hcl2template`), a msgpack bin (or str).
pub fn parse_datasource_configure(body: &Value) -> Result<serde_json::Value, String> {
    let configs: &[Value] = match map_get(body, "Configs") {
        Some(Value::Array(a)) => a,
        _ => return Err("Datasource.Configure: Configs is not a list".into()),
    };
    let blob = configs.iter().find_map(|c| match c {
        Value::Binary(b) => Some(b.clone()),
        Value::String(s) => s.as_str().map(|s| s.as_bytes().to_vec()),
        _ => None,
    });
    let Some(bytes) = blob else {
        return Err("Datasource.Configure: no cty JSON configuration in Configs".into());
    };
    let cty = super::cty::decode(&bytes).map_err(|e| e.to_string())?;
    if cty.has_unknowns {
        return Err("the data source block uses values that are not known yet (build.* or another unknown); give it literal values, variables or locals".into());
    }
    Ok(cty.value)
}

impl<D: Datasource> Service for DatasourceServer<D> {
    fn call(self: Arc<Self>, method: String, body: Value) -> BoxFuture<'static, Result<Value, String>> {
        use datasource_methods as m;
        Box::pin(async move {
            match method.as_str() {
                m::CONFIG_SPEC => {
                    let bytes = hcl_spec::encode_spec(&self.ds.config_spec(), self.spec);
                    Ok(struct_value(vec![("ConfigSpec", Value::Binary(bytes))]))
                }
                m::OUTPUT_SPEC => {
                    let bytes = hcl_spec::encode_spec(&self.ds.output_spec(), self.spec);
                    Ok(struct_value(vec![("OutputSpec", Value::Binary(bytes))]))
                }
                m::CONFIGURE => {
                    let config = parse_datasource_configure(&body)?;
                    self.ds.configure(config)?;
                    Ok(struct_value(vec![("Error", Value::Nil)]))
                }
                m::EXECUTE => {
                    let cancel = match self.cancel.lock() {
                        Ok(c) => c.clone(),
                        Err(_) => CancellationToken::new(),
                    };
                    let values = self.ds.execute(cancel).await?;
                    // protobuf: go-cty msgpack typed as DynamicPseudoType; gob: the cty.Value's
                    // own gob (SDK `rpc/datasource.go`).
                    let spec = self.ds.output_spec();
                    let encoded = match self.spec {
                        SpecEncoding::Protobuf => super::cty_msgpack::encode_dynamic_object(&spec, &values),
                        SpecEncoding::Gob | SpecEncoding::GobLegacy => {
                            super::cty_gob::encode_execute_value(&spec, &values)
                        }
                    };
                    let bytes = encoded
                        .map_err(|e| format!("the data source's result does not fit its output spec: {e}"))?;
                    Ok(struct_value(vec![("Value", Value::Binary(bytes)), ("Error", Value::Nil)]))
                }
                m::CANCEL => {
                    if let Ok(mut c) = self.cancel.lock() {
                        tracing::info!("Datasource.Cancel: cancelling the running execute");
                        c.cancel();
                        *c = CancellationToken::new();
                    }
                    Ok(Value::Nil)
                }
                other => Err(conn::unknown_method(other)),
            }
        })
    }
}

struct PostProcessorServer<P> {
    pp: Arc<P>,
    broker: MuxBroker,
    spec: SpecEncoding,
    /// The token handed to the running `PostProcess`; `Cancel` cancels and replaces it.
    cancel: Mutex<CancellationToken>,
}

/// Method names, spelled as in Go.
pub mod methods {
    /// `PostProcessor.ConfigSpec`
    pub const CONFIG_SPEC: &str = "PostProcessor.ConfigSpec";
    /// `PostProcessor.Configure`
    pub const CONFIGURE: &str = "PostProcessor.Configure";
    /// `PostProcessor.PostProcess`
    pub const POST_PROCESS: &str = "PostProcessor.PostProcess";
    /// `PostProcessor.Cancel`
    pub const CANCEL: &str = "PostProcessor.Cancel";
}

impl<P: PostProcessor> Service for PostProcessorServer<P> {
    fn call(self: Arc<Self>, method: String, body: Value) -> BoxFuture<'static, Result<Value, String>> {
        Box::pin(async move {
            match method.as_str() {
                methods::CONFIG_SPEC => {
                    let bytes = hcl_spec::encode_spec_with_blocks(
                        &self.pp.config_spec(),
                        &self.pp.config_blocks(),
                        self.spec,
                    );
                    Ok(struct_value(vec![("ConfigSpec", Value::Binary(bytes))]))
                }
                methods::CONFIGURE => {
                    let req = parse_configure(&body)?;
                    let pp = self.pp.clone();
                    pp.configure(req).map(|()| Value::Nil)
                }
                methods::POST_PROCESS => Ok(self.post_process(body).await),
                methods::CANCEL => {
                    if let Ok(mut c) = self.cancel.lock() {
                        tracing::info!("PostProcessor.Cancel: cancelling the running post-process");
                        c.cancel();
                        *c = CancellationToken::new();
                    }
                    Ok(Value::Nil)
                }
                other => Err(conn::unknown_method(other)),
            }
        })
    }
}

fn process_response(err: Option<String>, keep: bool, force: bool, stream_id: u32) -> Value {
    let err = match err {
        Some(m) => struct_value(vec![("Message", str_value(&m))]),
        None => Value::Nil,
    };
    struct_value(vec![
        ("Err", err),
        ("Keep", Value::Boolean(keep)),
        ("ForceOverride", Value::Boolean(force)),
        ("StreamId", Value::from(stream_id)),
    ])
}

impl<P: PostProcessor> PostProcessorServer<P> {
    async fn post_process(&self, body: Value) -> Value {
        let Some(id) = body.as_u64().and_then(|v| u32::try_from(v).ok()) else {
            return process_response(
                Some(format!("PostProcess: expected a broker id, got {body}")),
                false,
                false,
                0,
            );
        };
        let cancel = match self.cancel.lock() {
            Ok(c) => c.clone(),
            Err(_) => CancellationToken::new(),
        };
        // Dial at once: Packer's acceptor for `id` gives up after 5 s.
        let client = match self.broker.dial(id).await {
            Ok(s) => RpcClient::new(s),
            Err(e) => {
                return process_response(
                    Some(format!("cannot reach Packer's Ui/Artifact server: {e}")),
                    false,
                    false,
                    0,
                );
            }
        };
        let ctx =
            PostProcessContext { ui: RpcUi(client.clone()), input: RpcArtifact(client.clone()), cancel };
        let result = self.pp.post_process(ctx).await;
        client.close().await;
        match result {
            Ok(artifact) => {
                let stream_id = self.broker.next_id();
                let (keep, force) = (artifact.keep, artifact.force_override);
                let broker = self.broker.clone();
                // Armed now, as the reply goes out.
                tokio::spawn(async move {
                    match broker.accept(stream_id).await {
                        Ok(stream) => {
                            let svc = Arc::new(ArtifactServer(artifact));
                            if let Err(e) = conn::serve_rpc(stream, svc).await {
                                tracing::warn!("result artifact stream {stream_id}: {e}");
                            }
                        }
                        Err(e) => tracing::warn!("result artifact: {e}"),
                    }
                });
                process_response(None, keep, force, stream_id)
            }
            Err(message) => process_response(Some(message), false, false, 0),
        }
    }
}

/// Decodes `PostProcessorConfigureArgs{Configs []interface{}}` into a [`ConfigureRequest`].
pub fn parse_configure(body: &Value) -> Result<ConfigureRequest, String> {
    let configs: &[Value] = match map_get(body, "Configs") {
        Some(Value::Array(a)) => a,
        Some(Value::Nil) | None => &[],
        Some(other) => return Err(format!("Configure: Configs is not a list: {other}")),
    };
    // HCL2: [builder vars map, bin cty JSON]. A str is accepted too (codecs without WriteExt).
    if let [vars, blob @ (Value::Binary(_) | Value::String(_))] = configs {
        let bytes: Vec<u8> = match blob {
            Value::Binary(b) => b.clone(),
            Value::String(s) => s.as_bytes().to_vec(),
            _ => Vec::new(),
        };
        let cty = super::cty::decode(&bytes).map_err(|e| e.to_string())?;
        let builder_vars = match to_json(vars) {
            serde_json::Value::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        return Ok(ConfigureRequest::Hcl2 {
            builder_vars,
            config: cty.value,
            has_unknowns: cty.has_unknowns,
        });
    }
    let user = match configs.first().map(to_json) {
        None | Some(serde_json::Value::Null) => serde_json::Map::new(),
        Some(serde_json::Value::Object(m)) => m,
        Some(other) => {
            return Err(format!("Configure: the post-processor block is not a map: {other}"));
        }
    };
    let packer_map = configs.get(1).map(to_json).unwrap_or_default();
    let s = |k: &str| packer_map.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let user_variables = match packer_map.get("packer_user_variables") {
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .filter(|(k, _)| !k.is_empty())
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect(),
        _ => BTreeMap::new(),
    };
    let packer = PackerConfig {
        build_name: s("packer_build_name"),
        builder_type: s("packer_builder_type"),
        user_variables,
        core_version: s("packer_core_version"),
        template_path: s("packer_template_path"),
    };
    let placeholders = match configs.get(2).map(to_json) {
        Some(serde_json::Value::Object(m)) => {
            m.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string())).collect()
        }
        _ => BTreeMap::new(),
    };
    Ok(ConfigureRequest::Json { user, packer, placeholders })
}

/// Packer's `Ui` over RPC.
pub struct RpcUi(RpcClient);

impl Ui for RpcUi {
    async fn say(&self, msg: &str) -> Result<(), String> {
        self.0.call("Ui.Say", str_value(msg)).await.map(drop).map_err(|e| e.to_string())
    }
    async fn message(&self, msg: &str) -> Result<(), String> {
        self.0.call("Ui.Message", str_value(msg)).await.map(drop).map_err(|e| e.to_string())
    }
    async fn error(&self, msg: &str) -> Result<(), String> {
        self.0.call("Ui.Error", str_value(msg)).await.map(drop).map_err(|e| e.to_string())
    }
}

/// Packer's input `Artifact` over RPC.
pub struct RpcArtifact(RpcClient);

impl RpcArtifact {
    async fn text(&self, method: &str) -> Result<String, String> {
        let v = self.0.call(method, Value::Nil).await.map_err(|e| e.to_string())?;
        match v {
            Value::Nil => Ok(String::new()),
            v => as_text(&v).ok_or_else(|| format!("{method}: expected a string, got {v}")),
        }
    }
}

impl InputArtifact for RpcArtifact {
    async fn builder_id(&self) -> Result<String, String> {
        self.text("Artifact.BuilderId").await
    }
    async fn id(&self) -> Result<String, String> {
        self.text("Artifact.Id").await
    }
    async fn string(&self) -> Result<String, String> {
        self.text("Artifact.String").await
    }
    async fn state(&self, key: &str) -> Result<serde_json::Value, String> {
        let v = self.0.call("Artifact.State", str_value(key)).await.map_err(|e| e.to_string())?;
        Ok(to_json(&v))
    }
}

/// Serves a [`ResultArtifact`] as Packer's `Artifact` service.
struct ArtifactServer(ResultArtifact);

impl Service for ArtifactServer {
    fn call(self: Arc<Self>, method: String, body: Value) -> BoxFuture<'static, Result<Value, String>> {
        Box::pin(async move {
            let a = &self.0;
            match method.as_str() {
                "Artifact.BuilderId" => Ok(str_value(&a.builder_id)),
                "Artifact.Id" => Ok(str_value(&a.id)),
                "Artifact.String" => Ok(str_value(&a.string)),
                "Artifact.Files" => Ok(Value::Array(a.files.iter().map(|f| str_value(f)).collect())),
                "Artifact.State" => {
                    let key = as_text(&body).unwrap_or_default();
                    Ok(a.state.get(&key).map_or(Value::Nil, codec::from_json))
                }
                // Our artifact only points at the builder's AMIs; destroying them is the
                // builder artifact's job, so this is deliberately a no-op.
                "Artifact.Destroy" => Ok(Value::Nil),
                other => Err(conn::unknown_method(other)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_or_broken_connection_is_packer_going_away_garbage_is_not() {
        use std::io::{Error, ErrorKind};
        let mux = |source| ServeError::Mux(MuxError::Io { id: 0, source });
        // As the yamux driver reports it: its own error wrapping the socket's.
        assert!(closed_by_peer(&mux(Error::other(Error::from(ErrorKind::ConnectionReset)))));
        assert!(closed_by_peer(&mux(Error::from(ErrorKind::BrokenPipe))));
        assert!(!closed_by_peer(&mux(Error::from(ErrorKind::InvalidData))));
        assert!(!closed_by_peer(&mux(Error::other("yamux: bad frame header"))));
    }

    #[test]
    fn parses_the_captured_json_mode_configure() {
        let body = rmpv::Value::Map(vec![(
            str_value("Configs"),
            Value::Array(vec![
                struct_value(vec![
                    ("message", str_value("hello {{user `foo`}} {{build_name}}")),
                    ("count", Value::F64(3.0)),
                ]),
                struct_value(vec![
                    ("packer_build_name", str_value("null")),
                    ("packer_builder_type", str_value("null")),
                    (
                        "packer_user_variables",
                        struct_value(vec![("", str_value("")), ("foo", str_value("bar"))]),
                    ),
                ]),
                struct_value(vec![("ID", str_value("Build_ID. To set this dynamically…"))]),
            ]),
        )]);
        let ConfigureRequest::Json { user, packer, placeholders } = parse_configure(&body).unwrap() else {
            panic!("not JSON mode")
        };
        assert_eq!(user["count"], serde_json::json!(3.0));
        assert_eq!(packer.build_name, "null");
        assert_eq!(packer.user_variables.len(), 1);
        assert!(placeholders.contains_key("ID"));
    }

    #[test]
    fn parses_hcl2_mode_and_nil_configs() {
        let body = struct_value(vec![(
            "Configs",
            Value::Array(vec![
                struct_value(vec![("packer_build_name", str_value("n"))]),
                Value::Binary(br#"{"value":{"a":"<unknown>"},"type":["object",{"a":"string"}]}"#.to_vec()),
            ]),
        )]);
        let ConfigureRequest::Hcl2 { has_unknowns, config, .. } = parse_configure(&body).unwrap() else {
            panic!("not HCL2 mode")
        };
        assert!(has_unknowns);
        assert_eq!(config["a"], "<unknown>");
        let nil = struct_value(vec![("Configs", Value::Array(vec![Value::Nil]))]);
        assert!(matches!(parse_configure(&nil).unwrap(), ConfigureRequest::Json { .. }));
    }

    #[test]
    fn post_process_reply_shape() {
        let v = process_response(Some("boom".into()), false, false, 0);
        assert_eq!(
            map_get(&v, "Err").and_then(|e| map_get(e, "Message")).and_then(as_text).as_deref(),
            Some("boom")
        );
    }
}

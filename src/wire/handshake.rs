//! Process start: argv modes, the magic-cookie check, the listener, and the handshake line.
//!
//! * No arguments: a legacy `packer-post-processor-NAME` binary, which Packer 1.6.x and 1.7–1.9
//!   both discover and start the same way (argv is just the path, the environment the same
//!   cookie and port range) but which want different lines: 1.6.x the 3-field `5|unix|/path`,
//!   1.7 and later the 4-field one. One difference shows: Packer 1.6.x (and early 1.7.x) always
//!   passes `PACKER_LOG` and `PACKER_LOG_PATH` set and empty (its `main.go` clears them before
//!   re-executing itself), while later releases pass the user's values through or leave them
//!   unset. So: both present and empty → 3 fields (and a stderr line saying what to rename if
//!   this is a Packer 1.7.x, which then refuses it); anything else → 4 fields. Gob ConfigSpec
//!   either way (see [`no_args_handshake`]).
//! * `start post-processor [--protobuf] NAME`: modern Packer. 4-field line `5|0|unix|/path`;
//!   protobuf ConfigSpec iff `--protobuf` appears anywhere in argv (the SDK strips it from
//!   anywhere). Packer 1.6.6 also starts `packer-plugin-*` files this way but wants the 3-field
//!   line, and nothing in argv or env tells the two apart: set `AMIKEY_HANDSHAKE=3` for that.
//! * `start datasource [--protobuf] NAME`: modern Packer starting a data source; same line and
//!   encoding rules.
//! * `describe` needs no cookie; everything that serves does (docs/protocol.md §1).
//!
//! The socket lives in a fresh 0700 directory under the temp dir (`TMPDIR`); after the one
//! connection is accepted the listener is closed and the socket and directory are removed.
//! `AMIKEY_PLUGIN_TRANSPORT=tcp` (or a non-unix OS) listens on 127.0.0.1 in
//! `[PACKER_PLUGIN_MIN_PORT, PACKER_PLUGIN_MAX_PORT]` instead.

use std::path::PathBuf;

use super::hcl_spec::SpecEncoding;

/// The env var Packer sets for its plugins.
pub const MAGIC_COOKIE_KEY: &str = "PACKER_PLUGIN_MAGIC_COOKIE";
/// Its value.
pub const MAGIC_COOKIE_VALUE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// The SDK's message when the cookie is missing.
pub const NOT_UNDER_PACKER: &str =
    "Please do not execute plugins directly. Packer will execute these for you.";
/// Env override of the handshake line's shape (`3` or `4`).
pub const HANDSHAKE_ENV: &str = "AMIKEY_HANDSHAKE";

/// Which handshake line Packer expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeVersion {
    /// `5|network|address` (Packer 1.6.x).
    Legacy3,
    /// `5|0|network|address` (Packer ≥ 1.7).
    Modern4,
}

/// What argv asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// Print the describe JSON.
    Describe,
    /// Print help to stderr.
    Help,
    /// Serve one post-processor.
    Serve {
        /// Handshake line shape.
        handshake: HandshakeVersion,
        /// ConfigSpec encoding.
        spec: SpecEncoding,
        /// Component name from `start post-processor NAME` (none in legacy mode).
        name: Option<String>,
    },
    /// Serve one data source (`start datasource [--protobuf] NAME`, Packer >= 1.7 only).
    ServeDatasource {
        /// Handshake line shape (modern unless forced).
        handshake: HandshakeVersion,
        /// ConfigSpec/OutputSpec encoding (and, for `Execute`, the value encoding).
        spec: SpecEncoding,
        /// Component name.
        name: String,
    },
}

/// The handshake a plugin started with no arguments gives, from the `PACKER_LOG` and
/// `PACKER_LOG_PATH` Packer passed: both set and empty is Packer 1.6.x's signature (its
/// `main.go` sets them to "" for the child it wraps, and plugins inherit them); Packer 1.7.10 and
/// later (1.9.4 checked) pass the user's values or nothing.
pub fn no_args_handshake(packer_log: Option<&str>, packer_log_path: Option<&str>) -> HandshakeVersion {
    if packer_log == Some("") && packer_log_path == Some("") {
        HandshakeVersion::Legacy3
    } else {
        HandshakeVersion::Modern4
    }
}

/// What a legacy-named binary prints on stderr when it answers with the 3-field line: correct for
/// Packer 1.6.x; early Packer 1.7.x releases look the same but refuse that line ("protocol
/// version 4 and lower was deprecated"), and this says what to do there.
pub const LEGACY_RENAME_HINT: &str = "started with no arguments by a Packer that clears PACKER_LOG and PACKER_LOG_PATH (Packer 1.6.x): answering with the 3-field handshake. If this is Packer 1.7 or later, which refuses it, rename the binary from packer-post-processor-amikey to packer-plugin-amikey (Packer >= 1.7 names the post-processor \"amikey\" either way; for required_plugins install it as github.com/amikey/amikey/packer-plugin-amikey_v<version>_x5.0_<os>_<arch> with its _SHA256SUM), or set AMIKEY_HANDSHAKE=4";

/// Parses argv (without the program name) and the `AMIKEY_HANDSHAKE` value; `no_args` is the
/// handshake for a start without arguments ([`no_args_handshake`]).
pub fn parse_args(
    args: &[String],
    handshake_env: Option<&str>,
    no_args: HandshakeVersion,
) -> Result<Invocation, String> {
    let protobuf = args.iter().any(|a| a == "--protobuf");
    let rest: Vec<&str> = args.iter().map(String::as_str).filter(|a| *a != "--protobuf").collect();
    let spec = if protobuf { SpecEncoding::Protobuf } else { SpecEncoding::Gob };
    let forced = match handshake_env {
        None | Some("") => None,
        Some("3") => Some(HandshakeVersion::Legacy3),
        Some("4") => Some(HandshakeVersion::Modern4),
        Some(other) => return Err(format!("{HANDSHAKE_ENV}={other:?}: expected 3 or 4")),
    };
    match rest.as_slice() {
        [] => {
            let handshake = forced.unwrap_or(no_args);
            // Packer 1.6.x (the 3-field handshake) decodes a narrower gob ConfigSpec.
            let spec = match (handshake, spec) {
                (HandshakeVersion::Legacy3, SpecEncoding::Gob) => SpecEncoding::GobLegacy,
                (_, spec) => spec,
            };
            Ok(Invocation::Serve { handshake, spec, name: None })
        }
        ["describe"] => Ok(Invocation::Describe),
        ["--help" | "-h" | "help"] => Ok(Invocation::Help),
        ["start", "post-processor", name] => Ok(Invocation::Serve {
            handshake: forced.unwrap_or(HandshakeVersion::Modern4),
            spec,
            name: Some((*name).to_string()),
        }),
        ["start", "datasource", name] => Ok(Invocation::ServeDatasource {
            handshake: forced.unwrap_or(HandshakeVersion::Modern4),
            spec,
            name: (*name).to_string(),
        }),
        ["start", kind, ..] if *kind != "post-processor" && *kind != "datasource" => {
            Err(format!("this plugin has no {kind} components, only a post-processor and a datasource"))
        }
        _ => Err(format!("unexpected arguments {:?}; try --help", args)),
    }
}

/// True when the magic cookie has Packer's value.
pub fn cookie_ok(value: Option<&str>) -> bool {
    value == Some(MAGIC_COOKIE_VALUE)
}

/// Where the plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A unix socket path.
    Unix(PathBuf),
    /// `127.0.0.1:PORT`.
    Tcp(std::net::SocketAddr),
}

/// The handshake line (without newline).
pub fn handshake_line(version: HandshakeVersion, addr: &ListenAddr) -> String {
    let (network, address) = match addr {
        ListenAddr::Unix(p) => ("unix", p.display().to_string()),
        ListenAddr::Tcp(a) => ("tcp", a.to_string()),
    };
    match version {
        HandshakeVersion::Legacy3 => format!("5|{network}|{address}"),
        HandshakeVersion::Modern4 => format!("5|0|{network}|{address}"),
    }
}

/// Anything the session can run over.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A bound listener that accepts exactly one connection.
pub enum Listener {
    /// Unix socket plus the directory that holds it.
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, PathBuf, PathBuf),
    /// TCP.
    Tcp(tokio::net::TcpListener),
}

impl Listener {
    /// Binds per the rules in the module doc. `tcp` forces TCP; `ports` is the MIN/MAX range.
    pub fn bind(tcp: bool, ports: (u16, u16)) -> std::io::Result<(Listener, ListenAddr)> {
        #[cfg(unix)]
        if !tcp {
            let dir = fresh_dir()?;
            let path = dir.join("plugin.sock");
            let l = tokio::net::UnixListener::bind(&path)?;
            return Ok((Listener::Unix(l, path.clone(), dir), ListenAddr::Unix(path)));
        }
        let _ = tcp;
        let (min, max) = ports;
        for port in min..=max.max(min) {
            if let Ok(std_l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                std_l.set_nonblocking(true)?;
                let addr = std_l.local_addr()?;
                return Ok((Listener::Tcp(tokio::net::TcpListener::from_std(std_l)?), ListenAddr::Tcp(addr)));
            }
        }
        Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("no free TCP port in {min}..={max}")))
    }

    /// Accepts the one connection, then closes the listener and removes the socket.
    pub async fn accept_one(self) -> std::io::Result<Box<dyn Io>> {
        match self {
            #[cfg(unix)]
            Listener::Unix(l, path, dir) => {
                let accepted = l.accept().await;
                drop(l);
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_dir(&dir);
                Ok(Box::new(accepted?.0))
            }
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Box::new(s))
            }
        }
    }
}

#[cfg(unix)]
fn fresh_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut last = None;
    for attempt in 0..100u32 {
        let dir = base.join(format!("packer-plugin-amikey-{pid}-{nanos:08x}-{attempt}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("cannot create a socket directory")))
}

/// Reads `PACKER_PLUGIN_MIN_PORT`/`MAX_PORT` (defaults 10000/25000).
pub fn port_range(min: Option<&str>, max: Option<&str>) -> (u16, u16) {
    let min = min.and_then(|s| s.parse().ok()).unwrap_or(10000);
    let max = max.and_then(|s| s.parse().ok()).unwrap_or(25000);
    (min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    const L3: HandshakeVersion = HandshakeVersion::Legacy3;
    const M4: HandshakeVersion = HandshakeVersion::Modern4;

    #[test]
    fn argv_modes() {
        assert_eq!(
            parse_args(&[], None, L3).unwrap(),
            Invocation::Serve {
                handshake: HandshakeVersion::Legacy3,
                spec: SpecEncoding::GobLegacy,
                name: None
            }
        );
        assert_eq!(
            parse_args(&args(&["start", "post-processor", "--protobuf", "amikey"]), None, L3).unwrap(),
            Invocation::Serve {
                handshake: HandshakeVersion::Modern4,
                spec: SpecEncoding::Protobuf,
                name: Some("amikey".into())
            }
        );
        assert_eq!(
            parse_args(&args(&["start", "post-processor", "x"]), Some("3"), M4).unwrap(),
            Invocation::Serve {
                handshake: HandshakeVersion::Legacy3,
                spec: SpecEncoding::Gob,
                name: Some("x".into())
            }
        );
        assert_eq!(parse_args(&args(&["describe"]), None, M4).unwrap(), Invocation::Describe);
        assert_eq!(parse_args(&args(&["-h"]), None, M4).unwrap(), Invocation::Help);
        assert!(parse_args(&args(&["start", "builder", "x"]), None, M4).is_err());
        assert!(parse_args(&[], Some("5"), M4).is_err());
    }

    #[test]
    fn no_arguments_follow_the_packer_generation() {
        // What Packer 1.6.6 passes (PACKER_LOG and PACKER_LOG_PATH set, empty), whatever the user set.
        assert_eq!(no_args_handshake(Some(""), Some("")), L3);
        // Packer 1.9.4: the user's values, or nothing.
        assert_eq!(no_args_handshake(None, None), M4);
        assert_eq!(no_args_handshake(Some("1"), None), M4);
        assert_eq!(no_args_handshake(Some("1"), Some("/tmp/p.log")), M4);
        assert_eq!(no_args_handshake(Some(""), None), M4);
        let legacy = |hs| parse_args(&[], None, hs).unwrap();
        assert_eq!(legacy(M4), Invocation::Serve { handshake: M4, spec: SpecEncoding::Gob, name: None });
        // AMIKEY_HANDSHAKE wins.
        assert_eq!(
            parse_args(&[], Some("4"), L3).unwrap(),
            Invocation::Serve { handshake: M4, spec: SpecEncoding::Gob, name: None }
        );
        assert!(
            LEGACY_RENAME_HINT.contains("packer-plugin-amikey")
                && LEGACY_RENAME_HINT.contains("AMIKEY_HANDSHAKE=4")
        );
    }

    #[test]
    fn lines() {
        let a = ListenAddr::Unix("/tmp/p/plugin.sock".into());
        assert_eq!(handshake_line(HandshakeVersion::Legacy3, &a), "5|unix|/tmp/p/plugin.sock");
        assert_eq!(handshake_line(HandshakeVersion::Modern4, &a), "5|0|unix|/tmp/p/plugin.sock");
        let t = ListenAddr::Tcp("127.0.0.1:10000".parse().unwrap());
        assert_eq!(handshake_line(HandshakeVersion::Modern4, &t), "5|0|tcp|127.0.0.1:10000");
    }

    #[test]
    fn cookie() {
        assert!(cookie_ok(Some(MAGIC_COOKIE_VALUE)));
        assert!(!cookie_ok(None));
        assert!(!cookie_ok(Some("x")));
    }
}

//! stdout write errors: a closed pipe is ignored (the exit code is the command's own), any other
//! write error (a full disk: `/dev/full`) ends in exit 2 with the reason on stderr, never exit 0
//! with truncated output.

use std::process::{Command, Stdio};

const CLEAN: &str = "packer-examples/single-region.pkr.hcl";
const BAD: &str = "tests/fixtures/lint/bad/amk002-copy-uses-default-key.pkr.hcl";

fn amikey(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_amikey"));
    c.current_dir(env!("CARGO_MANIFEST_DIR")).args(args).stderr(Stdio::piped());
    c
}

fn code_and_stderr(mut c: Command) -> (i32, String) {
    let out = c.output().unwrap_or_else(|e| panic!("cannot run amikey: {e}"));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_full_disk_is_exit_2_with_the_reason_on_stderr() {
    for (args, normal) in [
        (&["lint", "--format", "json", CLEAN][..], 0),
        (&["lint", "--format", "json", BAD][..], 1),
        (&["lint", CLEAN][..], 0),
    ] {
        let (code, _) = code_and_stderr(amikey(args));
        assert_eq!(code, normal, "{args:?} to a normal stdout");
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap_or_else(|e| panic!("/dev/full: {e}"));
        let mut c = amikey(args);
        c.stdout(full);
        let (code, err) = code_and_stderr(c);
        assert_eq!(code, 2, "{args:?} to /dev/full: {err}");
        assert!(err.contains("cannot write the output to stdout") && err.contains("No space left"), "{err}");
    }
}

#[test]
fn a_closed_pipe_keeps_the_commands_exit_code_and_says_nothing() {
    for (args, normal) in [(&["lint", "--format", "json", CLEAN][..], 0), (&["lint", BAD][..], 1)] {
        // The read end is closed before the child starts: its first write gets EPIPE.
        let (reader, writer) = std::io::pipe().unwrap_or_else(|e| panic!("pipe: {e}"));
        drop(reader);
        let mut c = amikey(args);
        c.stdout(writer);
        let (code, err) = code_and_stderr(c);
        assert_eq!(code, normal, "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}");
    }
}

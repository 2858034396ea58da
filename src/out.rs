//! The commands' results on standard output. `println!` panics when stdout is a closed pipe
//! (`masklm eval … | head -1`) or a full disk; [`outln!`](crate::outln) returns the error
//! instead, and `main` ends a command whose reader went away quietly with status 0, as ripgrep
//! and the classic Unix tools (killed by SIGPIPE) do. Messages go to standard error through
//! [`errln!`](crate::errln), which does not panic there either.

use anyhow::{Context, Result};
use std::io::Write;

/// Writes one line to standard output: `outln!("loss {:.4}", loss)?`.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

/// Writes one line to standard error, as `eprintln!` would, except that a closed or full
/// stderr is not a failure: `eprintln!` panics there, and a run's product is its checkpoints and
/// metrics, not its messages (`masklm train 2>&1 | head -3` trains on once `head` has gone).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::err_line(format_args!($($arg)*))
    };
}

/// [`errln!`]'s body: the line and its newline, in one write of the locked (unbuffered) stderr;
/// an error is dropped.
pub fn err_line(args: std::fmt::Arguments) {
    let line = format!("{args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// [`outln!`]'s body: the line and its newline, written (and so flushed: stdout is
/// line-buffered) before it returns.
pub fn line(args: std::fmt::Arguments) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .context("writing to standard output")
}

/// Whether `err` comes from writing to a pipe whose reader has gone.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_is_found_under_context_and_nothing_else_is() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let err = anyhow::Error::from(pipe).context("writing to standard output");
        assert!(is_broken_pipe(&err));
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert!(!is_broken_pipe(
            &anyhow::Error::from(full).context("writing")
        ));
        assert!(!is_broken_pipe(&anyhow::anyhow!("broken pipe")));
    }
}

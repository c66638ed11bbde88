//! Writing results to stdout: tables for people, JSON for scripts. A closed stdout
//! (`| head`) ends the command quietly instead of panicking.

use std::io::Write;

use serde::Serialize;

use crate::Error;

/// Prints `text` (which should end with a newline) to stdout.
pub fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Prints `value` as pretty JSON followed by a newline.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    let mut s = serde_json::to_string_pretty(value).expect("serialisable");
    s.push('\n');
    print(&s)
}

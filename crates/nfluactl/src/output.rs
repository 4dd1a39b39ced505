//! How results are printed.

use std::io::Write;

use nflua_client::StateInfo;
use serde::Serialize;

#[derive(Serialize)]
struct StateJson<'a> {
    name: &'a str,
    maxalloc: u32,
    curralloc: u32,
    maxruns: Option<u32>,
    flags: String,
}

pub fn states(out: &mut impl Write, states: &[StateInfo], json: bool) -> std::io::Result<()> {
    if json {
        let list: Vec<StateJson<'_>> = states
            .iter()
            .map(|s| StateJson {
                name: &s.name,
                maxalloc: s.max_alloc,
                curralloc: s.cur_alloc,
                maxruns: s.max_runs,
                flags: s.flags.to_letters(),
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &list)?;
        return writeln!(out);
    }
    let width = states
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    writeln!(
        out,
        "{:<width$}  {:>10}  {:>10}  {:>10}  FLAGS",
        "NAME", "MAXALLOC", "CURRALLOC", "MAXRUNS"
    )?;
    for s in states {
        let runs = s.max_runs.map_or_else(|| "-".to_owned(), |r| r.to_string());
        writeln!(
            out,
            "{:<width$}  {:>10}  {:>10}  {:>10}  {}",
            s.name,
            s.max_alloc,
            s.cur_alloc,
            runs,
            s.flags.to_letters()
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct MessageJson<'a> {
    state: &'a str,
    /// The bytes as text when they are UTF-8.
    text: Option<&'a str>,
    hex: String,
}

/// One message from a state: `state: text` (or hex when not UTF-8).
pub fn message(out: &mut impl Write, state: &str, bytes: &[u8], json: bool) -> std::io::Result<()> {
    let text = std::str::from_utf8(bytes).ok();
    if json {
        let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
        serde_json::to_writer(&mut *out, &MessageJson { state, text, hex })?;
        return writeln!(out);
    }
    match text {
        Some(t) => writeln!(out, "{state}: {t}"),
        None => writeln!(
            out,
            "{state}: 0x{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

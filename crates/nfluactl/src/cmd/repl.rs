//! `nfluactl repl STATE`: an interactive prompt into a running state, over the same protocol as
//! `execute`.
//!
//! As lua5.4's own prompt: a line is first tried as `return LINE` (so `1 + 2` prints 3), then as
//! a statement; a chunk that ends too early ("unexpected <eof>") asks for more lines with `>> `;
//! the values a chunk returns are printed tab-separated; errors show their text. The check for
//! "complete or not" is a local compile with the same Lua 5.4 the daemon runs (nothing runs
//! locally); the chunk itself goes to the daemon as an EXECUTE (chunk name `=stdin`, the state's
//! limits apply), wrapped so that it sends its results back with `nf.netlink` to this prompt's
//! own data socket. Lines are edited with `rustyline` (history kept in `~/.nfluactl_history`).
//! `print` inside the state still goes to the daemon's log, as for every other entry.

use std::time::Duration;

use anyhow::{bail, Context};
use nflua_client::consts::DATA_MAX;
use nflua_client::{ClientConfig, ClientError, ControlSocket, DataSocket, Port};
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

/// How long to wait for a chunk's results after its EXECUTE was answered (they are sent before
/// the answer, so they are normally there already).
const RESULTS_WAIT_MS: i32 = 2000;

pub fn run(config: ClientConfig, timeout: Option<Duration>, state: &str) -> anyhow::Result<()> {
    let mut control = ControlSocket::open(config.clone(), Port::Auto)?;
    control.set_timeout(timeout);
    if !control.list()?.iter().any(|s| s.name == state) {
        bail!("state '{state}' not found");
    }
    let mut data = DataSocket::open(config, Port::Auto)?;
    let pid = data.port()?;
    let mut editor = DefaultEditor::new().context("starting the line editor")?;
    let history = std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".nfluactl_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!("{state}: Lua 5.4 in nfluad; values are printed here, print() goes to the daemon's log; ctrl-D leaves");
    // Only compiled, never run: tells a complete chunk from one that needs more lines.
    let checker = mlua::Lua::new();
    let mut buf = vec![0u8; DATA_MAX];
    loop {
        let Some(chunk) = read_chunk(&mut editor, &checker)? else { break };
        let _ = editor.add_history_entry(chunk.text.as_str());
        let wrapped = wrap(&chunk.body, pid);
        match control.execute(state, wrapped.as_bytes(), "=stdin") {
            Ok(()) => {
                let message = data.receive_timeout(&mut buf, RESULTS_WAIT_MS)?;
                let text = String::from_utf8_lossy(&buf[..message.len]);
                // "<count>\n<values>": nothing to print for a chunk that returned nothing.
                if let Some((count, values)) = text.split_once('\n') {
                    if count != "0" {
                        println!("{values}");
                    }
                }
            }
            Err(ClientError::Daemon { message, .. }) => eprintln!("{message}"),
            Err(other) => return Err(other.into()),
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// A chunk as typed, and what is sent for it.
struct Chunk {
    text: String,
    body: String,
}

/// Reads lines until they make a chunk; `None` at end of input.
fn read_chunk(editor: &mut DefaultEditor, checker: &mlua::Lua) -> anyhow::Result<Option<Chunk>> {
    let mut text = String::new();
    loop {
        let prompt = if text.is_empty() { "> " } else { ">> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            // ctrl-C drops what was typed so far, as lua5.4 does at its prompt.
            Err(ReadlineError::Interrupted) => {
                text.clear();
                continue;
            }
            Err(ReadlineError::Eof) if text.is_empty() => return Ok(None),
            Err(ReadlineError::Eof) => {
                text.clear();
                continue;
            }
            Err(e) => return Err(e).context("reading a line"),
        };
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&line);
        if text.trim().is_empty() {
            text.clear();
            continue;
        }
        if let Some(body) = complete(checker, &text) {
            return Ok(Some(Chunk { text, body }));
        }
    }
}

/// What to send for `text` once it is a whole chunk: `return TEXT` when that compiles (an
/// expression), else `TEXT`, also when it does not compile for another reason than ending too
/// early (the daemon then answers with the error); `None` while more lines are needed.
fn complete(checker: &mlua::Lua, text: &str) -> Option<String> {
    let as_return = format!("return {text}");
    if compiles(checker, &as_return).is_ok() {
        return Some(as_return);
    }
    // lua.c's own test: the message ends with "<eof>" ("unexpected <eof>", an unfinished long
    // string or comment), not mlua's broader `incomplete_input`.
    match compiles(checker, text) {
        Err(mlua::Error::SyntaxError { message, .. }) if message.ends_with("<eof>") => None,
        _ => Some(text.to_owned()),
    }
}

fn compiles(checker: &mlua::Lua, text: &str) -> mlua::Result<()> {
    checker.load(text).set_name("=stdin").set_mode(mlua::chunk::ChunkMode::Text).into_function().map(drop)
}

/// `body` as a function called with its results packed and sent to `pid` as
/// "<count>\n<values, tab-separated>" (cut to fit a DATA message). The prefix stays on the
/// chunk's first line, so errors name the lines as typed.
fn wrap(body: &str, pid: u32) -> String {
    let room = DATA_MAX - 16;
    format!(
        "local r = table.pack((function(...) {body}\nend)(...)) \
         local t = {{}} for i = 1, r.n do t[i] = tostring(r[i]) end \
         local s = table.concat(t, '\\t') if #s > {room} then s = s:sub(1, {room}) .. '...' end \
         nf.netlink({pid}, 0, r.n .. '\\n' .. s)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_completed_as_lua_does() {
        let lua = mlua::Lua::new();
        assert_eq!(complete(&lua, "1 + 2").as_deref(), Some("return 1 + 2"));
        assert_eq!(complete(&lua, "x = 1").as_deref(), Some("x = 1"));
        assert_eq!(complete(&lua, "function f(a)"), None);
        assert_eq!(
            complete(&lua, "function f(a)\nreturn a\nend").as_deref(),
            Some("function f(a)\nreturn a\nend")
        );
        assert_eq!(complete(&lua, "x = = 1").as_deref(), Some("x = = 1"), "the daemon reports the error");
        // As lua5.4: a string unfinished at the end of the line waits for more.
        assert_eq!(complete(&lua, "'unfinished"), None);
        assert_eq!(complete(&lua, "x = 'a' 'b'").as_deref(), Some("x = 'a' 'b'"));
    }
}

//! `nfluactl hook add|del|list`.

use std::io::Write;

use anyhow::Context;
use nflua_client::{
    parse_port, ControlSocket, HookMode, HookSpec, OnError, Overflow, Verdict, DEFAULT_STREAM_DEPTH,
};

use crate::cli::{HookCommand, ModeArg, OnErrorArg, OverflowArg};
use crate::output;

pub fn run(mut control: ControlSocket, cmd: HookCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match cmd {
        HookCommand::Add {
            queue,
            state,
            function,
            mode,
            tcp_payload,
            stream,
            stream_depth,
            on_error,
            overflow,
            eval_mark,
            match_mark,
            chain,
            rule,
            target,
        } => {
            let (queue_first, queue_last) = parse_queues(&queue)?;
            let spec = HookSpec {
                queue_first,
                queue_last,
                mode: match mode {
                    ModeArg::Match => HookMode::Match,
                    ModeArg::Target => HookMode::Target,
                },
                tcp_payload,
                on_error: match on_error {
                    OnErrorArg::Continue => OnError::Continue,
                    OnErrorArg::Accept => OnError::Verdict(Verdict::Accept),
                    OnErrorArg::Drop => OnError::Verdict(Verdict::Drop),
                },
                overflow: match overflow {
                    OverflowArg::Accept => Overflow::Accept,
                    OverflowArg::Drop => Overflow::Drop,
                },
                stream_depth: stream.then(|| stream_depth.unwrap_or(DEFAULT_STREAM_DEPTH)),
                eval_mark: parse_mark(&eval_mark).context("--eval-mark")?,
                match_mark: parse_mark(&match_mark).context("--match-mark")?,
                state,
                function,
            };
            control.hook_add(&spec)?;
            output::hook_rules(out, &spec, &chain, &rule, &target)?;
        }
        HookCommand::Del { queue } => control.hook_del(queue)?,
        HookCommand::List { json } => output::hooks(out, &control.hook_list()?, json)?,
    }
    Ok(())
}

/// `N` or `FIRST:LAST`.
fn parse_queues(text: &str) -> anyhow::Result<(u16, u16)> {
    let parse = |t: &str| t.trim().parse::<u16>().with_context(|| format!("invalid queue number {t:?}"));
    match text.split_once(':') {
        Some((a, b)) => Ok((parse(a)?, parse(b)?)),
        None => {
            let q = parse(text)?;
            Ok((q, q))
        }
    }
}

fn parse_mark(text: &str) -> anyhow::Result<u32> {
    parse_port(text).with_context(|| format!("invalid mark {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ranges() {
        assert_eq!(parse_queues("3").unwrap(), (3, 3));
        assert_eq!(parse_queues("0:1").unwrap(), (0, 1));
        assert!(parse_queues("x").is_err());
    }
}

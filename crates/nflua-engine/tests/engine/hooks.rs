//! Packet hooks: `call_hook` in both modes over hand-made IPv4/TCP frames, the packet functions
//! of `nf`, pins and the conntrack hint.
//!
//! Tests that need nflua-packet to craft packets (`nf.reply`, `packet:send(payload)`) are in
//! `packet_crafting`: `cargo test -p nflua-engine packet_crafting` runs just them.

use std::time::{Duration, Instant};

use nflua_engine::{HookMode, HookOutcome, HookResult, PacketContext, Verdict};

use super::*;

const PAYLOAD_OFFSET: usize = 14 + 20 + 20;

/// Internet checksum (RFC 1071) of `bytes`, folded and complemented.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 =
        bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame holding an IPv4/TCP packet with `payload`: 10.0.0.1:40000 → 10.0.0.2:80,
/// seq 1000, ack 2000, PSH|ACK, both checksums right.
fn tcp_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&[0; 6]); // destination MAC
    frame.extend_from_slice(&[2, 0, 0, 0, 0, 1]); // source MAC
    frame.extend_from_slice(&[0x08, 0x00]); // ethertype IPv4
    let total = u16::try_from(20 + 20 + payload.len()).unwrap();
    let mut ip = Vec::new();
    ip.extend_from_slice(&[0x45, 0]); // version 4, IHL 5 words; DSCP/ECN
    ip.extend_from_slice(&total.to_be_bytes()); // total length
    ip.extend_from_slice(&[0, 1, 0x40, 0]); // id 1; flags DF, fragment offset 0
    ip.extend_from_slice(&[64, 6, 0, 0]); // TTL 64, protocol TCP, header checksum (below)
    ip.extend_from_slice(&[10, 0, 0, 1]); // source
    ip.extend_from_slice(&[10, 0, 0, 2]); // destination
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&40000u16.to_be_bytes()); // source port
    tcp.extend_from_slice(&80u16.to_be_bytes()); // destination port
    tcp.extend_from_slice(&1000u32.to_be_bytes()); // sequence number
    tcp.extend_from_slice(&2000u32.to_be_bytes()); // acknowledgment number
    tcp.extend_from_slice(&[5 << 4, 0x18]); // data offset 5 words; flags PSH|ACK
    tcp.extend_from_slice(&65535u16.to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum (below), urgent pointer
    tcp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]); // source and destination addresses
    pseudo.extend_from_slice(&[0, 6]); // zero, protocol
    pseudo.extend_from_slice(&u16::try_from(tcp.len()).unwrap().to_be_bytes());
    pseudo.extend_from_slice(&tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&tcp);
    frame
}

fn packet(frame: &[u8], mode: HookMode) -> PacketContext<'_> {
    PacketContext::from_frame(frame, mode).expect("a whole Ethernet header")
}

fn call(engine: &Engine, function: &str, frame: &[u8], mode: HookMode) -> Result<HookOutcome, EngineError> {
    engine.call_hook("s", function, &packet(frame, mode))
}

fn matched(engine: &Engine, function: &str, frame: &[u8]) -> bool {
    match call(engine, function, frame, HookMode::Match).unwrap().result {
        HookResult::Match(m) => m,
        other => panic!("{other:?}"),
    }
}

fn verdict(engine: &Engine, function: &str, frame: &[u8]) -> Option<Verdict> {
    match call(engine, function, frame, HookMode::Target).unwrap().result {
        HookResult::Target(v) => v,
        other => panic!("{other:?}"),
    }
}

fn hook_error(result: Result<HookOutcome, EngineError>) -> String {
    match result {
        Err(EngineError::Lua(text)) => text,
        other => panic!("expected a Lua error, got {other:?}"),
    }
}

#[test]
fn match_mode_reads_truthiness() {
    let (engine, _) = with_state();
    run(
        &engine,
        "s",
        "function big(frame, packet) return #packet > 44 end \
         function zero() return 0 end \
         function none() end \
         function no() return false end",
    )
    .unwrap();
    let frame = tcp_frame(b"hello");
    assert!(matched(&engine, "big", &frame), "45 bytes of IP packet");
    assert!(!matched(&engine, "big", &tcp_frame(b"")));
    assert!(matched(&engine, "zero", &frame), "0 is true in Lua");
    assert!(!matched(&engine, "none", &frame));
    assert!(!matched(&engine, "no", &frame));
    let outcome = call(&engine, "zero", &frame, HookMode::Match).unwrap();
    assert_eq!(outcome, HookOutcome { result: HookResult::Match(true), hotdrop: false, replacement: None });
    let stats = engine.stats("s").unwrap();
    assert_eq!((stats.calls, stats.errors), (7, 0));
}

#[test]
fn frame_and_packet_share_the_bytes() {
    let (engine, sink) = with_state();
    run(
        &engine,
        "s",
        "function look(frame, packet) \
           local out = {#frame, #packet, frame[13], frame[14], frame[15], packet[1], packet[10], tostring(packet):sub(-5)} \
           packet[1] = 0x46 \
           out[#out + 1] = frame[15] \
           nf.netlink(1, 0, table.concat(out, ' ')) \
           return true \
         end",
    )
    .unwrap();
    assert!(matched(&engine, "look", &tcp_frame(b"hello")));
    assert_eq!(sink.sent()[0].payload, b"59 45 8 0 69 69 6 hello 70");
}

#[test]
fn the_frame_is_the_link_header_then_the_ip_packet() {
    let (engine, sink) = with_state();
    run(&engine, "s", "function p(frame, packet) nf.netlink(1, 0, frame) return #packet end").unwrap();
    let frame = tcp_frame(b"x");
    let ctx = PacketContext::from_frame(&frame, HookMode::Match).unwrap();
    assert_eq!(ctx.link_header[..], frame[..14]);
    assert_eq!(ctx.frame_len(), frame.len());
    assert_eq!(ctx.lua_packet, 14..frame.len());
    engine.call_hook("s", "p", &ctx).unwrap();
    assert_eq!(sink.sent()[0].payload, frame, "Lua sees both parts joined");
    assert!(PacketContext::from_frame(&frame[..13], HookMode::Match).is_none(), "no room for the header");
}

#[test]
fn lua_packet_may_be_the_tcp_payload() {
    let (engine, sink) = with_state();
    run(&engine, "s", "function p(frame, packet) nf.netlink(1, 0, packet) return #frame end").unwrap();
    let frame = tcp_frame(b"GET /");
    let ctx = PacketContext { lua_packet: PAYLOAD_OFFSET..frame.len(), ..packet(&frame, HookMode::Match) };
    engine.call_hook("s", "p", &ctx).unwrap();
    assert_eq!(sink.sent()[0].payload, b"GET /");
    let empty = PacketContext { lua_packet: frame.len()..frame.len(), ..packet(&frame, HookMode::Match) };
    engine.call_hook("s", "p", &empty).unwrap();
    assert_eq!(sink.sent()[1].payload, b"");
    let outside = PacketContext { lua_packet: 14..frame.len() + 1, ..packet(&frame, HookMode::Match) };
    let err = engine.call_hook("s", "p", &outside).unwrap_err();
    assert!(matches!(err, EngineError::InvalidPacket { start: 14, .. }), "{err}");
    assert_eq!(err.errno(), 22);
}

#[test]
fn target_mode_verdicts() {
    let (engine, _) = with_state();
    run(&engine, "s", "function v(frame, packet) return answer end").unwrap();
    let frame = tcp_frame(b"x");
    for (answer, expected) in [
        ("'drop'", Some(Verdict::Drop)),
        ("'accept'", Some(Verdict::Accept)),
        ("'stolen'", Some(Verdict::Stolen)),
        ("'queue'", Some(Verdict::Queue)),
        ("'repeat'", Some(Verdict::Repeat)),
        ("'stop'", Some(Verdict::Stop)),
        ("'DROP'", None),
        ("'continue'", None),
        ("''", None),
        ("nil", None),
        ("true", None),
        ("42", None),
    ] {
        run(&engine, "s", &format!("answer = {answer}")).unwrap();
        assert_eq!(verdict(&engine, "v", &frame), expected, "{answer}");
    }
}

#[test]
fn missing_function_and_unknown_state() {
    let (engine, _) = with_state();
    let frame = tcp_frame(b"");
    let err = call(&engine, "nope", &frame, HookMode::Match).unwrap_err();
    assert!(
        matches!(err, EngineError::NoFunction { ref state, ref function } if state == "s" && function == "nope")
    );
    assert_eq!((err.errno(), err.to_string()), (2, "state 's' has no function 'nope'".to_string()));
    assert_eq!(engine.stats("s").unwrap().errors, 1);
    // Defined later, found then (the name is cached, not the function).
    run(&engine, "s", "function nope() return true end").unwrap();
    assert!(matched(&engine, "nope", &frame));
    run(&engine, "s", "function nope() return false end").unwrap();
    assert!(!matched(&engine, "nope", &frame));
    run(&engine, "s", "nope = 42").unwrap();
    let text = hook_error(call(&engine, "nope", &frame, HookMode::Match));
    assert!(text.contains("attempt to call a number value"), "{text}");
    let err = engine.call_hook("other", "f", &packet(&frame, HookMode::Match)).unwrap_err();
    assert!(matches!(err, EngineError::NotFound(_)), "{err}");
}

#[test]
fn calls_through_a_state_ref() {
    let (engine, _) = with_state();
    run(&engine, "s", "n = 0 function f() n = n + 1 return n == 2 end").unwrap();
    let frame = tcp_frame(b"x");
    let state = engine.state_ref("s").unwrap();
    assert_eq!(state.name(), "s");
    assert!(!state.wants_conntrack());
    let by_ref = |_: &Engine| state.call_hook("f", &packet(&frame, HookMode::Match));
    assert_eq!(by_ref(&engine).unwrap().result, HookResult::Match(false));
    // Same state as by name: the count goes on.
    assert!(matched(&engine, "f", &frame));
    engine.destroy("s").unwrap();
    assert!(matches!(by_ref(&engine), Err(EngineError::NotFound(ref n)) if n == "s"));
    // A new state under the name is not reached through the old handle.
    engine.create(config("s", 1 << 20, 1000)).unwrap();
    run(&engine, "s", "function f() return true end").unwrap();
    assert!(matches!(by_ref(&engine), Err(EngineError::NotFound(_))));
    assert!(matches!(engine.state_ref("ghost"), Err(EngineError::NotFound(_))));
}

#[test]
fn errors_and_limits_fail_the_call_only() {
    let (engine, _) = engine();
    engine.create(config("s", 65536, 1000)).unwrap();
    run(
        &engine,
        "s",
        "function boom(frame) error('bad packet of ' .. #frame) end \
         function spin() while true do end end \
         function hog() local t = {} for i = 1, 1e6 do t[i] = i end end \
         function ok() return true end",
    )
    .unwrap();
    let frame = tcp_frame(b"abc");
    let text = hook_error(call(&engine, "boom", &frame, HookMode::Match));
    assert!(text.starts_with("chunk:1: bad packet of 57\nstack traceback:"), "{text}");
    let text = hook_error(call(&engine, "spin", &frame, HookMode::Target));
    assert!(text.contains("instruction limit exceeded"), "{text}");
    engine.create(config("m", 65536, u32::MAX)).unwrap();
    run(&engine, "m", "function hog() local t = {} for i = 1, 1e6 do t[i] = i end end").unwrap();
    let text = hook_error(engine.call_hook("m", "hog", &packet(&frame, HookMode::Match)));
    assert!(text.contains("not enough memory"), "{text}");
    // Each call has its own budget.
    for _ in 0..100 {
        assert!(matched(&engine, "ok", &frame));
    }
    let stats = engine.stats("s").unwrap();
    assert_eq!((stats.calls, stats.errors), (1 + 2 + 100, 2));
}

#[test]
fn buffers_are_invalid_after_the_call() {
    let (engine, sink) = with_state();
    run(&engine, "s", "function keep(frame, packet) kept_frame, kept_packet = frame, packet return true end")
        .unwrap();
    assert!(matched(&engine, "keep", &tcp_frame(b"secret")));
    for access in ["#kept_frame", "kept_packet[1]", "tostring(kept_packet)", "kept_frame:segment(0)"] {
        let text = lua_error(run(&engine, "s", &format!("local _ = {access}")));
        assert!(text.contains("no longer valid"), "{access}: {text}");
    }
    assert_eq!(eval(&engine, &sink, "s", "result = type(kept_frame)"), "userdata");
}

/// Tries every access on the views stashed by `keep` (below) and reports through `nf.netlink`
/// how many raised "data buffer is no longer valid", and how many are still data objects.
const PROBE: &str = "\
function probe(where) \
  local failed, isdata = 0, 0 \
  for _, v in ipairs{kept_frame, kept_packet, kept_segment, kept_layout} do \
    if data.isdata(v) then isdata = isdata + 1 end \
    for _, access in ipairs{ \
      function() return v[1] end, function() return #v end, function() return tostring(v) end, \
      function() v[1] = 0 end, function() return v:segment(0) end, function() return v:layout{} end, \
      function() return v.ttl end, function() v.ttl = 1 end, function() nf.netlink(1, 0, v) end} do \
      local ok, err = pcall(access) \
      if not ok and tostring(err):find('data buffer is no longer valid', 1, true) then \
        failed = failed + 1 \
      end \
    end \
  end \
  nf.netlink(1, 0, where .. ' ' .. failed .. ' ' .. isdata) \
end \
function keep(frame, packet) \
  if kept_frame then \
    assert(not rawequal(kept_frame, frame) and not rawequal(kept_packet, packet), 'fresh objects') \
    probe('hook') \
  end \
  kept_frame, kept_packet, kept_segment = frame, packet, packet:segment(8, 4) \
  kept_layout = frame:segment(14):layout{ttl = {64, 8}} \
  assert(kept_layout.ttl == 64 and kept_segment[1] == 64 and #kept_segment == 4) \
  return true \
end";

#[test]
fn stashed_views_fail_in_every_later_call() {
    let (engine, sink) = with_state();
    run(&engine, "s", PROBE).unwrap();
    let frame = tcp_frame(b"secret");
    assert!(matched(&engine, "keep", &frame));
    // A later hook call (which stashes its own views, still valid).
    assert!(matched(&engine, "keep", &frame));
    // A receive callback, a timer, an execute.
    run(&engine, "s", "function __receive_callback() probe('receive') end").unwrap();
    engine.deliver("s", 1, b"payload").unwrap();
    run(&engine, "s", "timer.create(0, function() probe('timer') end)").unwrap();
    assert_eq!(engine.run_due_timers(Instant::now() + Duration::from_secs(1)), 1);
    run(&engine, "s", "probe('execute')").unwrap();
    let reports: Vec<String> =
        sink.sent().iter().map(|sent| String::from_utf8_lossy(&sent.payload).into_owned()).collect();
    assert_eq!(reports, ["hook 36 4", "receive 36 4", "timer 36 4", "execute 36 4"]);
    assert_eq!(engine.stats("s").unwrap().errors, 0);
}

#[test]
fn stashed_receive_buffer_fails_in_a_hook() {
    let (engine, sink) = with_state();
    run(
        &engine,
        "s",
        "function __receive_callback(pid, buf) stash, seg = buf, buf:segment(1) \
           assert(tostring(seg) == 'ayload') end \
         function look(frame, packet) \
           for _, v in ipairs{stash, seg} do \
             local ok, err = pcall(function() return v[1] end) \
             nf.netlink(1, 0, tostring(ok) .. ' ' .. tostring(data.isdata(v)) .. ' ' .. tostring(err)) \
           end \
           return true \
         end",
    )
    .unwrap();
    engine.deliver("s", 1, b"payload").unwrap();
    assert!(matched(&engine, "look", &tcp_frame(b"")));
    for sent in &sink.sent()[..2] {
        let text = String::from_utf8_lossy(&sent.payload);
        assert!(text.starts_with("false true ") && text.contains("data buffer is no longer valid"), "{text}");
    }
}

#[test]
fn views_behave_as_data_objects() {
    let (engine, sink) = with_state();
    run(
        &engine,
        "s",
        "function look(frame, packet) \
           local out = {} \
           out[#out + 1] = tostring(data.isdata(frame) and data.isdata(packet)) \
           out[#out + 1] = type(frame) .. ' ' .. tostring(getmetatable(packet)) \
           local ok, err = pcall(function() return frame + 1 end) \
           out[#out + 1] = tostring(err:find('arithmetic on a userdata value', 1, true) ~= nil) \
           local addresses = packet:segment(12, 8) \
           out[#out + 1] = tostring(data.isdata(addresses)) .. ' ' .. #addresses \
           addresses[1] = 11 \
           out[#out + 1] = frame[14 + 13] .. ' ' .. packet[13] \
           assert(packet:layout{src = {96, 32}, proto = {72, 8}} == packet) \
           out[#out + 1] = packet.proto .. ' ' .. packet.src \
           local l = data.layout{ttl = {64, 8}} \
           local ip = frame:segment(14):layout(l) \
           ip.ttl = 7 \
           out[#out + 1] = ip.ttl .. ' ' .. packet[9] .. ' ' .. tostring(frame:segment(100)) \
           nf.netlink(1, 0, table.concat(out, ' ')) \
           nf.netlink(1, 0, packet:segment(40)) \
           nf.netlink(1, 0, frame) \
           return true \
         end",
    )
    .unwrap();
    let frame = tcp_frame(b"hello");
    assert!(matched(&engine, "look", &frame));
    let sent = sink.sent();
    assert_eq!(
        String::from_utf8_lossy(&sent[0].payload),
        format!("true userdata false true true 8 11 11 6 {} 7 7 nil", 0x0b00_0001)
    );
    assert_eq!(sent[1].payload, b"hello", "a segment of a view is a payload");
    let mut expected = frame.clone();
    expected[14 + 8] = 7;
    expected[14 + 12] = 11;
    assert_eq!(sent[2].payload, expected, "the whole frame, with the script's writes");
}

#[test]
fn views_at_the_memory_limit() {
    // Segments made until the state is full fail with Lua's own error, and the state goes on.
    let (engine, sink) = engine();
    engine.create(config("s", 32768, u32::MAX)).unwrap();
    run(
        &engine,
        "s",
        "function fill(frame, packet) \
           local all = {} \
           local ok, err = pcall(function() while true do all[#all + 1] = packet:segment(0) end end) \
           all = nil \
           collectgarbage() \
           nf.netlink(1, 0, tostring(ok) .. ' ' .. tostring(err)) \
           return true \
         end",
    )
    .unwrap();
    for _ in 0..3 {
        assert!(matched(&engine, "fill", &tcp_frame(b"")));
    }
    for sent in sink.sent() {
        let text = String::from_utf8_lossy(&sent.payload);
        assert!(text.starts_with("false ") && text.contains("not enough memory"), "{text}");
    }
    assert_eq!(engine.stats("s").unwrap().errors, 0);
}

#[test]
fn hook_errors_show_the_scripts_stack() {
    let (engine, _) = with_state();
    run(
        &engine,
        "s",
        "local function inner(p) error('bad ' .. #p) end\nfunction outer(frame, packet) inner(packet) end",
    )
    .unwrap();
    let text = hook_error(call(&engine, "outer", &tcp_frame(b""), HookMode::Match));
    assert_eq!(
        text,
        "chunk:1: bad 40\nstack traceback:\n\t[C]: in function 'error'\n\tchunk:1: in upvalue 'inner'\n\
         \tchunk:2: in function <chunk:2>\n\t[C]: in ?"
    );
}

#[test]
fn packet_functions_only_inside_hooks() {
    let (engine, _) = with_state();
    run(&engine, "s", "function later() return nf.connid() end").unwrap();
    // A timer or a DATA callback is not a hook either.
    run(&engine, "s", "function __receive_callback() nf.hotdrop(true) end").unwrap();
    let text = lua_error(engine.deliver("s", 1, b""));
    assert!(text.starts_with("chunk:1: nf.hotdrop: not available outside a packet hook"), "{text}");
    let text = lua_error(run(&engine, "s", "later()"));
    assert!(text.contains("nf.connid: not available outside a packet hook"), "{text}");
}

#[test]
fn connid() {
    let (engine, sink) = with_state();
    run(
        &engine,
        "s",
        "seen = {} \
         function track() local id = nf.connid() \
           if id == nil then nf.netlink(1, 0, 'untracked') return false end \
           seen[id] = (seen[id] or 0) + 1 \
           nf.netlink(1, 0, math.type(id) .. ' ' .. id .. ' ' .. seen[id]) return true end",
    )
    .unwrap();
    let frame = tcp_frame(b"");
    for id in [Some(7), Some(7), None, Some(u32::MAX)] {
        let ctx = PacketContext { conntrack_id: id, ..packet(&frame, HookMode::Match) };
        engine.call_hook("s", "track", &ctx).unwrap();
    }
    let sent: Vec<String> = sink.sent().into_iter().map(|s| String::from_utf8(s.payload).unwrap()).collect();
    assert_eq!(sent, ["integer 7 1", "integer 7 2", "untracked", "integer 4294967295 1"]);
}

#[test]
fn hotdrop() {
    let (engine, _) = with_state();
    run(
        &engine,
        "s",
        "function drop() nf.hotdrop(true) return false end \
         function undo() nf.hotdrop(true) nf.hotdrop(false) return true end \
         function bad() nf.hotdrop(1) end",
    )
    .unwrap();
    let frame = tcp_frame(b"");
    let outcome = call(&engine, "drop", &frame, HookMode::Match).unwrap();
    assert_eq!((outcome.result, outcome.hotdrop), (HookResult::Match(false), true));
    let outcome = call(&engine, "undo", &frame, HookMode::Match).unwrap();
    assert_eq!((outcome.result, outcome.hotdrop), (HookResult::Match(true), false));
    let outcome = call(&engine, "undo", &frame, HookMode::Match).unwrap();
    assert!(!outcome.hotdrop, "not carried over from an earlier call");
    let text = hook_error(call(&engine, "drop", &frame, HookMode::Target));
    assert!(text.starts_with("chunk:1: nf.hotdrop: only in match mode"), "{text}");
    let text = hook_error(call(&engine, "bad", &frame, HookMode::Match));
    assert!(
        text.starts_with("chunk:1: bad argument #1 to 'hotdrop' (boolean expected, got number)"),
        "{text}"
    );
}

#[test]
fn getpacket_send_unchanged_and_close() {
    let (engine, _) = with_state();
    run(
        &engine,
        "s",
        "function resend(frame, packet) \
           packet[9] = 63 \
           local p = nf.getpacket() \
           assert(tostring(p):match('^packet: ')) \
           assert(p:send() == true) \
           return 'stolen' \
         end \
         function close_only() local p = nf.getpacket() assert(p:close() == true) return 'drop' end",
    )
    .unwrap();
    let frame = tcp_frame(b"data");
    let outcome = call(&engine, "resend", &frame, HookMode::Target).unwrap();
    assert_eq!(outcome.result, HookResult::Target(Some(Verdict::Stolen)));
    let mut expected = frame[14..].to_vec();
    expected[8] = 63; // the TTL the script wrote through `packet`
    assert_eq!(outcome.replacement, Some(expected));
    let outcome = call(&engine, "close_only", &frame, HookMode::Target).unwrap();
    assert_eq!((outcome.result, outcome.replacement), (HookResult::Target(Some(Verdict::Drop)), None));
}

#[test]
fn getpacket_misuse() {
    let (engine, _) = with_state();
    run(
        &engine,
        "s",
        "function get() kept = nf.getpacket() return 'accept' end \
         function after_close() local p = nf.getpacket() p:close() p:send() end \
         function after_send() local p = nf.getpacket() p:send() p:close() end \
         function twice() nf.getpacket():send() nf.getpacket():send() end \
         function wrong_self() local p = nf.getpacket() p.send('x') end \
         function wrong_payload() nf.getpacket():send({}) end",
    )
    .unwrap();
    let frame = tcp_frame(b"");
    let text = hook_error(call(&engine, "get", &frame, HookMode::Match));
    assert!(text.starts_with("chunk:1: nf.getpacket: only in target mode"), "{text}");
    assert_eq!(verdict(&engine, "get", &frame), Some(Verdict::Accept));
    for method in ["send", "close"] {
        let text = lua_error(run(&engine, "s", &format!("kept:{method}()")));
        assert!(
            text.starts_with(&format!(
                "chunk:1: packet:{method}: packet is no longer valid (its hook call returned)"
            )),
            "{text}"
        );
    }
    // Not even inside a later hook call.
    run(&engine, "s", "function reuse() kept:send() end").unwrap();
    let text = hook_error(call(&engine, "reuse", &frame, HookMode::Target));
    assert!(text.contains("packet is no longer valid"), "{text}");
    for (function, message) in [
        ("after_close", "packet:send: packet is closed"),
        ("after_send", "packet:close: packet is closed"),
        ("twice", "packet:send: the packet was already sent in this hook call"),
        ("wrong_self", "bad argument #1 to 'send' (packet expected, got string)"),
        ("wrong_payload", "bad argument #2 to 'send' (string or data expected, got table)"),
    ] {
        let text = hook_error(call(&engine, function, &frame, HookMode::Target));
        assert!(text.starts_with(&format!("chunk:1: {message}")), "{function}: {text}");
    }
}

#[test]
fn failed_call_after_send_is_an_error_not_a_replacement() {
    let (engine, _) = with_state();
    run(&engine, "s", "function f() nf.getpacket():send() error('changed my mind') end").unwrap();
    let text = hook_error(call(&engine, "f", &tcp_frame(b""), HookMode::Target));
    assert!(text.starts_with("chunk:1: changed my mind"), "{text}");
}

#[test]
fn reply_checks_its_arguments() {
    let (engine, sink) = with_state();
    run(&engine, "s", "function r() nf.reply(kind, message) end").unwrap();
    let frame = tcp_frame(b"");
    for (kind, message, error) in [
        ("'x'", "'m'", "nf.reply: type must start with 't' (TCP) or 'u' (UDP), got 'x'"),
        ("''", "'m'", "nf.reply: type must start with 't' (TCP) or 'u' (UDP), got ''"),
        ("1", "'m'", "bad argument #1 to 'reply' (string expected, got number)"),
        ("'tcp'", "nil", "bad argument #2 to 'reply' (string or data expected, got nil)"),
    ] {
        run(&engine, "s", &format!("kind, message = {kind}, {message}")).unwrap();
        let text = hook_error(call(&engine, "r", &frame, HookMode::Match));
        assert!(text.starts_with(&format!("chunk:1: {error}")), "{kind}: {text}");
    }
    assert!(sink.packets().is_empty());
}

/// Arguments are read as the original C module reads them: `luaL_checklstring` takes a number
/// as its string form (`nf.reply`, `packet:send`), `luaL_checkinteger` / `luaL_optinteger` take
/// numeric strings and give Lua's own messages (`nf.netlink`'s port and group).
#[test]
fn arguments_are_read_as_the_original_module_reads_them() {
    let (engine, sink) = with_state();
    run(
        &engine,
        "s",
        "function r() nf.reply('tcp', 403) end \
         function s() nf.getpacket():send(42) return 'stolen' end \
         function n() local sent = nf.netlink(port, group, 'x') return sent end",
    )
    .unwrap();
    let frame = tcp_frame(b"");
    call(&engine, "r", &frame, HookMode::Match).unwrap();
    let replies = sink.packets();
    assert_eq!(replies.len(), 1);
    assert!(replies[0].ends_with(b"403"), "{:?}", replies[0]);
    let sent = call(&engine, "s", &frame, HookMode::Target).unwrap().replacement.expect("rewritten");
    assert!(sent.ends_with(b"42"), "{sent:?}");
    for (port, group, error) in [
        ("1", "nil", None),
        ("'7'", "'0'", None),
        ("1", "'x'", Some("bad argument #2 to 'netlink' (number expected, got string)")),
        ("1.5", "0", Some("bad argument #1 to 'netlink' (number has no integer representation)")),
        ("nil", "0", Some("bad argument #1 to 'netlink' (number expected, got nil)")),
    ] {
        run(&engine, "s", &format!("port, group = {port}, {group}")).unwrap();
        match (call(&engine, "n", &frame, HookMode::Match), error) {
            (Ok(_), None) => {}
            (result, Some(error)) => {
                let text = hook_error(result);
                assert!(text.starts_with(&format!("chunk:1: {error}")), "{port}, {group}: {text}");
            }
            (Err(e), None) => panic!("{port}, {group}: {e}"),
        }
    }
}

mod packet_crafting {
    //! Needs nflua-packet's bodies (`tcp_reply`, `udp_reply`, `replace_payload`).

    use super::*;

    #[test]
    fn reply_sends_a_tcp_segment_through_the_sink() {
        let (engine, sink) = with_state();
        run(
            &engine,
            "s",
            "function r(frame, packet) assert(nf.reply('tcp', 'HTTP/1.1 403') == true) return 'drop' end",
        )
        .unwrap();
        let frame = tcp_frame(b"GET /");
        assert_eq!(verdict(&engine, "r", &frame), Some(Verdict::Drop));
        let packets = sink.packets();
        assert_eq!(packets.len(), 1);
        let reply = &packets[0];
        assert_eq!(reply.len(), 20 + 20 + 12);
        assert_eq!(&reply[12..16], &[10, 0, 0, 2], "source: the packet's destination");
        assert_eq!(&reply[16..20], &[10, 0, 0, 1]);
        assert_eq!(&reply[20..22], &80u16.to_be_bytes());
        assert_eq!(&reply[22..24], &40000u16.to_be_bytes());
        assert_eq!(&reply[24..28], &2000u32.to_be_bytes(), "seq = the packet's ack");
        assert_eq!(&reply[28..32], &1005u32.to_be_bytes(), "ack = its seq + payload length");
        assert_eq!(&reply[40..], b"HTTP/1.1 403");
        assert!(nflua_packet::checksum_ok(reply));
    }

    #[test]
    fn reply_udp_and_failures() {
        let (engine, sink) = with_state();
        run(&engine, "s", "function r() local sent = nf.reply(kind, 'x') return sent end").unwrap();
        let frame = tcp_frame(b"");
        run(&engine, "s", "kind = 'udp'").unwrap();
        let text = hook_error(call(&engine, "r", &frame, HookMode::Match));
        assert!(text.starts_with("chunk:1: nf.reply: "), "a UDP reply to a TCP packet: {text}");
        run(&engine, "s", "kind = 't'").unwrap();
        sink.refuse.store(true, Ordering::Relaxed);
        let text = hook_error(call(&engine, "r", &frame, HookMode::Match));
        assert!(text.starts_with("chunk:1: nf.reply: Operation not permitted"), "{text}");
        sink.refuse.store(false, Ordering::Relaxed);
        assert!(matched(&engine, "r", &frame));
        assert_eq!(sink.packets().len(), 1);
    }

    #[test]
    fn send_replaces_the_payload() {
        let (engine, _) = with_state();
        run(
            &engine,
            "s",
            "function rewrite() nf.getpacket():send(data.new('longer payload')) return 'stolen' end",
        )
        .unwrap();
        let frame = tcp_frame(b"short");
        let outcome = call(&engine, "rewrite", &frame, HookMode::Target).unwrap();
        let replacement = outcome.replacement.expect("a replacement packet");
        assert_eq!(&replacement[PAYLOAD_OFFSET - 14..], b"longer payload");
        assert_eq!(&replacement[2..4], &u16::try_from(20 + 20 + 14).unwrap().to_be_bytes());
        assert!(nflua_packet::checksum_ok(&replacement));
    }

    #[test]
    fn send_takes_a_view_as_payload() {
        // The payload doubled: a segment of `packet` (a borrowed view) read before the rewrite.
        let (engine, _) = with_state();
        run(
            &engine,
            "s",
            "function twice(frame, packet) \
               local payload = packet:segment(40) \
               nf.getpacket():send(tostring(payload) .. tostring(payload)) \
               return 'stolen' \
             end \
             function same(frame, packet) nf.getpacket():send(packet:segment(40)) return 'stolen' end",
        )
        .unwrap();
        let frame = tcp_frame(b"abc");
        let replacement = call(&engine, "twice", &frame, HookMode::Target).unwrap().replacement.unwrap();
        assert_eq!(&replacement[PAYLOAD_OFFSET - 14..], b"abcabc");
        let replacement = call(&engine, "same", &frame, HookMode::Target).unwrap().replacement.unwrap();
        assert_eq!(replacement, frame[14..], "the same payload back: the same packet");
    }
}

#[test]
fn pins_keep_a_state_alive() {
    let (engine, _) = with_state();
    assert_eq!(engine.pin("nope").unwrap_err().errno(), 2);
    engine.pin("s").unwrap();
    engine.pin("s").unwrap();
    let err = engine.destroy("s").unwrap_err();
    assert!(matches!(err, EngineError::Busy(ref n) if n == "s"), "{err}");
    assert_eq!((err.errno(), err.to_string()), (16, "state 's' is used by a packet hook".to_string()));
    engine.unpin("s");
    assert_eq!(engine.destroy("s").unwrap_err().errno(), 16, "one pin left");
    engine.unpin("s");
    engine.unpin("s"); // one too many: ignored
    engine.unpin("nope");
    engine.destroy("s").unwrap();
    // A state created again under the name starts unpinned.
    engine.create(config("s", 65536, 1000)).unwrap();
    engine.destroy("s").unwrap();
}

#[test]
fn wants_conntrack_follows_executed_chunks() {
    let (engine, _) = with_state();
    assert!(!engine.wants_conntrack("s"));
    run(&engine, "s", "function f() return true end").unwrap();
    assert!(!engine.wants_conntrack("s"));
    let _ = run(&engine, "s", "function g() return nf.connid() ~= nil end error('even when it fails')");
    assert!(engine.wants_conntrack("s"));
    assert!(!engine.wants_conntrack("nope"));
    engine.destroy("s").unwrap();
    engine.create(config("s", 65536, 1000)).unwrap();
    assert!(!engine.wants_conntrack("s"), "a new state starts without the hint");
}

#[test]
fn a_packet_flood_does_not_exhaust_a_small_state() {
    // Every call leaves two views (garbage without finalizers) and here a packet object (with
    // one) behind; the collector must keep pace without emergency collections, which run no
    // finalizers.
    let (engine, _) = engine();
    engine.create(config("s", 32768, 1000)).unwrap();
    run(
        &engine,
        "s",
        "function m(frame, packet) return packet[10] == 6 end \
         function t() local p = nf.getpacket() p:close() return 'accept' end",
    )
    .unwrap();
    let frame = tcp_frame(&[0; 10]);
    for _ in 0..20_000 {
        assert!(matched(&engine, "m", &frame));
        assert_eq!(verdict(&engine, "t", &frame), Some(Verdict::Accept));
    }
    assert_eq!(engine.stats("s").unwrap().errors, 0);
}

/// A stream hook's call: `packet` is the stream (after the frame in the buffer, but not part of
/// what `nf.reply` and `packet:send` read), `nf.flow()` tells the connection, and packet hooks
/// get nil from it.
#[test]
fn stream_calls_see_the_stream_and_the_flow() {
    use nflua_engine::{FlowInfo, StreamContext};
    let (engine, sink) = with_state();
    run(
        &engine,
        "s",
        "function f(frame, stream) \
           local flow = nf.flow() \
           nf.netlink(1, 0, table.concat({#frame, tostring(stream), flow.id, flow.direction, \
             flow.client, flow.client_port, flow.server, flow.server_port}, ' ')) \
           local p = nf.getpacket() p:send() \
           return 'stolen' \
         end \
         function g() nf.netlink(1, 0, tostring(nf.flow())) return 'accept' end",
    )
    .unwrap();
    let frame = tcp_frame(b"Host: blo");
    let stream = StreamContext {
        bytes: b"GET / HTTP/1.1\r\nHost: blo",
        flow: FlowInfo {
            id: 7,
            direction: "original",
            client: ("10.0.0.1".parse().unwrap(), 40000),
            server: ("10.0.0.2".parse().unwrap(), 80),
        },
    };
    let state = engine.state_ref("s").unwrap();
    let outcome = state.call_stream("f", &packet(&frame, HookMode::Target), &stream).unwrap();
    assert_eq!(outcome.result, HookResult::Target(Some(Verdict::Stolen)));
    assert_eq!(outcome.replacement.as_deref(), Some(&frame[14..]), "the packet, without the stream after it");
    assert_eq!(
        String::from_utf8(sink.sent()[0].payload.clone()).unwrap(),
        format!("{} GET / HTTP/1.1\r\nHost: blo 7 original 10.0.0.1 40000 10.0.0.2 80", frame.len())
    );
    assert_eq!(verdict(&engine, "g", &frame), Some(Verdict::Accept));
    assert_eq!(sink.sent()[1].payload, b"nil");
}

/// Without a kernel to ask (a sink that has no ctnetlink), `nf.conntrack` says so; `nf.connid`
/// is the id the daemon gave.
#[test]
fn conntrack_without_ctnetlink_is_a_clear_error() {
    let (engine, sink) = with_state();
    run(
        &engine,
        "s",
        "function f() \
           local ok, err = pcall(nf.conntrack) \
           nf.netlink(1, 0, tostring(ok) .. ' ' .. err .. ' ' .. tostring(nf.connid())) \
           return 'accept' \
         end",
    )
    .unwrap();
    let frame = tcp_frame(b"x");
    let mut ctx = packet(&frame, HookMode::Target);
    ctx.conntrack_id = Some(77);
    engine.call_hook("s", "f", &ctx).unwrap();
    assert_eq!(sink.sent()[0].payload, b"false nf.conntrack: conntrack is not available here 77");
}

#[test]
fn a_views_layout_lasts_its_call_and_json_null_stays_null() {
    // A call's views are light userdata (tokens), whose metatable every light userdata of the
    // state shares: `json.null` must still behave as a bare one.
    let (engine, sink) = with_state();
    run(
        &engine,
        "s",
        "calls = 0 \
         function look(frame, packet) \
           calls = calls + 1 \
           if calls == 1 then \
             assert(packet:layout{proto = {72, 8}} == packet) \
             kept = packet \
             nf.netlink(1, 0, 'first ' .. packet.proto) \
           else \
             local ok, e = pcall(function() return kept.proto end) \
             nf.netlink(1, 0, 'second ' .. tostring(packet.proto) .. ' ' .. tostring(ok) .. ' ' .. e) \
           end \
           local n = json.null \
           local ok, e = pcall(function() return n[1] end) \
           nf.netlink(1, 0, table.concat({tostring(n), tostring(data.isdata(n)), json.encode({n}), \
             tostring(ok), e:match('attempt to index a userdata value') or e}, ' ')) \
           return true \
         end",
    )
    .unwrap();
    let frame = tcp_frame(b"x");
    assert!(matched(&engine, "look", &frame));
    assert!(matched(&engine, "look", &frame));
    let sent: Vec<String> =
        sink.sent().iter().map(|s| String::from_utf8_lossy(&s.payload).into_owned()).collect();
    let null = "userdata: (nil) false [null] false attempt to index a userdata value";
    assert_eq!(sent, ["first 6", null, "second nil false chunk:1: data buffer is no longer valid", null]);
    assert_eq!(engine.stats("s").unwrap().errors, 0);
}

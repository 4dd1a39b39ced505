//! `dissect`: the protocol dissectors of `nflua-dissect` (and `nflua-packet`'s header reader) as
//! Lua functions that return plain tables.
//!
//! ```lua
//! local hello, why = dissect.tls(bytes)  -- ClientHello: sni, alpn, versions, ciphers, ...
//! local req = dissect.http(bytes)        -- method, target, path, query, version, headers, ...
//! local msg = dissect.dns(bytes)         -- id, response, questions, answers, ...
//! local ip = dissect.ip(packet)          -- version, src, dst, protocol, ports, tcp/udp fields
//! ```
//!
//! Each takes a string or a `data` object (a hook's `packet` view included). When no message
//! comes out it returns `nil` and the reason: exactly `"need more"` when the bytes are a correct
//! beginning (a stream function waits for more), otherwise what is wrong (`"not a TLS handshake
//! record"`). Only a wrong argument type raises. Like decoding in `base64` and `json`, a
//! message that does not parse is an expected outcome of input from outside, not a bug.
//!
//! Costs and memory: one instruction per input byte and per table field made; a `data` input is
//! copied out of its buffer first (tables are made while no buffer lock is held), and that copy
//! and the TLS dissector's scratch count against the state's memory while the call runs.

use mlua::{Lua, Table, Value};
use nflua_dissect::{dns, http, tls, DissectError};

use super::{bad_argument, bytes_of, error, Lib};
use crate::limits::charge;
use crate::state::Context;

pub(crate) fn open(lib: &Lib) -> mlua::Result<Table> {
    let module = lib.lua.create_table_with_capacity(0, 4)?;
    for (name, dissector) in [
        ("tls", tls_table as Dissector),
        ("http", http_table as Dissector),
        ("dns", dns_table as Dissector),
        ("ip", ip_table as Dissector),
    ] {
        let ctx = std::sync::Arc::clone(lib.ctx);
        let function = lib.function(move |lua, input: Value| {
            let answer = with_input(lua, &ctx, name, &input, |bytes| dissector(lua, &ctx, bytes))?;
            match answer {
                Ok(table) => Ok((Value::Table(table), Value::Nil)),
                Err(reason) => Ok((Value::Nil, Value::String(lua.create_string(reason)?))),
            }
        })?;
        module.raw_set(name, function)?;
    }
    Ok(module)
}

/// A table, or the reason there is none.
type Answer = Result<Table, String>;
type Dissector = fn(&Lua, &Context, &[u8]) -> mlua::Result<Answer>;

/// Bytes held outside the Lua heap for the length of a call, counted in the state's memory.
struct Held<'c> {
    ctx: &'c Context,
    bytes: usize,
}

impl<'c> Held<'c> {
    fn take(lua: &Lua, ctx: &'c Context, bytes: usize) -> mlua::Result<Held<'c>> {
        if !ctx.memory.try_reserve(lua, bytes) {
            return Err(error(nflua_data::NO_MEMORY));
        }
        Ok(Held { ctx, bytes })
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.ctx.memory.release(self.bytes);
    }
}

/// Runs `f` on the bytes of a string (borrowed) or a data object (copied, counted).
fn with_input<R>(
    lua: &Lua,
    ctx: &Context,
    name: &str,
    input: &Value,
    f: impl FnOnce(&[u8]) -> mlua::Result<R>,
) -> mlua::Result<R> {
    if let Value::String(s) = input {
        let bytes = s.as_bytes();
        charge(lua, bytes.len() as u64)?;
        return f(&bytes);
    }
    let len = match nflua_data::Data::from_lua_value(lua, input) {
        Some(data) => data.len(),
        None => return Err(bad_argument(1, name, "string or data", input)),
    };
    let _held = Held::take(lua, ctx, len)?;
    let copy = bytes_of(lua, input)
        .ok_or_else(|| bad_argument(1, name, "string or data", input))?
        .map_err(|e| error(format!("dissect.{name}: {e}")))?;
    f(&copy)
}

/// Makes tables and charges one instruction per field set.
struct Out<'l> {
    lua: &'l Lua,
    fields: u64,
}

impl<'l> Out<'l> {
    fn new(lua: &'l Lua) -> Out<'l> {
        Out { lua, fields: 0 }
    }

    fn table(&mut self, fields: usize) -> mlua::Result<Table> {
        self.lua.create_table_with_capacity(0, fields)
    }

    fn list(&mut self, items: usize) -> mlua::Result<Table> {
        self.lua.create_table_with_capacity(items, 0)
    }

    fn set(&mut self, t: &Table, key: &str, value: impl mlua::IntoLua) -> mlua::Result<()> {
        self.fields += 1;
        t.raw_set(key, value)
    }

    fn push(&mut self, t: &Table, value: impl mlua::IntoLua) -> mlua::Result<()> {
        self.fields += 1;
        t.raw_push(value)
    }

    fn bytes(&self, bytes: &[u8]) -> mlua::Result<mlua::LuaString> {
        self.lua.create_string(bytes)
    }

    fn done(self, table: Table) -> mlua::Result<Answer> {
        charge(self.lua, self.fields)?;
        Ok(Ok(table))
    }
}

fn reason(e: DissectError) -> mlua::Result<Answer> {
    Ok(Err(e.to_string()))
}

fn tls_table(lua: &Lua, ctx: &Context, input: &[u8]) -> mlua::Result<Answer> {
    let _held = Held::take(lua, ctx, input.len())?;
    let mut scratch = vec![0u8; input.len()];
    let hello = match tls::client_hello(input, &mut scratch) {
        Ok(hello) => hello,
        Err(e) => return reason(e),
    };
    let mut out = Out::new(lua);
    let t = out.table(10)?;
    out.set(&t, "record_version", hello.record_version)?;
    out.set(&t, "version", hello.legacy_version)?;
    let versions = out.list(4)?;
    for v in hello.supported_versions() {
        out.push(&versions, v)?;
    }
    out.set(&t, "versions", versions)?;
    if let Some(name) = hello.server_name() {
        out.set(&t, "sni", out.bytes(name)?)?;
    }
    let alpn = out.list(2)?;
    for protocol in hello.alpn() {
        out.push(&alpn, out.bytes(protocol)?)?;
    }
    out.set(&t, "alpn", alpn)?;
    out.set(&t, "ciphers", hello.cipher_count())?;
    out.set(&t, "session_id", out.bytes(hello.session_id)?)?;
    let extensions = out.list(16)?;
    for (kind, _) in hello.extensions() {
        out.push(&extensions, kind)?;
    }
    out.set(&t, "extensions", extensions)?;
    out.set(&t, "length", hello.consumed)?;
    out.done(t)
}

fn http_table(lua: &Lua, _: &Context, input: &[u8]) -> mlua::Result<Answer> {
    let request = match http::request(input) {
        Ok(request) => request,
        Err(e) => return reason(e),
    };
    let mut out = Out::new(lua);
    let t = out.table(10)?;
    out.set(&t, "method", out.bytes(request.method)?)?;
    out.set(&t, "target", out.bytes(request.target)?)?;
    out.set(&t, "path", out.bytes(request.path())?)?;
    if let Some(query) = request.query() {
        out.set(&t, "query", out.bytes(query)?)?;
    }
    out.set(&t, "version", out.bytes(request.version)?)?;
    let headers = out.table(8)?;
    let fields = out.list(8)?;
    for (name, value) in request.headers() {
        let lower = out.bytes(&name.to_ascii_lowercase())?;
        // Repeated fields are joined as RFC 9110 §5.3 allows.
        let joined = match headers.raw_get::<Option<mlua::LuaString>>(&lower)? {
            Some(before) => out.bytes(&[&before.as_bytes()[..], b", ", value].concat())?,
            None => out.bytes(value)?,
        };
        out.fields += 1;
        headers.raw_set(lower, joined)?;
        let pair = out.list(2)?;
        out.push(&pair, out.bytes(name)?)?;
        out.push(&pair, out.bytes(value)?)?;
        out.push(&fields, pair)?;
    }
    if let Some(host) = request.header("host") {
        out.set(&t, "host", out.bytes(host)?)?;
    }
    out.set(&t, "headers", headers)?;
    out.set(&t, "fields", fields)?;
    out.set(&t, "length", request.head_len)?;
    out.done(t)
}

fn dns_table(lua: &Lua, _: &Context, input: &[u8]) -> mlua::Result<Answer> {
    let message = match dns::message(input) {
        Ok(message) => message,
        Err(e) => return reason(e),
    };
    let mut out = Out::new(lua);
    let mut name_buf = [0u8; dns::MAX_NAME];
    let mut name = |out: &Out, n: dns::Name<'_>| {
        let len = n.write_dotted(&mut name_buf);
        out.bytes(name_buf.get(..len).unwrap_or_default())
    };
    let t = out.table(12)?;
    out.set(&t, "id", message.id)?;
    out.set(&t, "flags", message.flags)?;
    out.set(&t, "response", message.is_response())?;
    out.set(&t, "opcode", message.opcode())?;
    out.set(&t, "rcode", message.rcode())?;
    out.set(&t, "truncated", message.flags & 0x0200 != 0)?;
    let questions = out.list(usize::from(message.counts[0]).min(16))?;
    for q in message.questions() {
        let entry = out.table(3)?;
        out.set(&entry, "name", name(&out, q.name)?)?;
        out.set(&entry, "type", q.kind)?;
        out.set(&entry, "class", q.class)?;
        out.push(&questions, entry)?;
    }
    out.set(&t, "questions", questions)?;
    for (section, key) in ["answers", "authority", "additional"].into_iter().enumerate() {
        let records = out.list(usize::from(message.counts[section + 1]).min(16))?;
        for record in message.records(section) {
            let entry = out.table(6)?;
            out.set(&entry, "name", name(&out, record.name)?)?;
            out.set(&entry, "type", record.kind)?;
            out.set(&entry, "class", record.class)?;
            out.set(&entry, "ttl", record.ttl)?;
            let data = match record.data() {
                dns::Data::A(a) => out.bytes(a.to_string().as_bytes())?,
                dns::Data::Aaaa(a) => out.bytes(a.to_string().as_bytes())?,
                dns::Data::Name(n) => name(&out, n)?,
                dns::Data::Mx { preference, exchange } => {
                    out.set(&entry, "preference", preference)?;
                    name(&out, exchange)?
                }
                dns::Data::Txt(_) => out.bytes(&record.txt_strings().collect::<Vec<_>>().concat())?,
                dns::Data::Other(bytes) => out.bytes(bytes)?,
            };
            out.set(&entry, "data", data)?;
            out.push(&records, entry)?;
        }
        out.set(&t, key, records)?;
    }
    out.set(&t, "length", message.len)?;
    out.done(t)
}

/// TCP flag letters in bit order: FIN, SYN, RST, PSH, ACK, URG, ECE, CWR.
const TCP_FLAG_LETTERS: &[u8; 8] = b"FSRPAUEC";

fn ip_table(lua: &Lua, _: &Context, input: &[u8]) -> mlua::Result<Answer> {
    let h = match nflua_packet::headers(input) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let mut out = Out::new(lua);
    let t = out.table(16)?;
    let s = &h.summary;
    out.set(&t, "version", s.version)?;
    out.set(&t, "protocol", s.protocol)?;
    out.set(&t, "src", s.src.to_string())?;
    out.set(&t, "dst", s.dst.to_string())?;
    out.set(&t, "ttl", h.ttl)?;
    out.set(&t, "tos", h.tos)?;
    if let Some(id) = h.id {
        out.set(&t, "id", id)?;
    }
    out.set(&t, "length", h.ip_len)?;
    out.set(&t, "header_length", h.ip_header_len)?;
    if let Some(fragment) = h.fragment {
        out.set(&t, "fragment", fragment)?;
    }
    if let (Some(src), Some(dst)) = (s.src_port, s.dst_port) {
        out.set(&t, "src_port", src)?;
        out.set(&t, "dst_port", dst)?;
    }
    out.set(&t, "payload_offset", s.l4_payload.start)?;
    out.set(&t, "payload_length", s.l4_payload.len())?;
    if let Some(tcp) = h.tcp {
        let entry = out.table(6)?;
        out.set(&entry, "seq", tcp.seq)?;
        out.set(&entry, "ack", tcp.ack)?;
        out.set(&entry, "flags", tcp.flags)?;
        let letters: Vec<u8> = (0..8)
            .filter(|bit| tcp.flags & (1 << bit) != 0)
            .filter_map(|bit| TCP_FLAG_LETTERS.get(bit).copied())
            .collect();
        out.set(&entry, "flag_names", out.bytes(&letters)?)?;
        out.set(&entry, "window", tcp.window)?;
        out.set(&entry, "header_length", tcp.header_len)?;
        out.set(&t, "tcp", entry)?;
    }
    if let Some(udp) = h.udp {
        let entry = out.table(2)?;
        out.set(&entry, "length", udp.len)?;
        out.set(&entry, "checksum", udp.checksum)?;
        out.set(&t, "udp", entry)?;
    }
    out.done(t)
}

#[cfg(test)]
mod tests {
    use nflua_dissect::{dns::build as dns_build, tls::build};

    use crate::state::tests::{eval, shared};
    use crate::state::State;
    use crate::StateConfig;

    /// `bytes` as a Lua string literal.
    fn literal(bytes: &[u8]) -> String {
        let body: String = bytes.iter().map(|b| format!("\\x{b:02x}")).collect();
        format!("\"{body}\"")
    }

    fn hello_records() -> Vec<u8> {
        let hello = build::hello(
            &[0x1301, 0x1302],
            &[
                (0, build::sni("blocked.example")),
                (16, build::alpn(&["h2", "http/1.1"])),
                (43, vec![2, 3, 4]),
            ],
        );
        build::records(&hello, 40)
    }

    #[test]
    fn tls_from_strings_and_data_with_need_more_on_a_prefix() {
        let records = hello_records();
        let chunk = format!(
            "local bytes = {all} \
             local h = dissect.tls(bytes) \
             local d = dissect.tls(data.new(bytes)) \
             local none, why = dissect.tls(bytes:sub(1, 50)) \
             local other, reason = dissect.tls('GET / HTTP/1.1') \
             return table.concat({{h.sni, h.alpn[1], h.alpn[2], string.format('%x', h.versions[1]), h.ciphers, \
               string.format('%x', h.version), h.length == #bytes and 'all' or h.length, d.sni, \
               tostring(none), why, tostring(other), reason}}, ' ')",
            all = literal(&records)
        );
        assert_eq!(
            eval(&chunk),
            "blocked.example h2 http/1.1 304 2 303 all blocked.example nil need more nil not a TLS handshake record"
        );
    }

    #[test]
    fn http_with_the_host_split_across_segments() {
        let got = eval(
            "local first, why = dissect.http('GET /a?b=1 HTTP/1.1\\r\\nHost: blo') \
             local r = dissect.http('GET /a?b=1 HTTP/1.1\\r\\nHost: blocked.example\\r\\nX-A: 1\\r\\nx-a: 2\\r\\n\\r\\n') \
             return table.concat({tostring(first), why, r.method, r.path, r.query, r.version, r.host, \
               r.headers['x-a'], r.fields[3][1], #r.fields, r.length}, ' ')",
        );
        assert_eq!(got, "nil need more GET /a b=1 HTTP/1.1 blocked.example 1, 2 x-a 3 62");
    }

    #[test]
    fn dns_questions() {
        let query = dns_build::query("blocked.example", 28);
        let chunk = format!(
            "local m = dissect.dns({q}) \
             local q = m.questions[1] \
             local cut, why = dissect.dns(({q}):sub(1, 20)) \
             return table.concat({{m.id, tostring(m.response), q.name, q.type, q.class, #m.answers, tostring(cut), why}}, ' ')",
            q = literal(&query)
        );
        assert_eq!(eval(&chunk), "4660 false blocked.example 28 1 0 nil need more");
    }

    #[test]
    fn ip_and_tcp_headers() {
        // IPv4, TCP 192.0.2.1:40000 -> 192.0.2.2:443, SYN|ACK, no payload (checksums not checked).
        let mut p = vec![0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2];
        p.extend_from_slice(&[
            0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x12, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        let chunk = format!(
            "local h = dissect.ip({p}) \
             local bad, why = dissect.ip('\\x45') \
             return table.concat({{h.version, h.src, h.dst, h.protocol, h.src_port, h.dst_port, h.ttl, h.id, \
               h.tcp.flag_names, h.tcp.seq, h.tcp.ack, h.payload_offset, h.payload_length, tostring(bad), why}}, ' ')",
            p = literal(&p)
        );
        assert_eq!(
            eval(&chunk),
            "4 192.0.2.1 192.0.2.2 6 40000 443 64 4660 SA 1 2 40 0 nil truncated packet"
        );
    }

    #[test]
    fn only_a_wrong_type_raises() {
        let got = eval(
            "local ok, err = pcall(dissect.tls, 42) \
             local none, why = dissect.dns('') \
             return err .. ' | ' .. tostring(none) .. ' ' .. why",
        );
        assert_eq!(got, "bad argument #1 to 'tls' (string or data expected, got number) | nil need more");
    }

    #[test]
    fn copies_of_data_count_against_the_state_and_are_given_back() {
        let config =
            StateConfig { name: "m".into(), max_alloc_bytes: 96 * 1024, max_runs: 10_000_000, debug: false };
        let Ok(mut state) = State::new(config, shared()) else { panic!("state") };
        // A 30 KiB buffer of records: the copy and the scratch (60 KiB) do not fit beside it.
        let big = build::records(&build::hello(&[1], &[(0xfe, vec![0; 30_000])]), 16384);
        let chunk = format!(
            "local d = data.new({b}) \
             local ok, err = pcall(dissect.tls, d) \
             local small = data.new({small}) \
             for i = 1, 100 do assert(dissect.tls(small).sni == 'blocked.example') end \
             assert(not ok and err == 'not enough memory', tostring(err))",
            b = literal(&big),
            small = literal(&hello_records())
        );
        if let Err(e) = state.execute(chunk.as_bytes(), "=chunk") {
            panic!("{e}");
        }
    }
}

//! The `data` module as a Lua script sees it: each test runs a snippet in a fresh state with the
//! module registered as the global `data`. Snippets run twice: with plain objects, and with
//! `data.new` making borrowed views (see `lent_state`), which must behave the same.

use mlua::{Function, Lua, Value};
use nflua_data::{open, view_caller, Data, DataError, LentBuffer, MAX_NEW_LEN};

/// Lua helpers available to every snippet.
const PRELUDE: &str = r#"
function expect_error(msg, f, ...)
    local ok, err = pcall(f, ...)
    assert(not ok, "expected an error containing: " .. msg)
    local text = tostring(err)
    assert(text:find(msg, 1, true), "error '" .. text .. "' does not contain '" .. msg .. "'")
end
"#;

fn state() -> Lua {
    let lua = Lua::new();
    lua.globals().set("data", open(&lua).expect("open data module")).expect("set global");
    lua.load(PRELUDE).exec().expect("prelude");
    lua
}

fn run(lua: &Lua, code: &str) {
    if let Err(err) = lua.load(code).exec() {
        panic!("Lua snippet failed: {err}\n--- snippet ---\n{code}");
    }
}

/// A state whose `data.new` makes borrowed views: each object is a view of a `LentBuffer` of its
/// own, filled with the bytes of the plain object the original `data.new` made.
fn lent_state() -> Lua {
    let lua = state();
    let lend = lua
        .create_function(|lua, plain: Data| {
            let mut buffer = LentBuffer::new(lua);
            let fill = buffer.refill(&plain.to_vec().map_err(mlua::Error::external)?);
            buffer.lend(lua, &fill)
        })
        .expect("lend");
    lua.globals().set("lend", lend).expect("set");
    run(&lua, "local new = data.new data.new = function(...) return lend(new(...)) end");
    lua
}

fn check(code: &str) {
    run(&state(), code);
    run(&lent_state(), code);
}

#[test]
fn new_from_size_string_and_table() {
    check(
        r#"
        local d = data.new(4)
        assert(#d == 4)
        for i = 1, 4 do assert(d[i] == 0) end
        local s = data.new("ab\0c")
        assert(#s == 4 and s[1] == 97 and s[3] == 0 and s[4] == 99)
        assert(tostring(s) == "ab\0c")
        assert(#data.new(0) == 0 and tostring(data.new("")) == "")
        local t = data.new{0xFF, 0xFE, 0}
        assert(#t == 3 and t[1] == 255 and t[2] == 254)
        assert(#data.new(3.0) == 3)
        "#,
    );
}

#[test]
fn new_rejects_bad_arguments() {
    check(
        r#"
        expect_error("bad argument #1 to 'new' (size must not be negative, got -1)", data.new, -1)
        expect_error("size must be an integer, got 1.5", data.new, 1.5)
        expect_error("number, string or table expected, got boolean", data.new, true)
        expect_error("number, string or table expected, got nil", data.new)
        expect_error("byte #2 must be an integer from 0 to 255, got 256", data.new, {1, 256})
        expect_error("exceeds the limit", data.new, math.maxinteger)
        "#,
    );
    let lua = state();
    lua.globals().set("limit", MAX_NEW_LEN + 1).expect("set");
    run(&lua, r#"expect_error("exceeds the limit", data.new, limit)"#);
}

#[test]
fn bytes_read_and_write() {
    check(
        r#"
        local d = data.new(3)
        d[1] = 255; d[2] = 0x7f; d[3] = 1.0
        assert(d[1] == 255 and d[2] == 127 and d[3] == 1)
        assert(math.type(d[1]) == "integer")
        assert(d[2.0] == 127 and d[2^63] == nil and d[-2^63] == nil and d[0/0] == nil)
        d[2.0] = 5
        assert(d[2] == 5)
        d[2] = 0x7f
        assert(tostring(d) == "\xff\x7f\x01")
        -- out-of-range reads are nil
        assert(d[0] == nil and d[4] == nil and d[-1] == nil and d[math.maxinteger] == nil)
        assert(d[math.mininteger] == nil and d[1.5] == nil and d[true] == nil and d.nosuch == nil)
        -- out-of-range writes raise
        expect_error("index 4 is outside a data buffer of 3 bytes", function() d[4] = 1 end)
        expect_error("index 0 is outside a data buffer of 3 bytes", function() d[0] = 1 end)
        expect_error("outside", function() d[math.mininteger] = 1 end)
        -- bad values raise
        expect_error("byte value must be an integer from 0 to 255, got 256", function() d[1] = 256 end)
        expect_error("got -1", function() d[1] = -1 end)
        expect_error("got 1.5", function() d[1] = 1.5 end)
        expect_error("got string", function() d[1] = "x" end)
        expect_error("got nil", function() d[1] = nil end)
        expect_error("indexed by integers or field names, got boolean", function() d[true] = 1 end)
        expect_error("indexed by integers or field names, got number", function() d[1.5] = 1 end)
        assert(tostring(d) == "\xff\x7f\x01", "failed writes change nothing")
        "#,
    );
}

#[test]
fn segments_share_memory() {
    check(
        r#"
        local d = data.new("0123456789")
        local s = d:segment(2, 3)
        assert(data.isdata(s) and #s == 3 and tostring(s) == "234")
        s[1] = string.byte("x")
        assert(tostring(d) == "01x3456789", "segment writes reach the parent")
        d[4] = string.byte("y")
        assert(s[2] == string.byte("y"), "parent writes reach the segment")
        assert(s[4] == nil and s[0] == nil, "no reads outside the segment")
        expect_error("index 4 is outside a data buffer of 3 bytes", function() s[4] = 0 end)
        assert(tostring(d:segment(7)) == "789", "default length is to the end")
        assert(tostring(d:segment()) == tostring(d), "default offset is 0")
        assert(#d:segment(10) == 0, "empty segment at the end")
        assert(#d:segment(0, 0) == 0)
        local ss = s:segment(1, 1)
        assert(tostring(ss) == "y", "segment of a segment is relative to it")
        -- out of range: nil
        assert(d:segment(11) == nil)
        assert(d:segment(5, 6) == nil)
        assert(d:segment(-1) == nil and d:segment(0, -1) == nil)
        assert(s:segment(0, 4) == nil)
        assert(d:segment(math.maxinteger, math.maxinteger) == nil)
        expect_error("bad argument #2 to 'segment' (integer expected, got string)", d.segment, d, "a")
        expect_error("bad argument #3 to 'segment' (integer expected, got 1.5)", d.segment, d, 0, 1.5)
        "#,
    );
}

#[test]
fn layout_reads_and_writes_bit_fields() {
    check(
        r#"
        -- an IPv4 header start: 45 00 00 54 | 12 34 40 00 | 40 01 ...
        local d = data.new("\x45\x00\x00\x54\x12\x34\x40\x00\x40\x01\xAA\xBB")
        assert(d:layout{
            version = {0, 4}, ihl = {4, 4}, tot_len = {16, 16}, id = {32, 16, "net"},
            df = {49, 1}, ttl = {64, 8}, proto = {72, 8},
            le16 = {16, 16, "little"}, word = {0, 32, "big"},
            all = {0, 64}, named = {offset = 80, length = 16, endian = "little"},
        } == d, "layout returns the object")
        assert(d.version == 4 and d.ihl == 5 and d.tot_len == 0x54 and d.id == 0x1234)
        assert(d.df == 1 and d.ttl == 64 and d.proto == 1)
        assert(d.le16 == 0x5400 and d.word == 0x45000054 and d.named == 0xBBAA)
        assert(d.all == 0x4500005412344000)
        d.ttl = 63; d.version = 6; d.df = 0
        assert(d[9] == 63 and d[1] == 0x65 and d[7] == 0x00)
        d.le16 = 0x1234
        assert(d[3] == 0x34 and d[4] == 0x12)
        assert(d.nosuch == nil)
        "#,
    );
}

#[test]
fn layout_write_truncates_to_width() {
    check(
        r#"
        local d = data.new(2):layout{hi = {0, 4}, lo = {4, 4}, b = {8, 8}}
        d.lo = 0x1F
        assert(d.lo == 0xF and d.hi == 0, "only the low 4 bits are stored")
        d.b = -1
        assert(d.b == 255, "negative values are two's complement")
        d.b = 0x1FF
        assert(d.b == 0xFF)
        d.hi = 2.0
        assert(d.hi == 2)
        expect_error("field 'b' expects an integer, got string", function() d.b = "x" end)
        expect_error("field 'b' expects an integer, got 1.5", function() d.b = 1.5 end)
        "#,
    );
}

#[test]
fn layout_64_bit_fields_wrap_to_lua_integers() {
    check(
        r#"
        local d = data.new(9):layout{q = {0, 64}, odd = {4, 64}, le = {8, 64, "little"}}
        d.q = -1
        assert(d.q == -1 and d[1] == 255 and d[8] == 255 and d[9] == 0)
        d.q = 0
        d.odd = 0x0123456789ABCDEF
        assert(d.odd == 0x0123456789ABCDEF and d[1] == 0x00 and d[2] == 0x12 and d[9] == 0xF0)
        d.le = math.mininteger
        assert(d.le == math.mininteger and d[9] == 0x80)
        "#,
    );
}

#[test]
fn layout_fields_outside_the_view() {
    check(
        r#"
        local d = data.new(2):layout{inside = {8, 8}, past = {9, 8}, far = {64, 1}}
        assert(d.inside == 0 and d.past == nil and d.far == nil)
        expect_error("field 'past' lies outside a data buffer of 2 bytes", function() d.past = 1 end)
        expect_error("field 'far' lies outside", function() d.far = 1 end)
        assert(tostring(d) == "\0\0")
        "#,
    );
}

#[test]
fn layout_string_fields() {
    check(
        r#"
        local d = data.new("abcdef"):layout{mid = {16, 16, "string"}, tail = {32, 32, "string"}}
        assert(d.mid == "cd" and d.tail == nil)
        d.mid = "XY"
        assert(tostring(d) == "abXYef")
        expect_error("field 'mid' expects a string of 2 bytes, got a string of 3 bytes",
            function() d.mid = "XYZ" end)
        expect_error("field 'mid' expects a string, got 5", function() d.mid = 5 end)
        expect_error("field 'tail' lies outside", function() d.tail = "1234" end)
        "#,
    );
}

#[test]
fn layout_errors() {
    check(
        r#"
        local d = data.new(4)
        expect_error("bad argument #2 to 'layout' (table expected, got number)", d.layout, d, 5)
        expect_error("bad argument #1 to 'layout' (data expected)", d.layout, data.layout{}, {})
        expect_error("invalid layout field 'x': length must be at least 1 bit", d.layout, d, {x = {0, 0}})
        expect_error("invalid layout field 'x': integer fields are at most 64 bits wide, got 65",
            d.layout, d, {x = {0, 65}})
        expect_error("invalid layout field 'x': offset must be a non-negative integer",
            d.layout, d, {x = {-1, 8}})
        expect_error("invalid layout field 'x': length must be a positive integer",
            d.layout, d, {x = {0}})
        expect_error("unknown endian or type 'middle'", d.layout, d, {x = {0, 8, "middle"}})
        expect_error("little-endian fields wider than 8 bits must be whole bytes, got 12 bits",
            d.layout, d, {x = {0, 12, "little"}})
        expect_error("string fields must have offset and length in multiples of 8 bits",
            d.layout, d, {x = {4, 8, "string"}})
        expect_error("expected a table {offset, length [, endian]}, got number", d.layout, d, {x = 5})
        expect_error("invalid layout field '1': layout field names must be strings",
            d.layout, d, {{0, 8}})
        expect_error("invalid layout field 'segment': the name is reserved for a data method",
            d.layout, d, {segment = {0, 8}})
        "#,
    );
}

#[test]
fn methods_take_precedence_and_cannot_be_assigned() {
    check(
        r#"
        local d = data.new(4):layout{a = {0, 8}}
        assert(type(d.segment) == "function" and type(d.layout) == "function")
        expect_error("cannot assign to method 'segment' of a data object", function() d.segment = 1 end)
        expect_error("cannot assign to method 'layout'", function() d.layout = 1 end)
        expect_error("data object has no field 'b'", function() d.b = 1 end)
        d.a = 7
        assert(d[1] == 7)
        "#,
    );
}

#[test]
fn layout_objects_replacement_and_segments() {
    check(
        r#"
        local l = data.layout{first = {0, 8}, second = {8, 8}}
        local d = data.new("\1\2\3")
        d:layout(l)
        assert(d.first == 1 and d.second == 2)
        local e = data.new("\9\8"):layout(l)
        assert(e.first == 9 and e.second == 8)
        d:layout{third = {16, 8}}
        assert(d.first == nil and d.third == 3, "a new layout replaces the old one")
        local s = d:segment(1)
        assert(s.third == nil, "segments start without a layout")
        s:layout{b = {0, 8}}
        assert(s.b == 2 and d.third == 3, "the segment's layout is its own")
        expect_error("bad argument #1 to 'layout' (table expected, got string)", data.layout, "x")
        assert(tostring(l):find("data.layout", 1, true))
        "#,
    );
}

#[test]
fn isdata_and_type_name() {
    check(
        r#"
        assert(data.isdata(data.new(1)) == true)
        assert(data.isdata(data.new(1):segment(0)) == true)
        for _, x in ipairs{1, "s", {}, true, data.layout{}, io and io.stdout or 0} do
            assert(data.isdata(x) == false)
        end
        assert(data.isdata() == false and data.isdata(nil) == false)
        local ok, err = pcall(function() return data.new(1) + 1 end)
        assert(not ok and tostring(err):find("data", 1, true), tostring(err))
        "#,
    );
}

#[test]
fn invalidation_from_rust_reaches_every_view() {
    let lua = state();
    let d = Data::from_bytes(b"packet");
    lua.globals().set("pkt", d.clone()).expect("set");
    run(
        &lua,
        r#"
        seg = pkt:segment(1, 3)
        pkt:layout{b = {0, 8}}
        kept = pkt
        assert(tostring(seg) == "ack" and pkt.b == string.byte("p"))
        "#,
    );
    d.invalidate();
    run(
        &lua,
        r#"
        local msg = "data buffer is no longer valid"
        for _, v in ipairs{kept, seg} do
            expect_error(msg, function() return v[1] end)
            expect_error(msg, function() return v[100] end)
            expect_error(msg, function() return v[0] end)
            expect_error(msg, function() return v.b end)
            expect_error(msg, function() return v.nosuch end)
            expect_error(msg, function() v[1] = 1 end)
            expect_error(msg, function() v.b = 1 end)
            expect_error(msg, function() v[true] = 1 end)
            expect_error(msg, function() return #v end)
            expect_error(msg, function() return tostring(v) end)
            expect_error(msg, function() return v:segment(0) end)
            expect_error(msg, function() return v:segment(100) end)
            expect_error(msg, function() return v:layout{} end)
            assert(data.isdata(v) == true)
        end
        "#,
    );
}

#[test]
fn invalidating_a_segment_invalidates_the_parent() {
    let lua = state();
    run(&lua, r#"parent = data.new("abc"); child = parent:segment(1)"#);
    let child: Data = lua.globals().get("child").expect("child");
    child.invalidate();
    run(&lua, r#"expect_error("data buffer is no longer valid", function() return #parent end)"#);
}

#[test]
fn rust_sees_lua_writes_and_vice_versa() {
    let lua = state();
    let d = Data::with_size(4);
    lua.globals().set("d", d.clone()).expect("set");
    run(&lua, "d[2] = 0xAB");
    assert_eq!(d.to_vec(), Ok(vec![0, 0xAB, 0, 0]));
    d.write_at(3, &[0xCD]).expect("write");
    run(&lua, "assert(d[4] == 0xCD)");
    // Lua-made buffers come back to Rust with their layout and shared memory.
    run(&lua, r#"made = data.new("xyz"):layout{f = {0, 8}}"#);
    let made: Value = lua.globals().get("made").expect("get");
    let from_lua = Data::from_lua_value(&lua, &made).expect("a data object");
    assert_eq!(from_lua.to_vec(), Ok(b"xyz".to_vec()));
    assert!(from_lua.layout().is_some_and(|l| l.get(b"f").is_some()));
    from_lua.write_at(0, b"X").expect("write");
    run(&lua, r#"assert(tostring(made) == "Xyz")"#);
    assert!(Data::from_lua_value(&lua, &Value::Integer(1)).is_none());
    let not_data: mlua::Result<Data> = lua.load("{}").eval();
    assert!(not_data.is_err());
    from_lua.invalidate();
    assert_eq!(from_lua.to_vec(), Err(DataError::Invalidated));
}

#[test]
fn error_message_reaches_rust_callers() {
    let lua = state();
    let d = Data::with_size(1);
    lua.globals().set("d", d.clone()).expect("set");
    d.invalidate();
    let err = lua.load("return d[1]").exec().expect_err("must fail");
    assert!(err.to_string().contains("data buffer is no longer valid"), "{err}");
}

#[test]
fn lua_finalizer_during_tostring_does_not_deadlock() {
    // tostring allocates a Lua string; a finalizer run by that allocation may write the buffer.
    check(
        r#"
        local d = data.new(4096)
        for i = 1, 200 do
            setmetatable({}, {__gc = function() d[1] = (d[1] + 1) % 256 end})
        end
        collectgarbage("step", 0)
        for i = 1, 200 do
            setmetatable({}, {__gc = function() d[1] = (d[1] + 1) % 256 end})
            local _ = tostring(d)
        end
        collectgarbage()
        "#,
    );
}

/// A state, a buffer filled with `bytes`, and the `data.isdata` check run on views as globals.
fn lent(bytes: &[u8]) -> (Lua, LentBuffer, Data) {
    let lua = state();
    let buffer = LentBuffer::new(&lua);
    let fill = buffer.refill(bytes);
    (lua, buffer, fill)
}

#[test]
fn borrowed_views_are_data_objects() {
    let (lua, mut buffer, fill) = lent(b"0123456789");
    let seg = fill.segment(2, Some(3)).expect("segment");
    lua.globals().set("v", buffer.lend(&lua, &fill).expect("lend")).expect("set");
    lua.globals().set("s", buffer.lend(&lua, &seg).expect("lend")).expect("set");
    run(
        &lua,
        r#"
        assert(data.isdata(v) and data.isdata(s) and type(v) == "userdata")
        assert(getmetatable(v) == false, "the metatable is protected")
        assert(#v == 10 and tostring(s) == "234" and v[1] == 48 and v[11] == nil)
        s[1] = string.byte("x")
        assert(tostring(v) == "01x3456789", "a view and its segment share the bytes")
        local ss = v:segment(8)
        assert(data.isdata(ss) and tostring(ss) == "89" and not rawequal(ss, v:segment(8)))
        assert(v:layout{a = {0, 8}, b = {8, 8, "little"}} == v and v.a == 48 and v.b == 49)
        v.b = 0x41
        assert(v[2] == 0x41 and ss.a == nil, "segments start without a layout")
        assert(data.isdata(data.new(1)) and not data.isdata(data.layout{}))
        expect_error("data object has no field 'nosuch'", function() v.nosuch = 1 end)
        expect_error("attempt to perform arithmetic on a data value", function() return v + 1 end)
        keep = {v, s, ss, v:segment(0, 2):layout{x = {0, 8}}}
        "#,
    );
    // Rust sees what Lua wrote, through the fill and through `Data::from_lua_value`.
    assert_eq!(fill.to_vec(), Ok(b"0A x3456789".iter().filter(|&&b| b != b' ').copied().collect()));
    let v: Value = lua.globals().get("v").expect("v");
    let from_lua = Data::from_lua_value(&lua, &v).expect("a view is a data object");
    assert!(from_lua.shares_memory_with(&fill));
    assert!(from_lua.layout().is_some_and(|l| l.get(b"a").is_some()));
    let plain: Data = lua.load("return v:segment(1, 1)").eval().expect("FromLua takes views");
    assert_eq!(plain.to_vec(), Ok(b"A".to_vec()));

    // The next fill kills every view of this one, wherever it is kept.
    let next = buffer.refill(b"new bytes");
    run(
        &lua,
        r#"
        local msg = "data buffer is no longer valid"
        for _, x in ipairs(keep) do
            assert(data.isdata(x))
            expect_error(msg, function() return x[1] end)
            expect_error(msg, function() return x.a end)
            expect_error(msg, function() return x.x end)
            expect_error(msg, function() x[1] = 1 end)
            expect_error(msg, function() return #x end)
            expect_error(msg, function() return tostring(x) end)
            expect_error(msg, function() return x:segment(0) end)
            expect_error(msg, function() return x:layout{} end)
            assert(type(x.segment) == "function", "methods are still found")
        end
        "#,
    );
    assert_eq!(from_lua.to_vec(), Err(DataError::Invalidated));
    assert_eq!(plain.to_vec(), Err(DataError::Invalidated));
    assert_eq!(next.to_vec(), Ok(b"new bytes".to_vec()));
    buffer.invalidate();
    assert_eq!(next.to_vec(), Err(DataError::Invalidated));
    let other = LentBuffer::new(&lua);
    assert!(buffer.lend(&lua, &other.refill(b"x")).is_err(), "views of another buffer are refused");
}

#[test]
fn view_caller_makes_views_inside_the_call() {
    let (lua, mut buffer, fill) = lent(b"frame:packet");
    let packet = fill.segment(6, None).expect("segment");
    let caller = view_caller(&lua).expect("caller");
    let f: Function = lua
        .load(
            r#"
            return function(tag, frame, packet)
                assert(data.isdata(frame) and data.isdata(packet))
                packet[1] = string.byte("P")
                kept = packet
                return tag .. " " .. tostring(frame) .. " " .. #packet
            end
            "#,
        )
        .eval()
        .expect("f");
    let views = buffer.views(&lua, &fill, Some(&packet)).expect("views");
    let got: String = caller.call((&f, "t", views)).expect("call");
    assert_eq!(got, "t frame:Packet 6");
    let one: Function = lua.load("return function(x, v) return x .. tostring(v) end").eval().expect("f");
    let views = buffer.views(&lua, &packet, None).expect("views");
    assert_eq!(caller.call::<String>((&one, "x", views)).expect("call"), "xPacket");
    buffer.invalidate();
    run(&lua, r#"expect_error("data buffer is no longer valid", function() return kept[1] end)"#);

    // Mixing fills or buffers is refused; forged tokens make invalid views, nothing worse.
    let stale = packet.clone();
    let fresh = buffer.refill(b"0123456789");
    assert!(buffer.views(&lua, &fresh, Some(&stale)).is_err());
    let err = caller.call::<()>((&one, "x", 3, 0, 0)).expect_err("n out of range");
    assert!(err.to_string().contains("view caller: bad arguments"), "{err}");
    let (n, token, _) = buffer.views(&lua, &fresh, None).expect("views");
    let forged: Function = lua
        .load("return function(v) local ok, e = pcall(function() return v[1] end) return ok, tostring(e) end")
        .eval()
        .expect("f");
    // Bits: 1 (the mark), 12 of slot, 1 of view, then the generation (see `token.rs`).
    let forgeries = [
        (token + (7 << 1), "no longer valid"), // another slot (no such memory: not a view)
        (token ^ (1 << 13), "no longer valid"), // the other view, last set for an earlier fill
        (token + (1 << 14), "no longer valid"), // a later generation
        (token - (1 << 14), "no longer valid"), // an earlier one
        (token - 1, "attempt to index a userdata value"), // no mark: not a token at all
    ];
    for (forgery, want) in forgeries {
        let (ok, err): (bool, String) = caller.call((&forged, n, forgery, 0)).expect("call");
        assert!(!ok, "a forged token ({forgery:#x}) must be invalid");
        let want = if forgery == token + (7 << 1) { "attempt to index a userdata value" } else { want };
        assert!(err.contains(want), "{forgery:#x}: {err}");
    }
    let (ok, _): (bool, Value) = caller.call((&forged, n, token, 0)).expect("call");
    assert!(ok, "the current fill's token works");
}

#[test]
fn tokens_take_no_memory() {
    let (lua, mut buffer, fill) = lent(b"bytes");
    let caller = view_caller(&lua).expect("caller");
    let f: Function = lua.load("return function(v) return #v end").eval().expect("f");
    let views = buffer.views(&lua, &fill, None).expect("views");
    assert_eq!(caller.call::<usize>((&f, views)).expect("call"), 5);
    lua.gc_collect().expect("collect");
    lua.set_memory_limit(lua.used_memory()).expect("limit");
    let err = buffer.lend(&lua, &fill).expect_err("no room for a userdata view");
    assert!(err.to_string().contains("not enough memory"), "{err}");
    lua.set_memory_limit(0).expect("no limit");
    let mut call = || {
        let fill = buffer.refill(b"more bytes");
        let views = buffer.views(&lua, &fill, Some(&fill)).expect("views");
        let _: usize = caller.call((&f, views)).expect("call");
    };
    // mlua's own call machinery settles in the first calls.
    for _ in 0..100 {
        call();
    }
    let before = lua.used_memory();
    lua.gc_stop();
    for _ in 0..1000 {
        call();
    }
    lua.gc_restart();
    assert_eq!(lua.used_memory(), before, "a thousand calls with two views allocated nothing");
}

#[test]
fn other_light_userdata_behave_as_without_metatable() {
    // The views' metatable is every light userdata's once a state lends tokens.
    let (lua, _buffer, _) = lent(b"x");
    view_caller(&lua).expect("caller");
    lua.globals().set("null", Value::LightUserData(mlua::LightUserData(std::ptr::null_mut()))).expect("set");
    let got: String = lua
        .load(
            r#"
            local out = { tostring(null), tostring(data.isdata(null)), tostring(null == null) }
            for _, f in ipairs{ function() return null[1] end, function() return null.segment end,
                                function() null[1] = 2 end, function() return #null end } do
              local ok, e = pcall(f)
              out[#out + 1] = tostring(ok) .. " " .. e
            end
            return table.concat(out, "|")
            "#,
        )
        .set_name("=chunk")
        .eval()
        .expect("snippet");
    assert_eq!(
        got,
        "userdata: (nil)|false|true|false chunk:3: attempt to index a userdata value|\
         false chunk:3: attempt to index a userdata value|\
         false chunk:4: attempt to index a userdata value|\
         false chunk:4: attempt to get length of a userdata value"
    );
}

#[test]
fn views_need_no_finalizer() {
    // One full collection frees dropped views (objects with a finalizer need two).
    let (lua, mut buffer, fill) = lent(&[0; 64]);
    lua.globals().set("v", buffer.lend(&lua, &fill).expect("lend")).expect("set");
    lua.gc_collect().expect("collect");
    let before = lua.used_memory();
    lua.gc_stop();
    run(&lua, "for i = 1, 10000 do local s = v:segment(i % 64) end");
    assert!(lua.used_memory() > before + 100_000, "the segments were allocated");
    lua.gc_restart();
    lua.gc_collect().expect("collect");
    assert!(lua.used_memory() < before + 1024, "{} bytes left over", lua.used_memory() - before);
}

#[test]
fn errors_are_strings_at_the_callers_position() {
    // Plain objects, views (through the fast `__index` and the general one), module functions.
    for (lent, lua) in [(false, state()), (true, lent_state())] {
        let got: String = lua
            .load(
                r#"
                local out = {}
                local function try(f) local ok, e = pcall(f) out[#out + 1] = type(e) .. " " .. e end
                local d = data.new(2)
                try(function() d[5] = 1 end)
                try(function() d:layout{f = {0, 8}} d.f = "x" end)
                try(function() d:segment("x") end)
                try(function() data.new(-1) end)
                try(function() d:layout(5) end)
                try(function() d.segment = 1 end)
                return table.concat(out, "\n")
                "#,
            )
            .set_name("=chunk")
            .eval()
            .expect("snippet");
        // The lent state's `data.new` is a Lua wrapper, whose line is the position there.
        let keep = |line: &&str| !lent || !line.contains("'new'");
        let got: Vec<&str> = got.lines().filter(keep).collect();
        let want: Vec<&str> = WANT.lines().filter(keep).collect();
        assert_eq!(got, want);
    }
    const WANT: &str = "string chunk:5: index 5 is outside a data buffer of 2 bytes\n\
             string chunk:6: field 'f' expects an integer, got string\n\
             string chunk:7: bad argument #2 to 'segment' (integer expected, got string)\n\
             string chunk:8: bad argument #1 to 'new' (size must not be negative, got -1)\n\
             string chunk:9: bad argument #2 to 'layout' (table expected, got number)\n\
             string chunk:10: cannot assign to method 'segment' of a data object";
    // An invalidated view read through the views' C `__index` and `__len`: still the script's
    // position.
    let (lua, buffer, fill) = lent(b"abc");
    let mut buffer = buffer;
    let view = buffer.lend(&lua, &fill).expect("lend");
    buffer.invalidate();
    lua.globals().set("v", view).expect("set");
    let got: String = lua
        .load("local ok, a = pcall(function() return v[1] end)\nlocal ok, b = pcall(function() return #v end)\nreturn a .. '|' .. b")
        .set_name("=chunk")
        .eval()
        .expect("snippet");
    assert_eq!(got, "chunk:1: data buffer is no longer valid|chunk:2: data buffer is no longer valid");
}

/// A meter that counts like the engine's: a fixed room and a work budget.
struct TestMeter {
    room: usize,
    held: std::sync::atomic::AtomicUsize,
    work: std::sync::atomic::AtomicU64,
    budget: u64,
}

impl nflua_data::Meter for TestMeter {
    fn reserve(&self, _: &Lua, bytes: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let held = self.held.load(Relaxed);
        if held + bytes > self.room {
            return false;
        }
        self.held.store(held + bytes, Relaxed);
        true
    }

    fn release(&self, bytes: usize) {
        self.held.fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    fn charge(&self, _: &Lua, work: u64) -> mlua::Result<()> {
        let total = self.work.fetch_add(work, std::sync::atomic::Ordering::Relaxed) + work;
        if total > self.budget {
            return Err(mlua::Error::RuntimeError("instruction limit exceeded".into()));
        }
        Ok(())
    }
}

#[test]
fn a_meter_counts_buffers_and_work() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;
    let lua = state();
    let meter = Arc::new(TestMeter { room: 10_000, held: 0.into(), work: 0.into(), budget: 20_000 });
    nflua_data::set_meter(&lua, Arc::clone(&meter) as Arc<dyn nflua_data::Meter>);
    run(&lua, "a = data.new(4000) b = data.new(('x'):rep(3000)) c = data.new{1, 2, 3}");
    assert_eq!(meter.held.load(Relaxed), 7003);
    assert_eq!(meter.work.load(Relaxed), 7003);
    let got: String = lua.load("local ok, e = pcall(data.new, 3000) return e").eval().expect("snippet");
    assert_eq!(got, "not enough memory", "refused without position, as Lua's own memory error");
    assert_eq!(meter.work.load(Relaxed), 7003, "nothing charged for a refused buffer");
    // tostring copies the bytes; a layout charges its entries; a string field its bytes.
    run(
        &lua,
        "local s = tostring(a) a:layout{f = {0, 64, 'string'}, g = {0, 8}} local x = a.f a.f = 'abcdefgh'",
    );
    assert_eq!(meter.work.load(Relaxed), 7003 + 4000 + 2 + 8 + 8);
    // Segments share the memory: nothing reserved. Freed buffers give their bytes back.
    run(&lua, "s = a:segment(10, 100) a = nil b = nil collectgarbage() collectgarbage()");
    assert_eq!(meter.held.load(Relaxed), 4003, "a segment keeps its memory");
    run(&lua, "s = nil collectgarbage() collectgarbage()");
    assert_eq!(meter.held.load(Relaxed), 3);
    let got: String = lua
        .load("local ok, e = pcall(function() return tostring(data.new(9000)) end) return e")
        .set_name("=chunk")
        .eval()
        .expect("snippet");
    assert_eq!(got, "chunk:1: instruction limit exceeded");
}

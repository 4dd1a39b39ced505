//! The engine's `string.find/match/gmatch/gsub` against Lua 5.4's own: the same call runs in a
//! state and in a plain Lua with the stock string library, and both answers (results, or the
//! error text with its position) must be byte for byte the same. Random calls come from a
//! grammar of valid and invalid patterns, replacements and arguments; hand-written cases cover
//! each feature. Then the limit: the catastrophic patterns of issue 12 stop at `maxruns`, fast,
//! and what they were charged is the figure asserted.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nflua_engine::{Engine, EngineConfig, EngineError, NetlinkSink, StateConfig};
use proptest::prelude::*;

#[derive(Default)]
struct Collect(Mutex<Vec<u8>>);

impl NetlinkSink for Collect {
    fn send_data(&self, _: &str, _: u32, _: u32, _: u32, payload: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(payload);
        Ok(payload.len())
    }
}

/// Serializes what `pcall` returned, in both Luas alike; sends it in pieces that fit a DATA
/// message.
const PRELUDE: &str = r##"local function show(v)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t == "number" then return math.type(v) .. ":" .. tostring(v) end
  if t == "boolean" or t == "nil" then return tostring(v) end
  return t
end
local function pack(...)
  local out = {}
  for i = 1, select("#", ...) do out[#out + 1] = show((select(i, ...))) end
  return select("#", ...) .. "[" .. table.concat(out, ",") .. "]"
end
local function emit(text)
  for i = 1, #text, 4000 do nf.netlink(1, 0, text:sub(i, i + 3999)) end
end
local function iterate(it)
  local rounds = {}
  for _ = 1, 100 do
    local r = table.pack(it())
    if r[1] == nil then break end
    rounds[#rounds + 1] = pack(table.unpack(r, 1, r.n))
  end
  return table.concat(rounds, "|")
end
"##;

/// The same chunk run in a state and in a stock Lua.
struct Pair {
    engine: Engine,
    sink: Arc<Collect>,
    stock: mlua::Lua,
}

impl Pair {
    fn new() -> Pair {
        let sink = Arc::new(Collect::default());
        let engine = Engine::new(EngineConfig::default(), sink.clone());
        engine
            .create(StateConfig {
                name: "p".into(),
                max_alloc_bytes: 16 << 20,
                max_runs: 50_000_000,
                debug: false,
            })
            .unwrap();
        let stock = mlua::Lua::new();
        stock.load("OUT = {} nf = { netlink = function(_, _, s) OUT[#OUT + 1] = s end }").exec().unwrap();
        Pair { engine, sink, stock }
    }

    /// `body` is Lua code whose last line is `emit(...)`.
    fn both(&self, body: &str) -> (String, String) {
        let chunk = format!("{PRELUDE}{body}");
        self.sink.0.lock().unwrap().clear();
        let ours = match self.engine.execute("p", chunk.as_bytes(), "=chunk") {
            Ok(()) => String::from_utf8_lossy(&self.sink.0.lock().unwrap()).into_owned(),
            Err(e) => format!("entry failed: {e}"),
        };
        self.stock.load("OUT = {}").exec().unwrap();
        let stock = match self.stock.load(&chunk).set_name("=chunk").exec() {
            Ok(()) => {
                let out: mlua::Table = self.stock.globals().get("OUT").unwrap();
                let parts: Vec<mlua::LuaString> = out.sequence_values().map(Result::unwrap).collect();
                parts.iter().map(|s| String::from_utf8_lossy(&s.as_bytes()).into_owned()).collect()
            }
            Err(e) => format!("entry failed: {e}"),
        };
        (ours, stock)
    }

    /// Runs call expression `call` (on line 1 of its own, after the prelude) in both and
    /// returns what each got.
    fn call(&self, call: &str) -> (String, String) {
        self.both(&format!("emit(pack(pcall(function() return {call} end)))"))
    }

    /// Runs a `gmatch` call expression and every round of the iterator it returns.
    fn iterate(&self, call: &str) -> (String, String) {
        self.both(&format!("emit(pack(pcall(function() local it = {call} return iterate(it) end)))"))
    }

    fn same(&self, call: &str) -> String {
        let (ours, stock) = if call.contains("gmatch") { self.iterate(call) } else { self.call(call) };
        assert_eq!(ours, stock, "{call}");
        ours
    }
}

/// A Lua string literal holding `bytes`.
fn literal(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b" ()[]%.-+*?^$_,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\{b:03}"));
        }
    }
    out.push('"');
    out
}

// --- Grammar of calls ---

fn subject() -> impl Strategy<Value = String> {
    let bytes = prop::collection::vec(prop::sample::select(b"aaabbc()[]%.-x 19_\0\xff\x0b".to_vec()), 0..16)
        .prop_map(|b| literal(&b));
    prop_oneof![
        8 => bytes,
        1 => prop::sample::select(vec!["123", "1.5", "nil", "{}", "true"]).prop_map(String::from),
    ]
}

/// Pattern pieces: valid items and suffixes, captures, anchors, and malformed fragments.
const PIECES: &[&str] = &[
    "a", "b", "c", "x", ".", " ", "1", "%a", "%d", "%s", "%w", "%p", "%x", "%u", "%l", "%c", "%g", "%z",
    "%A", "%S", "%W", "%.", "%%", "%(", "%]", "[abc]", "[^a]", "[a-c]", "[%a_]", "[]]", "[^]]", "[a-]",
    "[%]x]", "[-a]", "*", "+", "-", "?", "*", "-", "(", ")", "()", "(", ")", "%1", "%2", "%0", "%b()",
    "%bab", "%b", "%b(", "%f[%w]", "%f[^a]", "%f[%z]", "%fa", "%f", "^", "$", "%", "[", "[a", "[%", "\\0",
    "\\255",
];

fn pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..8)
        .prop_map(|pieces| format!("\"{}\"", pieces.concat()))
}

fn init() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        4 => (-20i64..20).prop_map(|n| Some(n.to_string())),
        1 => prop::sample::select(vec![
            "nil", "1.5", "2.0", "'2'", "'x'", "math.mininteger", "math.maxinteger", "{}"
        ])
        .prop_map(|s| Some(s.to_string())),
    ]
}

fn replacement() -> impl Strategy<Value = Option<String>> {
    let template = prop::collection::vec(
        prop::sample::select(vec!["x", "<", ">", "%0", "%1", "%2", "%3", "%%", "%", "%a", "%9", "\\0"]),
        0..5,
    )
    .prop_map(|pieces| Some(format!("\"{}\"", pieces.concat())));
    let other = prop::sample::select(vec![
        "7",
        "1.5",
        "function(...) return select('#', ...) end",
        "function(a) return a end",
        "function(a, b) return b end",
        "function() return nil end",
        "function() return false end",
        "function() return {} end",
        "function(a) return a .. '!' end",
        "function() error('boom') end",
        "function() error({}) end",
        "function(a) return a, 'ignored' end",
        "{ a = 'A', b = 1, c = false, x = 2.5, [1] = 'one' }",
        "setmetatable({}, { __index = function(_, k) return tostring(k) .. '#' end })",
        "true",
        "nil",
        "(coroutine.running())",
    ])
    .prop_map(|s| Some(s.to_string()));
    prop_oneof![5 => template, 4 => other, 1 => Just(None)]
}

fn max_n() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        3 => (-1i64..5).prop_map(|n| Some(n.to_string())),
        1 => prop::sample::select(vec!["nil", "2.0", "1.5", "'3'", "'x'"]).prop_map(|s| Some(s.to_string())),
    ]
}

/// `string.name(args)`, or `(subject):name(rest)` when `method` and the subject is a string.
fn call(name: &str, method: bool, args: &[Option<String>]) -> String {
    // Trailing absent arguments are left out; an absent one before a present one is `nil`.
    let last = args.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
    let args: Vec<&str> = args[..last].iter().map(|a| a.as_deref().unwrap_or("nil")).collect();
    if method && args.first().is_some_and(|s| s.starts_with('"')) {
        format!("({}):{name}({})", args[0], args[1..].join(", "))
    } else {
        format!("string.{name}({})", args.join(", "))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn find_and_match_are_stock(
        subject in subject(), pattern in pattern(), init in init(),
        plain in prop::option::of(prop::sample::select(vec!["true", "false", "nil", "1"])),
        method: bool,
    ) {
        let pair = pair();
        let plain = plain.map(String::from);
        let find = call("find", method, &[Some(subject.clone()), Some(pattern.clone()), init.clone(), plain]);
        let (ours, stock) = pair.call(&find);
        prop_assert_eq!(ours, stock, "{}", find);
        let matched = call("match", method, &[Some(subject), Some(pattern), init]);
        let (ours, stock) = pair.call(&matched);
        prop_assert_eq!(ours, stock, "{}", matched);
    }

    #[test]
    fn gmatch_is_stock(subject in subject(), pattern in pattern(), init in init(), method: bool) {
        let gmatch = call("gmatch", method, &[Some(subject), Some(pattern), init]);
        let (ours, stock) = pair().iterate(&gmatch);
        prop_assert_eq!(ours, stock, "{}", gmatch);
    }

    #[test]
    fn gsub_is_stock(
        subject in subject(), pattern in pattern(), replacement in replacement(), max in max_n(),
        method: bool,
    ) {
        let gsub = call("gsub", method, &[Some(subject), Some(pattern), replacement, max]);
        let (ours, stock) = pair().call(&gsub);
        prop_assert_eq!(ours, stock, "{}", gsub);
    }
}

thread_local! {
    static PAIR: &'static Pair = Box::leak(Box::new(Pair::new()));
}

fn pair() -> &'static Pair {
    PAIR.with(|p| *p)
}

/// Each feature once, with what Lua 5.4 answers written out for a few (so a shared mistake in
/// the comparison itself would show).
#[test]
fn hand_written_cases() {
    let pair = pair();
    let known = [
        ("string.find('hello world', 'o w')", "3[true,integer:5,integer:7]"),
        ("string.find('hello', 'l+')", "3[true,integer:3,integer:4]"),
        ("string.match('key = value', '(%w+)%s*=%s*(%w+)')", "3[true,\"key\",\"value\"]"),
        ("string.match('hello', '()ll()')", "3[true,integer:3,integer:5]"),
        ("string.gsub('hello world', 'o', '0')", "3[true,\"hell0 w0rld\",integer:2]"),
        ("string.gsub('abc', '%w', '%0%0', 2)", "3[true,\"aabbc\",integer:2]"),
        ("string.find('a.b', '.', 1, true)", "3[true,integer:2,integer:2]"),
        ("string.find('a', '%')", "2[false,\"chunk:25: malformed pattern (ends with '%')\"]"),
        ("string.gsub('a', 'a', '%2')", "2[false,\"chunk:25: invalid capture index %2\"]"),
    ];
    for (call, expected) in known {
        assert_eq!(pair.same(call), expected, "{call}");
    }
    let calls = [
        // Anchors, init, negative init, init past the end, plain find.
        "string.find('aaa', '^a', 2)",
        "string.find('aaa', 'a$', -1)",
        "string.find('abc', '', 10)",
        "string.find('abc', '', 4)",
        "string.find('abc', 'b', -100)",
        "string.match('abc', '^(a)(b)', 1)",
        "string.find('a+b', '+', 1, true)",
        "string.find('a$b', 'a$')",
        "string.match('x$', '$$')",
        "string.find('abc', 'c', 3.0)",
        "string.find('abc', 'c', 2.5)",
        "string.find('abc', 'c', '3')",
        "string.find('abc', 'c', {})",
        "string.find(nil, 'c')",
        "string.find('abc')",
        "('abc'):find({})",
        "string.find(12345, 34)",
        // Classes and sets.
        "string.match('Hello, World!\\11', '[%u%p]+')",
        "string.match('tab\\tnew\\11line', '%s+')",
        "string.match('x]y', '[]]')",
        "string.match('a-b', '[a-]+')",
        "string.match('abz', '[^%a]')",
        "string.match('\\0\\1', '%z')",
        "string.match('é', '%a')",
        "string.match('ABC', '%U')",
        // Captures.
        "string.match('hello world', '((h)(e))')",
        "string.match('abcabc', '(a(b)c)%1')",
        "string.match('abab', '()(ab)%2')",
        "string.match('aa', '()a%1')",
        "string.match('x', '(x')",
        "string.find('x', '(x')",
        "string.match('x', 'x)')",
        "string.match('x', '%0')",
        "string.match(string.rep('a', 40), string.rep('(a)', 32))",
        "string.match(string.rep('a', 40), string.rep('(a)', 33))",
        "string.match(string.rep('a', 300), string.rep('a?', 300))",
        // %b and %f.
        "string.match('f(a(b)c) d', '%b()')",
        "string.match('((', '%b()')",
        "string.match('x', '%b(')",
        "string.gsub('THE (quick) fox', '%f[%a]%a+', 'W')",
        "string.find('ab', '%f[%z]')",
        "string.find('ab', '%fa')",
        "string.find('ab', '%f[a')",
        // gmatch.
        "string.gmatch('one two  three', '%a+')",
        "string.gmatch('k=v, a=b', '(%w+)=(%w+)')",
        "string.gmatch('abc', '')",
        "string.gmatch('abc', '()')",
        "string.gmatch('hello', 'l*')",
        "string.gmatch('abcabc', 'b', 3)",
        "string.gmatch('abc', 'a', -1)",
        "string.gmatch('abc', '.', 10)",
        "string.gmatch('^a^a', '^a')",
        "string.gmatch('abc', '(')",
        // gsub: replacements of every kind, max n, anchors, empty matches.
        "string.gsub('hello world', '(o)', '[%1]')",
        "string.gsub('hello', '', '-')",
        "string.gsub('abc', '%w', '%%')",
        "string.gsub('abc', '%w', '%')",
        "string.gsub('abc', '%w', '%x')",
        "string.gsub('abc', '(%w)', '%2')",
        "string.gsub('abc', '()', '%1')",
        "string.gsub('abc', 'b', 5)",
        "string.gsub('abc', '%w', { a = 1, b = true })",
        "string.gsub('abc', '%w', { a = {} })",
        "string.gsub('abc', '%w', function(c) return c:upper() end, 2)",
        "string.gsub('abc', '%w', function() end)",
        "string.gsub('abc', '(b)()', function(c, p) return c .. p end)",
        "string.gsub('abc', '%w', function() error('inside') end)",
        "string.gsub('abc', '^%w', 'X')",
        "string.gsub('abc', 'x*', '-')",
        "string.gsub('abc', '%w', 'x', 0)",
        "string.gsub('abc', '%w', 'x', -1)",
        "string.gsub('abc', '%w', 'x', 1.5)",
        "string.gsub('abc', '%w')",
        "string.gsub('abc', '%w', true)",
        "string.gsub('abc', '%w', nil)",
        "('abc'):gsub('%w', true)",
        "string.gsub('abc', '%w', setmetatable({}, { __name = 'Thing' }))",
        "string.gsub('abc', '(', 'x')",
        "string.gsub('', '', 'x')",
        "string.gsub('a\\0b', '%z', '0')",
    ];
    for call in calls {
        pair.same(call);
    }
    // A replacement function sees its own errors, non-string ones too, pass through unchanged.
    let (ours, stock) = pair.both(
        "local ok, e = pcall(string.gsub, 'a', 'a', function() error({ tag = 1 }) end) emit(pack(ok, e.tag))",
    );
    assert_eq!(ours, stock);
    assert_eq!(ours, "2[false,integer:1]");
}

// --- The limit ---

/// Runs `chunk` in a fresh state of 100,000 instructions and returns the error, the time the
/// entry took and the instructions charged to it.
fn limited(chunk: &str) -> (String, Duration, u64) {
    let engine = Engine::new(EngineConfig::default(), Arc::new(Collect::default()));
    engine
        .create(StateConfig { name: "l".into(), max_alloc_bytes: 4 << 20, max_runs: 100_000, debug: false })
        .unwrap();
    let before = engine.stats("l").unwrap().instructions;
    let start = Instant::now();
    let outcome = engine.execute("l", chunk.as_bytes(), "=chunk");
    let elapsed = start.elapsed();
    let charged = engine.stats("l").unwrap().instructions - before;
    let error = match outcome {
        Err(EngineError::Lua(text)) => text,
        other => panic!("{chunk}: expected a Lua error, got {other:?}"),
    };
    (error, elapsed, charged)
}

#[test]
fn catastrophic_patterns_stop_at_the_instruction_limit() {
    // Subjects built without string.rep, whose own cost is not this test's business.
    let a400 = format!("'{}'", "a".repeat(400));
    let a2000 = format!("'{}'", "a".repeat(2000));
    let chunks = [
        format!("return string.find({a400}, '.-.-.-.-b')"),
        format!("return ({a2000}):gsub('.-.-.-x', '')"),
        format!("for _ in string.gmatch({a400}, '.-.-.-.-b') do end"),
        format!("return string.match({a400}, '(.-)(.-)(.-)(.-)b')"),
        // Catching the error does not buy more: the entry stays stopped.
        format!("for i = 1, 1e9 do pcall(string.find, {a400}, '.-.-.-.-b') end"),
    ];
    for chunk in &chunks {
        let (error, elapsed, charged) = limited(chunk);
        let shown = &chunk[..chunk.len().min(40)];
        println!("{shown}...: {} ms, {charged} instructions charged", elapsed.as_secs_f64() * 1000.0);
        assert!(error.starts_with("chunk:1: instruction limit exceeded"), "{shown}: {error}");
        assert!(elapsed < Duration::from_millis(100), "{shown}: took {elapsed:?}");
        // The budget plus less than one batch of matcher steps (1024).
        assert!((100_000..=100_000 + 1024).contains(&charged), "{shown}: charged {charged}");
    }
}

#[test]
fn plain_find_pays_for_its_comparisons() {
    // 200 KB of 'a' searched for 100 KB of 'a' and a 'b': 1e10 byte comparisons in all
    // (seconds in stock Lua); each place where the pattern could start is charged its length.
    let chunk = format!("return string.find('{}', '{}b', 1, true)", "a".repeat(200_000), "a".repeat(100_000));
    let (error, elapsed, charged) = limited(&chunk);
    println!("plain find: {} ms, {charged} instructions charged", elapsed.as_secs_f64() * 1000.0);
    assert!(error.starts_with("chunk:1: instruction limit exceeded"), "{error}");
    assert!(elapsed < Duration::from_millis(100), "took {elapsed:?}");
    // The budget, passed by at most one comparison (charged before it is made).
    assert!((100_000..=100_000 + 100_001 + 1024).contains(&charged), "charged {charged}");
}

#[test]
fn matcher_work_is_charged_on_success() {
    // 'a' x 300 then 'b': '.-b' tries 'b' at each of 301 places, two steps each at least.
    let engine = Engine::new(EngineConfig::default(), Arc::new(Collect::default()));
    engine
        .create(StateConfig { name: "w".into(), max_alloc_bytes: 1 << 20, max_runs: 1_000_000, debug: false })
        .unwrap();
    let subject = format!("'{}b'", "a".repeat(300));
    let cost = |chunk: &str| {
        let before = engine.stats("w").unwrap().instructions;
        engine.execute("w", chunk.as_bytes(), "=chunk").unwrap();
        engine.stats("w").unwrap().instructions - before
    };
    let baseline = cost(&format!("local s = {subject} local r = string.find(s, 'b', 1, true)"));
    let matched = cost(&format!("local s = {subject} local r = string.find(s, '.-b')"));
    println!("plain find: {baseline} instructions, '.-b': {matched}");
    // The plain search pays its 301 scanned bytes; the matcher its steps.
    assert!(baseline >= 301, "{baseline}");
    assert!(matched >= baseline + 600 - 301, "plain {baseline}, pattern {matched}");
    // gsub pays for the bytes it writes: 300 copied + 1 replaced; match for its capture.
    let gsub = cost(&format!("local s = {subject} local r = string.gsub(s, 'b', 'c')"));
    let capture = cost(&format!("local s = {subject} local r = string.match(s, '^(a*)')"));
    println!("gsub: {gsub}, capture of 300 bytes: {capture}");
    assert!(gsub >= 301 + 301, "{gsub}");
    assert!(capture >= 300 + 300, "{capture}");
}

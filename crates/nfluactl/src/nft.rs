//! Translation of the operator's iptables match (`hook add --rule`) into an
//! nft match, so that the printed nft rules select the same packets as the
//! printed iptables ones.
//!
//! Only the common matches are translated: protocol, ports (with ranges and
//! `-m multiport` lists), addresses with prefixes, interfaces (with `+`
//! wildcards), conntrack states, each with `!` where nft says the same thing.
//! Anything else is refused with the reason: an nft rule printed without the
//! operator's match would queue every packet of the chain.
//!
//! The address family follows the rule: IPv4 addresses or `-p icmp` make it
//! IPv4 only, IPv6 addresses or `-p icmpv6` IPv6 only, and a rule with
//! neither covers both (the nft rule lives in an `inet` table; the iptables
//! rules are printed for `iptables` and `ip6tables`).

use std::fmt;
use std::net::IpAddr;

/// Which address families a rule covers, hence which iptables commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Both,
    V4,
    V6,
}

impl Family {
    /// The iptables commands whose rules cover this family.
    pub fn commands(self) -> &'static [&'static str] {
        match self {
            Family::Both => &["iptables", "ip6tables"],
            Family::V4 => &["iptables"],
            Family::V6 => &["ip6tables"],
        }
    }

    /// Narrows to `other`; `None` when they exclude each other.
    fn and(self, other: Family) -> Option<Family> {
        match (self, other) {
            (Family::Both, f) | (f, Family::Both) => Some(f),
            (a, b) if a == b => Some(a),
            _ => None,
        }
    }
}

/// An nft match equivalent to the iptables one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftMatch {
    /// The match words, each followed by a space (empty: everything).
    pub text: String,
    pub family: Family,
}

/// Why a `--rule` has no nft translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslatable(pub String);

impl fmt::Display for Untranslatable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn refuse<T>(reason: impl Into<String>) -> Result<T, Untranslatable> {
    Err(Untranslatable(reason.into()))
}

/// One match, negated or not, as parsed from the iptables words.
#[derive(Default)]
struct Parsed {
    protocol: Option<(bool, String)>,
    sport: Option<(bool, String)>,
    dport: Option<(bool, String)>,
    saddr: Option<(bool, Vec<String>)>,
    daddr: Option<(bool, Vec<String>)>,
    iif: Option<(bool, String)>,
    oif: Option<(bool, String)>,
    ctstate: Option<(bool, String)>,
    multiport: bool,
    family: Option<Family>,
}

/// Translates `rule` (iptables match words, split on whitespace as the
/// printed rules are).
pub fn translate(rule: &str) -> Result<NftMatch, Untranslatable> {
    let mut p = Parsed::default();
    let mut words = rule.split_whitespace().peekable();
    let mut negate = false;
    while let Some(word) = words.next() {
        if word == "!" {
            if negate {
                return refuse("'!' twice in a row");
            }
            negate = true;
            continue;
        }
        // Old style: `-p ! tcp`.
        if words.peek() == Some(&"!") && word.starts_with('-') && !negate {
            words.next();
            negate = true;
        }
        let mut value = || words.next().ok_or_else(|| Untranslatable(format!("{word} needs a value")));
        match word {
            "-p" | "--protocol" => set(&mut p.protocol, word, negate, protocol(value()?)?)?,
            "--dport" | "--destination-port" => set(&mut p.dport, word, negate, port_range(value()?)?)?,
            "--sport" | "--source-port" => set(&mut p.sport, word, negate, port_range(value()?)?)?,
            "--dports" | "--destination-ports" if p.multiport => {
                set(&mut p.dport, word, negate, port_list(value()?)?)?
            }
            "--sports" | "--source-ports" if p.multiport => {
                set(&mut p.sport, word, negate, port_list(value()?)?)?
            }
            "-s" | "--source" | "--src" => {
                set(&mut p.saddr, word, negate, addresses(value()?, &mut p.family)?)?
            }
            "-d" | "--destination" | "--dst" => {
                set(&mut p.daddr, word, negate, addresses(value()?, &mut p.family)?)?
            }
            "-i" | "--in-interface" => set(&mut p.iif, word, negate, interface(value()?)?)?,
            "-o" | "--out-interface" => set(&mut p.oif, word, negate, interface(value()?)?)?,
            "--ctstate" | "--state" => set(&mut p.ctstate, word, negate, ct_states(value()?)?)?,
            "-m" | "--match" => {
                if negate {
                    return refuse(format!("'!' before {word}"));
                }
                match value()? {
                    // Implied by -p, or only needed for the options above.
                    "tcp" | "udp" | "sctp" | "conntrack" | "state" => {}
                    "multiport" => p.multiport = true,
                    other => return refuse(format!("match module '{other}' is not translated")),
                }
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                return refuse(format!("{word}: --rule is a match, nfluactl prints the target"))
            }
            other => return refuse(format!("option '{other}' is not translated")),
        }
        negate = false;
    }
    if negate {
        return refuse("'!' at the end");
    }
    emit(p)
}

fn set<T>(slot: &mut Option<(bool, T)>, option: &str, negate: bool, value: T) -> Result<(), Untranslatable> {
    if slot.is_some() {
        return refuse(format!("{option} given twice"));
    }
    *slot = Some((negate, value));
    Ok(())
}

/// The nft name of an iptables protocol.
fn protocol(name: &str) -> Result<String, Untranslatable> {
    let lower = name.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "tcp" | "udp" | "sctp" | "icmp" => lower,
        "icmpv6" | "ipv6-icmp" => "ipv6-icmp".into(),
        n if n.parse::<u8>().is_ok() => lower,
        _ => return refuse(format!("protocol '{name}' is not translated")),
    })
}

fn port(text: &str) -> Result<u16, Untranslatable> {
    text.parse().map_err(|_| Untranslatable(format!("port '{text}' is not a number")))
}

/// `N`, `A:B`, `A:` or `:B` in nft form.
fn port_range(text: &str) -> Result<String, Untranslatable> {
    let Some((a, b)) = text.split_once(':') else { return Ok(port(text)?.to_string()) };
    let first = if a.is_empty() { 0 } else { port(a)? };
    let last = if b.is_empty() { u16::MAX } else { port(b)? };
    if first > last {
        return refuse(format!("port range '{text}' is empty"));
    }
    Ok(if first == last { first.to_string() } else { format!("{first}-{last}") })
}

/// A multiport list `A,B:C` as an nft set.
fn port_list(text: &str) -> Result<String, Untranslatable> {
    let items = text.split(',').map(port_range).collect::<Result<Vec<_>, _>>()?;
    Ok(format!("{{ {} }}", items.join(", ")))
}

/// A comma list of addresses with optional `/prefix` or `/dotted-mask`, host
/// bits cleared as iptables does; narrows the rule's family.
fn addresses(text: &str, family: &mut Option<Family>) -> Result<Vec<String>, Untranslatable> {
    text.split(',')
        .map(|item| {
            let (addr, net) = address(item)?;
            let this = if addr.is_ipv4() { Family::V4 } else { Family::V6 };
            *family = match family.unwrap_or(Family::Both).and(this) {
                Some(f) => Some(f),
                None => return refuse("--rule mixes IPv4 and IPv6"),
            };
            Ok(net)
        })
        .collect()
}

fn address(text: &str) -> Result<(IpAddr, String), Untranslatable> {
    let (host, mask) = match text.split_once('/') {
        Some((h, m)) => (h, Some(m)),
        None => (text, None),
    };
    let Ok(addr) = host.parse::<IpAddr>() else {
        return refuse(format!("address '{host}' is not an IP address (host names are not translated)"));
    };
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match mask {
        None => bits,
        Some(m) => match (m.parse::<u32>(), m.parse::<std::net::Ipv4Addr>()) {
            (Ok(n), _) if n <= bits => n,
            (_, Ok(dotted)) if addr.is_ipv4() && contiguous(u32::from(dotted)) => {
                u32::from(dotted).count_ones()
            }
            _ => return refuse(format!("mask '{m}' of '{text}' is not translated")),
        },
    };
    let net = match addr {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask_bits32(prefix)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask_bits128(prefix)).into()),
    };
    Ok((addr, if prefix == bits { net.to_string() } else { format!("{net}/{prefix}") }))
}

fn contiguous(mask: u32) -> bool {
    mask.leading_ones() == mask.count_ones()
}

fn mask_bits32(prefix: u32) -> u32 {
    u32::MAX.checked_shl(32 - prefix).unwrap_or(0)
}

fn mask_bits128(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix).unwrap_or(0)
}

/// An interface name in nft form: quoted, iptables' `+` wildcard as `*`.
fn interface(name: &str) -> Result<String, Untranslatable> {
    let base = name.strip_suffix('+').unwrap_or(name);
    let valid = |c: char| c.is_ascii_alphanumeric() || "-_.@:".contains(c);
    if base.is_empty() && name.ends_with('+') {
        return refuse("interface '+' matches every interface: leave -i/-o out");
    }
    if name.len() > 15 || base.is_empty() || !base.chars().all(valid) {
        return refuse(format!("interface name '{name}' is not translated"));
    }
    Ok(if base.len() < name.len() { format!("\"{base}*\"") } else { format!("\"{name}\"") })
}

/// `NEW,ESTABLISHED` as an nft set of conntrack states.
fn ct_states(text: &str) -> Result<String, Untranslatable> {
    let states = text
        .split(',')
        .map(|s| match s.to_ascii_uppercase().as_str() {
            "NEW" | "ESTABLISHED" | "RELATED" | "INVALID" | "UNTRACKED" => Ok(s.to_ascii_lowercase()),
            _ => refuse(format!("conntrack state '{s}' is not translated")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!("{{ {} }}", states.join(", ")))
}

fn op(negate: bool) -> &'static str {
    if negate {
        "!= "
    } else {
        ""
    }
}

fn emit(p: Parsed) -> Result<NftMatch, Untranslatable> {
    let mut family = p.family.unwrap_or(Family::Both);
    let mut out = String::new();
    for (key, slot) in [("iifname", &p.iif), ("oifname", &p.oif)] {
        if let Some((neg, name)) = slot {
            out += &format!("{key} {}{name} ", op(*neg));
        }
    }
    for (dir, slot) in [("saddr", &p.saddr), ("daddr", &p.daddr)] {
        let Some((neg, nets)) = slot else { continue };
        let fam = if family == Family::V6 { "ip6" } else { "ip" };
        match nets.as_slice() {
            [one] => out += &format!("{fam} {dir} {}{one} ", op(*neg)),
            // iptables makes one rule per address, so `! -s a,b` would match everything.
            _ if *neg => return refuse("'!' before an address list means one rule per address in iptables"),
            many => out += &format!("{fam} {dir} {{ {} }} ", many.join(", ")),
        }
    }
    let ports = p.sport.is_some() || p.dport.is_some();
    match &p.protocol {
        Some((neg, proto)) => {
            let only = match proto.as_str() {
                "icmp" => Some(Family::V4),
                "ipv6-icmp" => Some(Family::V6),
                _ => None,
            };
            if let Some(only) = only.filter(|_| !neg) {
                family = family.and(only).ok_or_else(|| {
                    Untranslatable(format!("-p {proto} with addresses of the other family"))
                })?;
            }
            if ports {
                if *neg || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
                    return refuse("ports need -p tcp, udp or sctp");
                }
            } else {
                out += &format!("meta l4proto {}{proto} ", op(*neg));
            }
            for (dir, slot) in [("sport", &p.sport), ("dport", &p.dport)] {
                if let Some((neg, ports)) = slot {
                    out += &format!("{proto} {dir} {}{ports} ", op(*neg));
                }
            }
        }
        None if ports => return refuse("ports need -p tcp, udp or sctp"),
        None => {}
    }
    if let Some((neg, states)) = &p.ctstate {
        out += &format!("ct state {}{states} ", op(*neg));
    }
    Ok(NftMatch { text: out, family })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nft(rule: &str) -> String {
        match translate(rule) {
            Ok(m) => m.text.trim_end().to_owned(),
            Err(e) => panic!("{rule:?}: {e}"),
        }
    }

    fn family(rule: &str) -> Family {
        translate(rule).map(|m| m.family).unwrap_or_else(|e| panic!("{rule:?}: {e}"))
    }

    fn reason(rule: &str) -> String {
        match translate(rule) {
            Ok(m) => panic!("{rule:?} translated to {:?}", m.text),
            Err(e) => e.0,
        }
    }

    #[test]
    fn table() {
        let cases = [
            ("", ""),
            ("-p udp", "meta l4proto udp"),
            ("! -p tcp", "meta l4proto != tcp"),
            ("-p ! tcp", "meta l4proto != tcp"),
            ("-p ICMP", "meta l4proto icmp"),
            ("-p icmpv6", "meta l4proto ipv6-icmp"),
            ("-p 47", "meta l4proto 47"),
            ("-p udp --dport 9000", "udp dport 9000"),
            ("-p tcp -m tcp --sport 1024:65535", "tcp sport 1024-65535"),
            ("-p tcp --dport :1023", "tcp dport 0-1023"),
            ("-p tcp --dport 8000:", "tcp dport 8000-65535"),
            ("-p tcp ! --dport 22", "tcp dport != 22"),
            ("-p udp --sport 53 --dport 5000:6000", "udp sport 53 udp dport 5000-6000"),
            ("-p tcp -m multiport --dports 80,443,8000:8080", "tcp dport { 80, 443, 8000-8080 }"),
            ("-p tcp -m multiport ! --sports 1,2", "tcp sport != { 1, 2 }"),
            ("-s 192.0.2.1", "ip saddr 192.0.2.1"),
            ("-s 192.0.2.7/24", "ip saddr 192.0.2.0/24"),
            ("-d 10.1.2.3/255.255.0.0", "ip daddr 10.1.0.0/16"),
            ("! -s 198.51.100.0/24", "ip saddr != 198.51.100.0/24"),
            ("-s 192.0.2.1,192.0.2.9", "ip saddr { 192.0.2.1, 192.0.2.9 }"),
            ("-d 2001:db8::2", "ip6 daddr 2001:db8::2"),
            ("-s 2001:db8::7/64", "ip6 saddr 2001:db8::/64"),
            ("-i eth0", "iifname \"eth0\""),
            ("-i vb+", "iifname \"vb*\""),
            ("! -o wg0", "oifname != \"wg0\""),
            ("-m conntrack --ctstate NEW,ESTABLISHED", "ct state { new, established }"),
            ("-m state ! --state INVALID", "ct state != { invalid }"),
            (
                "-i vb+ -s 192.0.2.0/24 -p udp --dport 9000",
                "iifname \"vb*\" ip saddr 192.0.2.0/24 udp dport 9000",
            ),
        ];
        for (rule, expected) in cases {
            assert_eq!(nft(rule), expected, "--rule {rule:?}");
        }
    }

    #[test]
    fn the_family_follows_addresses_and_icmp() {
        assert_eq!(family(""), Family::Both);
        assert_eq!(family("-p udp --dport 9000"), Family::Both);
        assert_eq!(family("-s 192.0.2.1"), Family::V4);
        assert_eq!(family("-p icmp"), Family::V4);
        assert_eq!(family("! -p icmp"), Family::Both);
        assert_eq!(family("-d 2001:db8::1 -p tcp"), Family::V6);
        assert_eq!(family("-p icmpv6"), Family::V6);
        assert_eq!(Family::Both.commands(), ["iptables", "ip6tables"]);
    }

    #[test]
    fn what_cannot_be_translated_says_why() {
        let cases = [
            ("-m comment --comment x", "match module 'comment'"),
            ("-m limit --limit 5/s", "match module 'limit'"),
            ("--dport 80", "ports need -p tcp, udp or sctp"),
            ("-p icmp --dport 80", "ports need -p tcp, udp or sctp"),
            ("! -p udp --dport 80", "ports need -p tcp, udp or sctp"),
            ("-p tcp --dports 80,443", "option '--dports'"),
            ("-s example.com", "host names"),
            ("-s 192.0.2.1 -d 2001:db8::1", "mixes IPv4 and IPv6"),
            ("-p icmp -s 2001:db8::1", "-p icmp with addresses"),
            ("! -s 192.0.2.1,192.0.2.2", "one rule per address"),
            ("-s 10.0.0.0/255.0.255.0", "mask '255.0.255.0'"),
            ("-p udp -p tcp", "-p given twice"),
            ("-p tcp --dport 90:80", "empty"),
            ("-p tcp --dport http", "not a number"),
            ("-i +", "every interface"),
            ("-i 'eth0'", "interface name"),
            ("-p tcp !", "'!' at the end"),
            ("-j DROP", "nfluactl prints the target"),
            ("--fragment", "option '--fragment'"),
            ("-p", "-p needs a value"),
            ("-p gre", "protocol 'gre'"),
        ];
        for (rule, needle) in cases {
            let why = reason(rule);
            assert!(why.contains(needle), "--rule {rule:?}: {why:?} lacks {needle:?}");
        }
    }
}

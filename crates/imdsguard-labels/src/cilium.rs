//! Cilium's label strings (`pkg/labels`): `source:key=value` as flows carry them, and the CIDR
//! label keys that a broader prefix selects.

use ipnet::IpNet;

/// Cilium's `parseLabel(s, ':')`: `(source, key, value)`. The source is `unspec` when absent;
/// `$key` and `reserved.key` are reserved labels; `=` splits key and value once.
pub fn parse_label(s: &str) -> (&str, &str, &str) {
    let (src, next) = if s.is_empty() {
        ("", "")
    } else if let Some(rest) = s.strip_prefix('$') {
        ("reserved", rest)
    } else if let Some(i) = s.find(':') {
        (&s[..i], &s[i + 1..])
    } else if let Some(rest) = s.strip_prefix("reserved.") {
        ("reserved", rest)
    } else {
        ("", s)
    };
    let source = if src.is_empty() { "unspec" } else { src };
    match next.find('=') {
        None => (source, next, ""),
        Some(0) if src == "reserved" => (source, &next[1..], ""),
        Some(i) => (source, &next[..i], &next[i + 1..]),
    }
}

/// Cilium's `parseSelectLabel(key, '.')`: `(source, key)` of a selector key written
/// `source.key`; the source is `any` when absent, `$key` is reserved, and anything from `=` on
/// is dropped.
pub fn parse_select_key(key: &str) -> (&str, &str) {
    let (src, rest) = if let Some(r) = key.strip_prefix('$') {
        ("reserved", r)
    } else {
        key.split_once('.').unwrap_or(("", key))
    };
    let rest = match rest.find('=') {
        Some(0) if src == "reserved" => &rest[1..],
        Some(i) => &rest[..i],
        None => rest,
    };
    (if src.is_empty() { "any" } else { src }, rest)
}

/// Cilium's `LabelToPrefix`: the prefix of a CIDR label key. IPv6 keys are written with `-`
/// for `:` (`cidr:2001-db8--/32`), since `:` separates the source.
pub fn cidr_prefix(key: &str) -> Option<IpNet> {
    if !key.contains('-') {
        return key.parse().ok();
    }
    // On the stack: flow filters call this for every CIDR label of every flow.
    let mut buf = [0u8; 64];
    let b = key.as_bytes();
    if b.len() > buf.len() {
        return key.replace('-', ":").parse().ok();
    }
    for (d, s) in buf.iter_mut().zip(b) {
        *d = if *s == b'-' { b':' } else { *s };
    }
    std::str::from_utf8(&buf[..b.len()]).ok()?.parse().ok()
}

/// Whether the CIDR label `inner` lies inside `outer`: a `cidr:10.0.0.0/8` selector finds a
/// `cidr:10.1.2.0/24` label, not the reverse.
pub fn prefix_contains(outer: &IpNet, inner: &IpNet) -> bool {
    outer.prefix_len() <= inner.prefix_len() && outer.contains(&inner.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_strings() {
        for (s, want) in [
            ("k8s:app=web", ("k8s", "app", "web")),
            ("app=web", ("unspec", "app", "web")),
            ("reserved:host", ("reserved", "host", "")),
            ("$host", ("reserved", "host", "")),
            ("reserved.world", ("reserved", "world", "")),
            ("$=x", ("reserved", "x", "")),
            ("k8s:a=b=c", ("k8s", "a", "b=c")),
            ("", ("unspec", "", "")),
        ] {
            assert_eq!(parse_label(s), want, "{s}");
        }
    }

    #[test]
    fn selector_keys() {
        for (s, want) in [
            ("any.app", ("any", "app")),
            (
                "k8s.io.kubernetes.pod.namespace",
                ("k8s", "io.kubernetes.pod.namespace"),
            ),
            ("$host", ("reserved", "host")),
            ("app", ("any", "app")),
            ("k8s.app=x", ("k8s", "app")),
        ] {
            assert_eq!(parse_select_key(s), want, "{s}");
        }
    }

    #[test]
    fn cidr_keys() {
        let p = |s: &str| cidr_prefix(s).expect(s);
        assert_eq!(p("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("2001-db8--/32").to_string(), "2001:db8::/32");
        assert_eq!(p("0--0/0").to_string(), "::/0");
        assert!(cidr_prefix("app").is_none());
        assert!(prefix_contains(&p("10.0.0.0/8"), &p("10.1.2.0/24")));
        assert!(!prefix_contains(&p("10.1.2.0/25"), &p("10.1.2.0/24")));
        assert!(!prefix_contains(&p("10.0.0.0/8"), &p("2001-db8--/32")));
    }
}

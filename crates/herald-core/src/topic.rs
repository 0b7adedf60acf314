//! Topic matching: a subscription entry is either an exact topic, `*` (everything, including
//! topics added to the catalog later), or a pattern where `*` matches any run of characters.

/// Whether one subscription pattern matches `topic`.
pub fn pattern_matches(pattern: &str, topic: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if !pattern.contains('*') {
        return pattern == topic;
    }
    glob(pattern.as_bytes(), topic.as_bytes())
}

/// Iterative glob with `*` only (greedy with backtracking to the last star).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::pattern_matches;

    #[test]
    fn patterns() {
        let cases = [
            ("*", "user.created", true),
            ("user.created", "user.created", true),
            ("user.created", "user.deleted", false),
            ("user.*", "user.created", true),
            ("user.*", "order.created", false),
            ("*.created", "order.created", true),
            ("*.created", "order.deleted", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("user.*", "user.", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(pattern_matches(p, t), want, "{p} vs {t}");
        }
    }
}

//! Slurm hostlist expressions, expanded in Rust: `gpu[01-04,07],cpu-a[1-2]` →
//! `gpu01 gpu02 gpu03 gpu04 gpu07 cpu-a1 cpu-a2`. No `scontrol` (missing in containers, and a
//! silent `localhost` fallback once made every node its own world).
//!
//! Grammar: a comma-separated list (commas inside brackets do not split) of host patterns; a
//! pattern is text with zero or more `[ranges]` groups, each expanding to the cartesian
//! product in order. A range is `N` or `N-M`; zero padding of `N` sets the width.

/// Expansions larger than this are refused (a typo like `n[1-99999999]` must not eat memory).
pub const MAX_HOSTS: usize = 1 << 16;

/// A malformed hostlist, with the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hostlist {list:?}: {msg}")]
pub struct HostlistError {
    /// The whole expression.
    pub list: String,
    /// What is wrong.
    pub msg: String,
}

/// Expands a hostlist expression into host names, in order.
pub fn expand(list: &str) -> Result<Vec<String>, HostlistError> {
    let err = |msg: String| HostlistError {
        list: list.to_owned(),
        msg,
    };
    let mut out = Vec::new();
    for item in split_top(list).map_err(err)? {
        if item.is_empty() {
            continue;
        }
        let mut hosts = vec![String::new()];
        let mut rest = item;
        while !rest.is_empty() {
            let (lit, after) = match rest.find('[') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            if lit.contains(']') {
                return Err(err(format!("unmatched ']' in {item:?}")));
            }
            for h in &mut hosts {
                h.push_str(lit);
            }
            let Some(after) = after else { break };
            let close = after
                .find(']')
                .ok_or_else(|| err(format!("unclosed '[' in {item:?}")))?;
            let numbers = ranges(&after[..close]).map_err(err)?;
            let product = hosts.len().saturating_mul(numbers.len());
            if out.len().saturating_add(product) > MAX_HOSTS {
                return Err(err(format!("expands to more than {MAX_HOSTS} hosts")));
            }
            hosts = hosts
                .iter()
                .flat_map(|h| numbers.iter().map(move |n| format!("{h}{n}")))
                .collect();
            rest = &after[close + 1..];
        }
        out.extend(hosts);
    }
    Ok(out)
}

/// Splits at commas outside brackets.
fn split_top(list: &str) -> Result<Vec<&str>, String> {
    let (mut depth, mut start, mut items) = (0i32, 0, Vec::new());
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                items.push(list[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("nested or unmatched brackets".into());
        }
    }
    if depth != 0 {
        return Err("unclosed '['".into());
    }
    items.push(list[start..].trim());
    Ok(items)
}

/// `01-04,07` → `["01","02","03","04","07"]`.
fn ranges(spec: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(lo) || !digits(hi) {
            return Err(format!("bad range {part:?} (expected N or N-M)"));
        }
        let width = lo.len();
        let (a, b): (u64, u64) = (
            lo.parse()
                .map_err(|_| format!("number too large in {part:?}"))?,
            hi.parse()
                .map_err(|_| format!("number too large in {part:?}"))?,
        );
        if b < a {
            return Err(format!("descending range {part:?}"));
        }
        if b - a >= MAX_HOSTS as u64 || out.len() + (b - a) as usize >= MAX_HOSTS {
            return Err(format!("expands to more than {MAX_HOSTS} hosts"));
        }
        out.extend((a..=b).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ex(s: &str) -> Vec<String> {
        expand(s).unwrap()
    }

    #[test]
    fn expands_the_usual_forms() {
        assert_eq!(
            ex("gpu[01-04,07],cpu-a[1-2]"),
            ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07", "cpu-a1", "cpu-a2"]
        );
        assert_eq!(ex("node1"), ["node1"]);
        assert_eq!(ex("a,b , c"), ["a", "b", "c"]);
        assert_eq!(ex("n[8-11]"), ["n8", "n9", "n10", "n11"]);
        assert_eq!(ex("n[098-101]"), ["n098", "n099", "n100", "n101"]);
        assert_eq!(ex("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
        assert_eq!(ex("x[3]-ib"), ["x3-ib"]);
        assert_eq!(ex(""), Vec::<String>::new());
    }

    #[test]
    fn rejects_malformed_lists_with_the_text() {
        for bad in [
            "n[1-",
            "n]1[",
            "n[a-b]",
            "n[5-3]",
            "n[[1]]",
            "n[1-99999999]",
            "n[]",
        ] {
            let e = expand(bad).unwrap_err();
            assert_eq!(e.list, bad);
        }
    }

    proptest! {
        #[test]
        fn a_range_expands_to_every_number_once_in_order(
            prefix in "[a-z][a-z0-9-]{0,6}",
            lo in 0u32..500,
            len in 0u32..50,
            width in 1usize..5,
        ) {
            let hi = lo + len;
            let list = format!("{prefix}[{lo:0width$}-{hi}]");
            let hosts = expand(&list).unwrap();
            prop_assert_eq!(hosts.len(), len as usize + 1);
            for (i, h) in hosts.iter().enumerate() {
                let n = h.strip_prefix(prefix.as_str()).unwrap();
                prop_assert_eq!(n.parse::<u32>().unwrap(), lo + i as u32);
                prop_assert!(n.len() >= width);
            }
        }

        #[test]
        fn a_compressed_list_round_trips(ns in proptest::collection::btree_set(0u32..300, 1..20)) {
            let inner: Vec<String> = ns.iter().map(|n| format!("{n:03}")).collect();
            let list = format!("gpu[{}],login", inner.join(","));
            let mut want: Vec<String> = ns.iter().map(|n| format!("gpu{n:03}")).collect();
            want.push("login".into());
            prop_assert_eq!(expand(&list).unwrap(), want);
        }
    }
}

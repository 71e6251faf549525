//! fail2ban's `substituteRecursiveTags`: `<tag>` references between the
//! options of a filter (or action) are replaced by the options' values,
//! repeatedly, so `<lt_<logtype>/__prefix_line>` first becomes
//! `<lt_file/__prefix_line>` and then that option's value.
//!
//! Tags that name no option (`<HOST>`, `<F-USER>`, `<SKIPLINES>`, ...) are
//! left alone for the regex compiler.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;

use super::text::{Origin, Text};

/// fail2ban's `MAX_TAG_REPLACE_COUNT`.
const MAX_TAG_REPLACE_COUNT: usize = 25;

/// A value this long means exponential self-expansion, not a regex.
const MAX_VALUE_LEN: usize = 1 << 22;

/// Tags that cannot be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TagError {
    /// `<tag>` refers, directly or through others, to itself.
    #[error("{}: option `{tag}`: `<{found}>` expands into itself (directly or through other tags)", super::text::describe(.origin))]
    SelfReference {
        /// Where the reference is written.
        origin: Option<Origin>,
        /// The option being resolved.
        tag: String,
        /// The tag found in its value.
        found: String,
    },
    /// Substitution grows a value without bound.
    #[error("{}: option `{tag}` expands to more than {MAX_VALUE_LEN} bytes", super::text::describe(.origin))]
    TooLong {
        /// Where the option starts.
        origin: Option<Origin>,
        /// The option being resolved.
        tag: String,
    },
}

/// `re.search(r'<([^ <>]+)>', s, pos)`: `(start, end, name)` in bytes.
pub(crate) fn find_tag(s: &str, from: usize) -> Option<(usize, usize, &str)> {
    let mut pos = from;
    while let Some(found) = s.get(pos..)?.find('<') {
        let start = pos + found;
        let name_len = s[start + 1..]
            .find([' ', '<', '>'])
            .unwrap_or(s.len() - start - 1);
        let end = start + 1 + name_len;
        if name_len > 0 && s[end..].starts_with('>') {
            return Some((start, end + 1, &s[start + 1..end]));
        }
        pos = start + 1;
    }
    None
}

/// Resolves `<tag>`s in every value of `tags` (in order, repeating while a
/// pass changes something), as fail2ban does. Tags in `ignore` are neither
/// resolved nor used. A tag naming no entry is looked up with `lookup`
/// (fail2ban's `addrepl`), and left as written if that gives `None`.
/// `None` values stand for options fail2ban holds as `None`.
pub(crate) fn substitute<E: From<TagError>>(
    tags: &IndexMap<String, Option<Text>>,
    ignore: &HashSet<String>,
    mut lookup: impl FnMut(&str) -> Result<Option<Text>, E>,
) -> Result<IndexMap<String, Option<Text>>, E> {
    let mut tags = tags.clone();
    let mut done: HashSet<String> = HashSet::new();
    let mut counts: HashMap<String, HashMap<String, usize>> = HashMap::new();
    loop {
        let mut repeat = false;
        for index in 0..tags.len() {
            let Some((tag, value)) = tags.get_index(index) else {
                break;
            };
            if ignore.contains(tag) || done.contains(tag) {
                continue;
            }
            let tag = tag.clone();
            let Some(original) = value.clone() else {
                // str(None) holds no tag.
                done.insert(tag);
                continue;
            };
            let mut value = original.clone();
            // Replacement counts persist across passes once stored.
            let stored = counts.remove(&tag);
            let was_stored = stored.is_some();
            let mut replaced = stored.unwrap_or_default();
            let mut next = find_tag(value.as_str(), 0).map(|(s, e, n)| (s, e, n.to_owned()));
            while let Some((start, end, found)) = next {
                if ignore.contains(&found) {
                    next = find_tag(value.as_str(), end).map(|(s, e, n)| (s, e, n.to_owned()));
                    continue;
                }
                if found == tag
                    || replaced.get(&found).copied().unwrap_or(1) > MAX_TAG_REPLACE_COUNT
                {
                    return Err(TagError::SelfReference {
                        origin: value.origin_at(start).cloned(),
                        tag,
                        found,
                    }
                    .into());
                }
                let replacement = match tags.get(&found).cloned().flatten() {
                    Some(r) => Some(r),
                    None => lookup(&found)?,
                };
                let Some(replacement) = replacement else {
                    next = find_tag(value.as_str(), end).map(|(s, e, n)| (s, e, n.to_owned()));
                    continue;
                };
                value = value.replace_all(&format!("<{found}>"), &replacement);
                if value.as_str().len() > MAX_VALUE_LEN {
                    return Err(TagError::TooLong {
                        origin: original.origin().cloned(),
                        tag,
                    }
                    .into());
                }
                *replaced.entry(found).or_insert(0) += 1;
                next = find_tag(value.as_str(), start).map(|(s, e, n)| (s, e, n.to_owned()));
            }
            let changed = value != original;
            if changed && find_tag(value.as_str(), 0).is_some() {
                repeat = true;
                counts.insert(tag.clone(), replaced);
            } else if was_stored {
                counts.insert(tag.clone(), replaced);
            }
            let complete = !value.as_str().contains('<');
            if changed {
                tags.insert(tag.clone(), Some(value));
            }
            if complete {
                done.insert(tag);
            }
        }
        if !repeat {
            return Ok(tags);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use super::*;

    fn at(line: usize) -> Origin {
        Origin::new(Arc::from(Path::new("f.conf")), line)
    }

    fn tags(pairs: &[(&str, &str)]) -> IndexMap<String, Option<Text>> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (k.to_string(), Some(Text::new(*v, at(i + 1)))))
            .collect()
    }

    fn run(pairs: &[(&str, &str)]) -> Result<Vec<(String, String)>, TagError> {
        let out = substitute::<TagError>(&tags(pairs), &HashSet::new(), |_| Ok(None))?;
        Ok(out
            .into_iter()
            .map(|(k, v)| (k, v.map(Text::into_string).unwrap_or_default()))
            .collect())
    }

    fn value(pairs: &[(&str, &str)], key: &str) -> String {
        run(pairs)
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == key)
            .unwrap()
            .1
    }

    #[test]
    fn nested_tags_resolve_inside_out() {
        let t = [
            ("logtype", "file"),
            ("__prefix_line", "<lt_<logtype>/__prefix_line>"),
            ("lt_file/__prefix_line", "FILE"),
            ("failregex", "^<__prefix_line>x <HOST>$\n<mdre-<mode>>"),
            ("mode", "normal"),
            ("mdre-normal", "a\nb"),
        ];
        assert_eq!(value(&t, "failregex"), "^FILEx <HOST>$\na\nb");
    }

    #[test]
    fn unknown_tags_stay_for_the_regex_compiler() {
        let t = [(
            "failregex",
            "<F-USER>\\S+</F-USER> from <HOST> <SKIPLINES> <a b>",
        )];
        assert_eq!(
            value(&t, "failregex"),
            "<F-USER>\\S+</F-USER> from <HOST> <SKIPLINES> <a b>"
        );
    }

    #[test]
    fn self_reference_fails() {
        assert!(matches!(
            run(&[("a", "x<a>")]),
            Err(TagError::SelfReference { .. })
        ));
        assert!(matches!(
            run(&[("a", "<b>"), ("b", "<a>")]),
            Err(TagError::SelfReference { .. })
        ));
    }

    #[test]
    fn ignored_tags_are_kept() {
        let mut ignore = HashSet::new();
        ignore.insert("af".to_owned());
        let out = substitute::<TagError>(&tags(&[("af", "inet"), ("x", "<af>")]), &ignore, |_| {
            Ok(None)
        })
        .unwrap();
        assert_eq!(out["x"].as_ref().unwrap().as_str(), "<af>");
    }

    #[test]
    fn lookup_fills_missing_tags_and_origins_follow() {
        let out = substitute::<TagError>(
            &tags(&[("failregex", "a\n<extra>")]),
            &HashSet::new(),
            |name| Ok((name == "extra").then(|| Text::new("E1", at(40)))),
        )
        .unwrap();
        let value = out["failregex"].as_ref().unwrap();
        let lines: Vec<_> = value.lines().map(|(l, o)| (l, o.map(|o| o.line))).collect();
        assert_eq!(lines, [("a", Some(1)), ("E1", Some(40))]);
    }

    #[test]
    fn tag_finder_is_the_regex() {
        assert_eq!(find_tag("<<a>", 0), Some((1, 4, "a")));
        assert_eq!(find_tag("< a> <>", 0), None);
        assert_eq!(find_tag("x<a\tb>", 0), Some((1, 6, "a\tb")));
        assert_eq!(find_tag("<a>", 1), None);
    }
}

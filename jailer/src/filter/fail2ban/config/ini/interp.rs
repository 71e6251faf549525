//! configparser's `BasicInterpolation` as fail2ban extends it.
//!
//! `%(name)s` is replaced by the (recursively interpolated) value of `name`
//! looked up in the caller's vars, the section, then `[DEFAULT]`; `%%` is a
//! literal `%`. fail2ban adds, at every nesting level:
//! - `%(__name__)s`: the section's name;
//! - `%(known/opt)s`: the value `opt` had in this section before the last
//!   file that overrode it (the `KNOWN/<section>` bookkeeping section), else
//!   `[DEFAULT]`'s;
//! - `%(default/opt)s`: `[DEFAULT]`'s value even if the section overrides it;
//! - `%(sec/opt)s`: the raw value of `opt` in another section `sec`.
//!
//! Such raw values are then interpolated in the context of the section being
//! read, not of the section they come from, exactly as fail2ban does.

use indexmap::IndexMap;

use super::super::{
    pystr::{is_word, lower},
    text::{Origin, Text},
};
use super::{Ini, IniError, MAX_INTERPOLATION_DEPTH, Vars};

/// What one nesting level added to the lookup map (Python copies the map
/// per level; a chain of additions is the same thing, cheaper).
struct Scope<'a> {
    parent: Option<&'a Scope<'a>>,
    entries: Vec<(String, Text)>,
}

impl Scope<'_> {
    fn find(&self, key: &str) -> Option<&Text> {
        let mut scope = Some(self);
        while let Some(s) = scope {
            if let Some((_, v)) = s.entries.iter().find(|(k, _)| k == key) {
                return Some(v);
            }
            scope = s.parent;
        }
        None
    }
}

struct Context<'a> {
    ini: &'a Ini,
    section: &'a str,
    section_options: Option<&'a IndexMap<String, Text>>,
    vars: IndexMap<String, &'a Text>,
    option: &'a str,
}

pub(super) fn get(
    ini: &Ini,
    section: &str,
    option: &str,
    vars: Option<&Vars>,
) -> Result<Option<Text>, IniError> {
    let section_options = match ini.sections.get(section) {
        Some(s) => Some(&s.options),
        None if section == "DEFAULT" => None,
        None => return Ok(None),
    };
    let vars: IndexMap<String, &Text> = vars
        .into_iter()
        .flatten()
        .map(|(k, v)| (lower(k), v))
        .collect();
    let option = lower(option);
    let Some(value) = vars
        .get(&option)
        .copied()
        .or_else(|| section_options.and_then(|o| o.get(&option)))
        .or_else(|| ini.defaults.get(&option))
    else {
        return Ok(None);
    };
    let name_origin = ini
        .sections
        .get(section)
        .map(|s| &s.header)
        .or(value.origin());
    let name = match name_origin {
        Some(origin) => Text::new(section, origin.clone()),
        None => Text::default(),
    };
    let top = Scope {
        parent: None,
        entries: vec![("__name__".to_owned(), name)],
    };
    let context = Context {
        ini,
        section,
        section_options,
        vars,
        option: &option,
    };
    let mut out = Text::default();
    context.interpolate(&mut out, value, &top, 1)?;
    Ok(Some(out))
}

impl Context<'_> {
    fn lookup<'s>(&'s self, scope: &'s Scope<'s>, key: &str) -> Option<&'s Text> {
        scope
            .find(key)
            .or_else(|| self.vars.get(key).copied())
            .or_else(|| self.section_options.and_then(|o| o.get(key)))
            .or_else(|| self.ini.defaults.get(key))
    }

    /// `_interpolate_some`: appends `rest`, interpolated, to `out`.
    fn interpolate(
        &self,
        out: &mut Text,
        rest: &Text,
        parent: &Scope<'_>,
        depth: usize,
    ) -> Result<(), IniError> {
        let mut scope = Scope {
            parent: Some(parent),
            entries: Vec::new(),
        };
        self.map_section_options(rest.as_str(), &mut scope);
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err(IniError::InterpolationDepth {
                origin: rest
                    .origin()
                    .cloned()
                    .unwrap_or_else(|| self.fallback_origin()),
                section: self.section.to_owned(),
                option: self.option.to_owned(),
            });
        }
        let s = rest.as_str();
        let mut pos = 0;
        while pos < s.len() {
            let Some(found) = s[pos..].find('%') else {
                out.push_slice(rest, pos..s.len());
                break;
            };
            out.push_slice(rest, pos..pos + found);
            pos += found;
            let after = &s[pos + 1..];
            if after.starts_with('%') {
                out.push_slice(rest, pos..pos + 1);
                pos += 2;
                continue;
            }
            let name = after.strip_prefix('(').and_then(|inner| {
                let close = inner.find(')')?;
                (close > 0 && inner[close + 1..].starts_with('s')).then(|| &inner[..close])
            });
            let Some(name) = name else {
                let text: String = s[pos..].chars().take(40).collect();
                return Err(IniError::InterpolationSyntax {
                    origin: self.origin_at(rest, pos),
                    section: self.section.to_owned(),
                    option: self.option.to_owned(),
                    text,
                });
            };
            let value =
                self.lookup(&scope, &lower(name))
                    .ok_or_else(|| IniError::MissingReference {
                        origin: self.origin_at(rest, pos),
                        section: self.section.to_owned(),
                        option: self.option.to_owned(),
                        reference: name.to_owned(),
                    })?;
            if value.as_str().contains('%') {
                self.interpolate(out, value, &scope, depth + 1)?;
            } else {
                out.push_text(value);
            }
            pos += name.len() + 4;
        }
        Ok(())
    }

    /// fail2ban's `_map_section_options`: makes `%(sec/opt)s` references in
    /// `rest` resolvable by adding them, raw, to this level's map.
    fn map_section_options(&self, rest: &str, scope: &mut Scope<'_>) {
        if !rest.contains('/') || !rest.contains("%(") {
            return;
        }
        let defaults = &self.ini.defaults;
        for (reference, opt) in section_references(rest) {
            if self.contains(scope, reference) {
                continue;
            }
            let sec = &reference[..reference.len() - opt.len() - 1];
            let value = match lower(sec).as_str() {
                "default" => defaults.get(opt),
                "known" => self
                    .ini
                    .sections
                    .get(&format!("KNOWN/{}", self.section))
                    .and_then(|s| s.options.get(opt))
                    .or_else(|| defaults.get(opt)),
                _ => match self.ini.sections.get(sec) {
                    Some(s) => s.options.get(opt).or_else(|| defaults.get(opt)),
                    None => continue,
                },
            };
            if let Some(value) = value {
                scope.entries.push((reference.to_owned(), value.clone()));
            }
        }
    }

    /// Python's `key in map` on the whole chain (exact, not lower-cased).
    fn contains(&self, scope: &Scope<'_>, key: &str) -> bool {
        scope.find(key).is_some()
            || self.vars.contains_key(key)
            || self.section_options.is_some_and(|o| o.contains_key(key))
            || self.ini.defaults.contains_key(key)
    }

    fn origin_at(&self, text: &Text, offset: usize) -> Origin {
        text.origin_at(offset)
            .cloned()
            .unwrap_or_else(|| self.fallback_origin())
    }

    /// Only for values without any origin (empty caller-made texts).
    fn fallback_origin(&self) -> Origin {
        let path = self
            .ini
            .files
            .first()
            .map(|p| p.as_path())
            .unwrap_or(std::path::Path::new("<none>"));
        Origin::new(std::sync::Arc::from(path), 0)
    }
}

/// `re.findall(r'%\(([\w\-]+/([^\)]+))\)s', s)`: `(sec/opt, opt)` pairs.
fn section_references(s: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(found) = s[pos..].find("%(") {
        let start = pos + found + 2;
        let sec_len: usize = s[start..]
            .chars()
            .take_while(|&c| is_word(c) || c == '-')
            .map(char::len_utf8)
            .sum();
        let slash = start + sec_len;
        if sec_len > 0 && s[slash..].starts_with('/') {
            let opt_start = slash + 1;
            if let Some(close) = s[opt_start..].find(')')
                && close > 0
                && s[opt_start + close + 1..].starts_with('s')
            {
                out.push((
                    &s[start..opt_start + close],
                    &s[opt_start..opt_start + close],
                ));
                pos = opt_start + close + 2;
                continue;
            }
        }
        pos += found + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use super::super::parse::parse;
    use super::*;

    fn ini(source: &str) -> Ini {
        parse(&Arc::from(Path::new("t.conf")), source).unwrap()
    }

    fn get(ini: &Ini, section: &str, option: &str) -> String {
        ini.get(section, option, None)
            .unwrap()
            .unwrap()
            .into_string()
    }

    #[test]
    fn references_resolve_from_section_then_default() {
        let ini = ini(
            "[DEFAULT]\nroot = /var\nlog = %(root)s/log\n[s]\nroot = /srv\npath = %(log)s/x %%d\n",
        );
        assert_eq!(get(&ini, "s", "path"), "/srv/log/x %d");
        assert_eq!(get(&ini, "DEFAULT", "log"), "/var/log");
        assert_eq!(get(&ini, "s", "PATH"), "/srv/log/x %d");
    }

    #[test]
    fn name_is_the_section() {
        let ini =
            ini("[DEFAULT]\nfilter = %(__name__)s[mode=%(mode)s]\nmode = normal\n[dovecot]\n");
        assert_eq!(get(&ini, "dovecot", "filter"), "dovecot[mode=normal]");
    }

    #[test]
    fn vars_take_precedence() {
        let ini = ini("[s]\nmode = normal\nre = <mdre-%(mode)s>\n");
        let origin = Origin::new(Arc::from(Path::new("jail.conf")), 3);
        let vars: Vars = [("Mode".to_owned(), Text::new("aggressive", origin))]
            .into_iter()
            .collect();
        let got = ini.get("s", "re", Some(&vars)).unwrap().unwrap();
        assert_eq!(got.as_str(), "<mdre-aggressive>");
        assert_eq!(got.origin_at(7).map(|o| o.line), Some(3));
    }

    #[test]
    fn default_and_other_section_references() {
        let ini = ini(
            "[DEFAULT]\nbackend = auto\ndefault_backend = %(default/backend)s\n\
             [lt_file]\ndatepattern = {^LN-BEG}\n[lt_short]\ndatepattern = %(lt_file/datepattern)s\n\
             [s]\nbackend = systemd\nb = %(default_backend)s %(backend)s\n",
        );
        assert_eq!(get(&ini, "s", "b"), "auto systemd");
        assert_eq!(get(&ini, "lt_short", "datepattern"), "{^LN-BEG}");
    }

    #[test]
    fn section_reference_value_is_interpolated_in_the_reading_section() {
        let ini = ini("[a]\nx = %(y)s\ny = A\n[b]\ny = B\nz = %(a/x)s\n");
        assert_eq!(get(&ini, "b", "z"), "B");
    }

    #[test]
    fn errors_point_at_the_reference() {
        let ini =
            ini("[DEFAULT]\nx = %(missing)s\n[s]\ny =\n  ok\n  %(x)s\nbad = 5%\nloop = %(loop)s\n");
        let e = ini.get("s", "y", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:2: [s] y: `%(missing)s` refers to no option"
        );
        let e = ini.get("s", "bad", None).unwrap_err();
        assert!(
            matches!(&e, IniError::InterpolationSyntax { origin, .. } if origin.line == 7),
            "{e}"
        );
        let e = ini.get("s", "loop", None).unwrap_err();
        assert!(matches!(e, IniError::InterpolationDepth { .. }), "{e}");
        assert!(ini.get("nosuch", "x", None).unwrap().is_none());
        assert!(ini.get("s", "nosuch", None).unwrap().is_none());
    }

    #[test]
    fn depth_limit_is_pythons() {
        // 10 nested levels are fine, 11 are not (checked against Python).
        let mut source = String::from("[s]\nv0 = end\n");
        for i in 1..=11 {
            source.push_str(&format!("v{i} = %(v{})s%%\n", i - 1));
        }
        let ini = ini(&source);
        assert_eq!(get(&ini, "s", "v10"), format!("end{}", "%".repeat(10)));
        assert!(ini.get("s", "v11", None).is_err());
    }

    #[test]
    fn section_reference_finder_is_the_regex() {
        assert_eq!(
            section_references("%(a/b)s %(x)s %(known/c/d)s"),
            [("a/b", "b"), ("known/c/d", "c/d")]
        );
        assert_eq!(section_references("%(a/b) %(c/d)s"), [("c/d", "d")]);
        assert_eq!(section_references("%(/b)s %(a b/c)s"), []);
    }
}

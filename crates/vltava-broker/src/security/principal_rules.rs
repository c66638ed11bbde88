//! Kafka's `ssl.principal.mapping.rules`: how a client certificate's distinguished name
//! becomes a principal name. A list of `RULE:pattern/replacement/[L|U]` and `DEFAULT`,
//! tried in order; the first whose pattern matches the whole name rewrites it (`$1` for a
//! group, `L`/`U` to lower or upper case the result), `DEFAULT` keeps the name as it is, and
//! a name no rule matches is refused, as in Kafka.

use regex::Regex;

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Rewrite {
        whole: Regex,
        pattern: Regex,
        replacement: String,
        case: Option<char>,
    },
}

/// The parsed rules of one listener.
#[derive(Debug, Clone)]
pub struct PrincipalRules(Vec<Rule>);

impl Default for PrincipalRules {
    fn default() -> Self {
        Self(vec![Rule::Default])
    }
}

/// Splits `s` at its first unescaped `/`: the part before (with `\/` read as a literal
/// slash; other escapes are kept for the regex) and the rest after the slash.
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' => match chars.next()?.1 {
                '/' => out.push('/'),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            },
            '/' => return Some((out, chars.as_str())),
            c => out.push(c),
        }
    }
    None
}

impl PrincipalRules {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            if rest.is_empty() {
                break;
            }
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
                continue;
            }
            let Some(body) = rest.strip_prefix("RULE:") else {
                return Err(format!(
                    "expected RULE:pattern/replacement/ or DEFAULT at {rest:?}"
                ));
            };
            let (pattern, after) = until_slash(body).ok_or("a RULE needs pattern/replacement/")?;
            let (replacement, after) =
                until_slash(after).ok_or("a RULE needs pattern/replacement/")?;
            let (case, after) = match after.chars().next() {
                Some(c @ ('L' | 'U')) => (Some(c), &after[1..]),
                _ => (None, after),
            };
            let whole = Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| format!("bad pattern {pattern:?}: {e}"))?;
            let pattern =
                Regex::new(&pattern).map_err(|e| format!("bad pattern {pattern:?}: {e}"))?;
            rules.push(Rule::Rewrite {
                whole,
                pattern,
                replacement,
                case,
            });
            rest = after;
        }
        if rules.is_empty() {
            return Err("no rules".into());
        }
        Ok(Self(rules))
    }

    /// The principal name for distinguished name `dn`, or `None` when no rule applies.
    pub fn apply(&self, dn: &str) -> Option<String> {
        for rule in &self.0 {
            match rule {
                Rule::Default => return Some(dn.to_string()),
                Rule::Rewrite {
                    whole,
                    pattern,
                    replacement,
                    case,
                } if whole.is_match(dn) => {
                    let name = pattern.replace_all(dn, replacement.as_str()).into_owned();
                    return Some(match case {
                        Some('L') => name.to_lowercase(),
                        Some('U') => name.to_uppercase(),
                        _ => name,
                    });
                }
                Rule::Rewrite { .. } => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_rewrite_the_first_matching_name_as_kafka_does() {
        let r = PrincipalRules::parse(
            r"RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/, RULE:^CN=(.*?),OU=(.*?),O=.*$/$1@$2/L, DEFAULT",
        )
        .unwrap();
        assert_eq!(
            r.apply("CN=svc,OU=ServiceUsers,O=Org").as_deref(),
            Some("svc")
        );
        assert_eq!(
            r.apply("CN=Alice,OU=Sales,O=Org").as_deref(),
            Some("alice@sales")
        );
        assert_eq!(r.apply("CN=bob").as_deref(), Some("CN=bob"));
        let only = PrincipalRules::parse(r"RULE:^CN=([^,]*).*$/$1/U").unwrap();
        assert_eq!(only.apply("CN=carol,O=x").as_deref(), Some("CAROL"));
        assert_eq!(only.apply("O=x"), None);
        let slash = PrincipalRules::parse(r"RULE:^CN=(.*)$/svc\/$1/").unwrap();
        assert_eq!(slash.apply("CN=a").as_deref(), Some("svc/a"));
        assert_eq!(
            PrincipalRules::default().apply("CN=x").as_deref(),
            Some("CN=x")
        );
        for bad in ["", "RULE:^CN=(.*)$", "RULE:(/x/", "NONSENSE"] {
            assert!(PrincipalRules::parse(bad).is_err(), "{bad:?}");
        }
    }
}

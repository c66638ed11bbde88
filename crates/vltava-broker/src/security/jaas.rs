//! Kafka's `sasl.jaas.config` values: one or more login modules, each
//! `<class> <flag> key=value ...;`, with values bare or double-quoted.
//!
//! The broker reads only the PLAIN module's `user_<name>="<password>"` options, as Kafka's
//! `PlainServerCallbackHandler` does.

use std::collections::BTreeMap;

/// One login module entry of a JAAS configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginModule {
    pub class: String,
    pub flag: String,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JaasError {
    #[error("sasl.jaas.config: expected a login module class")]
    MissingClass,
    #[error("sasl.jaas.config: login module {class} has no control flag (required, requisite, sufficient or optional)")]
    MissingFlag { class: String },
    #[error("sasl.jaas.config: unknown control flag {flag:?}")]
    BadFlag { flag: String },
    #[error("sasl.jaas.config: option {key:?} has no value")]
    MissingValue { key: String },
    #[error("sasl.jaas.config: unterminated quoted value of {key:?}")]
    Unterminated { key: String },
    #[error("sasl.jaas.config: login module {class} is not terminated by ';'")]
    MissingSemicolon { class: String },
}

/// Splits a JAAS value into words, `=`, `;` and quoted strings.
#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Equals,
    Semicolon,
}

fn tokenize(s: &str) -> Result<Vec<Token>, JaasError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '=' => {
                chars.next();
                out.push(Token::Equals);
            }
            ';' => {
                chars.next();
                out.push(Token::Semicolon);
            }
            '"' => {
                chars.next();
                let mut value = String::new();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                if !closed {
                    let key = match out.iter().rev().nth(1) {
                        Some(Token::Word(k)) => k.clone(),
                        _ => String::new(),
                    };
                    return Err(JaasError::Unterminated { key });
                }
                out.push(Token::Quoted(value));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '=' | ';' | '"') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

/// Parses a `sasl.jaas.config` value into its login modules.
pub fn parse(s: &str) -> Result<Vec<LoginModule>, JaasError> {
    let tokens = tokenize(s)?;
    let mut it = tokens.into_iter().peekable();
    let mut modules = Vec::new();
    while it.peek().is_some() {
        let class = match it.next() {
            Some(Token::Word(w)) => w,
            _ => return Err(JaasError::MissingClass),
        };
        let flag = match it.next() {
            Some(Token::Word(w)) => w,
            _ => return Err(JaasError::MissingFlag { class }),
        };
        if !matches!(
            flag.to_ascii_lowercase().as_str(),
            "required" | "requisite" | "sufficient" | "optional"
        ) {
            return Err(JaasError::BadFlag { flag });
        }
        let mut options = BTreeMap::new();
        loop {
            match it.next() {
                Some(Token::Semicolon) => break,
                Some(Token::Word(key)) => {
                    if it.next() != Some(Token::Equals) {
                        return Err(JaasError::MissingValue { key });
                    }
                    match it.next() {
                        Some(Token::Word(v)) | Some(Token::Quoted(v)) => {
                            options.insert(key, v);
                        }
                        _ => return Err(JaasError::MissingValue { key }),
                    }
                }
                _ => return Err(JaasError::MissingSemicolon { class }),
            }
        }
        modules.push(LoginModule {
            class,
            flag,
            options,
        });
    }
    if modules.is_empty() {
        return Err(JaasError::MissingClass);
    }
    Ok(modules)
}

/// The users of a PLAIN login module: its `user_<name>` options.
pub fn plain_users(modules: &[LoginModule]) -> BTreeMap<String, String> {
    modules
        .iter()
        .flat_map(|m| m.options.iter())
        .filter_map(|(k, v)| k.strip_prefix("user_").map(|u| (u.to_string(), v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_plain_example() {
        let m = parse(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required
               username="admin" password="admin-secret"
               user_admin="admin-secret" user_alice="alice-secret";"#,
        )
        .unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0].class,
            "org.apache.kafka.common.security.plain.PlainLoginModule"
        );
        assert_eq!(m[0].flag, "required");
        assert_eq!(m[0].options["username"], "admin");
        let users = plain_users(&m);
        assert_eq!(users.len(), 2);
        assert_eq!(users["alice"], "alice-secret");
        assert_eq!(users["admin"], "admin-secret");
    }

    #[test]
    fn quoting_bare_values_and_several_modules() {
        let m = parse(
            r#"a.B required user_x=plain user_y="with \"quote\" ; and =";
               c.D optional;"#,
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        let users = plain_users(&m[..1]);
        assert_eq!(users["x"], "plain");
        assert_eq!(users["y"], "with \"quote\" ; and =");
        assert!(m[1].options.is_empty());
    }

    #[test]
    fn malformed_values_are_errors() {
        assert_eq!(parse(""), Err(JaasError::MissingClass));
        assert!(matches!(
            parse("a.B required user_x=\"open;"),
            Err(JaasError::Unterminated { .. })
        ));
        assert!(matches!(
            parse("a.B required user_x=1"),
            Err(JaasError::MissingSemicolon { .. })
        ));
        assert!(matches!(
            parse("a.B mandatory;"),
            Err(JaasError::BadFlag { .. })
        ));
        assert!(matches!(
            parse("a.B required user_x;"),
            Err(JaasError::MissingValue { .. })
        ));
        assert!(matches!(parse("a.B"), Err(JaasError::MissingFlag { .. })));
        assert!(matches!(parse("= required;"), Err(JaasError::MissingClass)));
    }
}

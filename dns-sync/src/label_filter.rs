//! `--label-filter`: a label selector in kubectl's `-l` syntax (`app=web,tier!=cache,env in (prod,staging),
//! !legacy`), as external-dns takes it. Parsed and checked at start, so a typo exits 64 naming the flag
//! instead of a watch the apiserver refuses over and over; the parsed selector goes to the watches, so the
//! apiserver filters before anything reaches us.

use std::collections::BTreeSet;

use kube::core::{Expression, Selector};

/// Parses `text` into a selector; the error says which requirement is wrong and why.
pub fn parse(text: &str) -> Result<Selector, String> {
    let mut expressions = Vec::new();
    for requirement in split_requirements(text)? {
        expressions.push(requirement_of(requirement.trim())?);
    }
    if expressions.is_empty() {
        return Err("empty selector".to_owned());
    }
    Ok(expressions.into_iter().collect())
}

/// The comma-separated requirements, commas inside `( )` kept.
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ')' at {i}"))?;
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".to_owned());
    }
    parts.push(&text[start..]);
    if parts.iter().any(|p| p.trim().is_empty()) && text.trim() != "" {
        return Err(format!("an empty requirement in {text:?}"));
    }
    Ok(parts.into_iter().filter(|p| !p.trim().is_empty()).collect())
}

fn requirement_of(requirement: &str) -> Result<Expression, String> {
    if let Some(key) = requirement.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key_of(key.trim())?));
    }
    if let Some((key, values)) = set_operator(requirement, " notin ") {
        return Ok(Expression::NotIn(key_of(key)?, values_of(values)?));
    }
    if let Some((key, values)) = set_operator(requirement, " in ") {
        return Ok(Expression::In(key_of(key)?, values_of(values)?));
    }
    if let Some((key, value)) = requirement.split_once("!=") {
        return Ok(Expression::NotEqual(
            key_of(key.trim())?,
            value_of(value.trim())?,
        ));
    }
    if let Some((key, value)) = requirement
        .split_once("==")
        .or_else(|| requirement.split_once('='))
    {
        return Ok(Expression::Equal(
            key_of(key.trim())?,
            value_of(value.trim())?,
        ));
    }
    Ok(Expression::Exists(key_of(requirement)?))
}

/// `key OP (a, b)` split at `op` (with its spaces), when that is what `requirement` is.
fn set_operator<'a>(requirement: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let (key, rest) = requirement.split_once(op)?;
    let values = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some((key.trim(), values))
}

fn values_of(list: &str) -> Result<BTreeSet<String>, String> {
    let values: BTreeSet<String> = list
        .split(',')
        .map(|v| value_of(v.trim()))
        .collect::<Result<_, _>>()?;
    if values.is_empty() || list.trim().is_empty() {
        return Err("a set of values must not be empty".to_owned());
    }
    Ok(values)
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of up to 63 characters.
fn key_of(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let labels_ok = prefix.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
        if prefix.is_empty() || prefix.len() > 253 || !labels_ok {
            return Err(format!("{key:?}: the prefix must be a DNS subdomain"));
        }
    }
    if name.is_empty() || !is_label_value(name) {
        return Err(format!(
            "{key:?}: a label name is 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(key.to_owned())
}

fn value_of(value: &str) -> Result<String, String> {
    if value.is_empty() || is_label_value(value) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{value:?}: a label value is up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn is_label_value(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_selectors_parse_into_what_the_apiserver_reads() {
        let cases = [
            ("app=web", "app=web"),
            ("app==web", "app=web"),
            ("app = web , tier!=cache", "app=web,tier!=cache"),
            ("env in (prod, staging)", "env in (prod,staging)"),
            ("env notin (dev),!legacy", "env notin (dev),!legacy"),
            ("example.com/team", "example.com/team"),
            ("example.com/team=dns,app", "example.com/team=dns,app"),
            ("app=", "app="),
        ];
        for (text, shown) in cases {
            let selector = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(selector.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn malformed_selectors_say_what_is_wrong() {
        for (text, words) in [
            ("", "empty"),
            ("app=web,", "empty requirement"),
            ("env in (prod", "unbalanced"),
            ("env in ()", "must not be empty"),
            ("app=we b", "label value"),
            ("-app=web", "label name"),
            ("Example.com/team=dns", "DNS subdomain"),
            ("app=web)", "unbalanced"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(words), "{text}: {error}");
        }
    }
}

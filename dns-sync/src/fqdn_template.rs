//! `--fqdn-template`: names for objects that carry none, as external-dns makes them
//! (`{{.Name}}.{{.Namespace}}.example.org`). external-dns runs Go's text/template over the whole object; we
//! take the part of that language its users write in these templates — `.Name`, `.Namespace` and
//! `.Labels.KEY` — and refuse anything else at start, naming the flag, rather than render it wrong.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// One template, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FqdnTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Name,
    Namespace,
    Label(String),
}

/// Parses the comma-separated templates of `--fqdn-template`.
pub fn parse(text: &str) -> Result<Vec<FqdnTemplate>, String> {
    let templates = text
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(FqdnTemplate::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if templates.is_empty() {
        return Err("no template".to_owned());
    }
    Ok(templates)
}

impl FqdnTemplate {
    fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("{text:?}: '{{{{' without '}}}}'"))?;
            parts.push(field(after[..close].trim()).map_err(|e| format!("{text:?}: {e}"))?);
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("{text:?}: '}}}}' without '{{{{'"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The name for the object of `meta`, lower-cased (a missing label renders empty, and the name that
    /// makes is then refused as invalid, with the flag named).
    pub fn render(&self, meta: &ObjectMeta) -> String {
        let mut name = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => name.push_str(text),
                Part::Name => name.push_str(meta.name.as_deref().unwrap_or_default()),
                Part::Namespace => name.push_str(meta.namespace.as_deref().unwrap_or_default()),
                Part::Label(key) => name.push_str(
                    meta.labels
                        .as_ref()
                        .and_then(|labels| labels.get(key))
                        .map_or("", String::as_str),
                ),
            }
        }
        name.to_ascii_lowercase()
    }
}

fn field(action: &str) -> Result<Part, String> {
    match action {
        ".Name" => Ok(Part::Name),
        ".Namespace" => Ok(Part::Namespace),
        _ => match action.strip_prefix(".Labels.") {
            Some(key)
                if !key.is_empty()
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                Ok(Part::Label(key.to_owned()))
            }
            _ => Err(format!(
                "{{{{{action}}}}} is not supported: use {{{{.Name}}}}, {{{{.Namespace}}}} or {{{{.Labels.KEY}}}}"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, namespace: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn templates_render_name_namespace_and_labels_as_external_dns_does() {
        let templates = parse(
            "{{.Name}}.{{ .Namespace }}.example.org, {{.Labels.team}}-{{.Name}}.apps.example.org",
        )
        .unwrap();
        let web = meta("Web", "shop", &[("team", "blue")]);
        let names: Vec<String> = templates.iter().map(|t| t.render(&web)).collect();
        assert_eq!(names, ["web.shop.example.org", "blue-web.apps.example.org"]);
        let unlabelled = meta("web", "shop", &[]);
        assert_eq!(templates[1].render(&unlabelled), "-web.apps.example.org");
    }

    #[test]
    fn what_we_cannot_render_like_go_is_refused() {
        for (text, words) in [
            ("{{.Name}.example.org", "without"),
            ("{{.Spec.ClusterIP}}.example.org", "not supported"),
            ("{{index .Annotations \"a\"}}.example.org", "not supported"),
            ("{{.Name | lower}}.example.org", "not supported"),
            (" , ", "no template"),
            ("x}}.example.org", "without"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(words), "{text}: {error}");
        }
    }
}

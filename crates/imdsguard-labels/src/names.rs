//! Kubernetes' rules for label keys and values (`k8s.io/apimachinery/pkg/util/validation`).

/// Why a label key or value breaks Kubernetes' rules. The texts are those the flow filters give
/// for a bad selector; the policy engine words its own messages from the variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// More than one `/` in a key.
    #[error("{0:?}: a qualified name must have at most one '/'")]
    TooManySlashes(String),
    /// A key that starts with `/`.
    #[error("{0:?}: prefix part must be a DNS-1123 subdomain")]
    EmptyPrefix(String),
    /// The part before `/` is no DNS-1123 subdomain.
    #[error("{0:?}: prefix part must be a DNS-1123 subdomain")]
    Prefix(String),
    /// The part after `/` (or the whole key) is empty, too long or has other characters.
    #[error(
        "{0:?}: name part must be at most 63 alphanumeric characters, '-', '_' or '.', \
         starting and ending with an alphanumeric character"
    )]
    Name(String),
    /// A label value that is neither empty nor a valid name part.
    #[error(
        "{0:?}: a valid label value must be an empty string or at most 63 alphanumeric \
         characters, '-', '_' or '.', starting and ending with an alphanumeric character"
    )]
    Value(String),
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, not empty: a key's name part or a label value.
pub fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// RFC 1123 subdomain as Kubernetes checks it: at most 253 characters in all, each dot-separated
/// label of lowercase letters, digits and `-`, beginning and ending with a letter or digit.
/// Kubernetes does not bound a label's own length here.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// `validation.IsQualifiedName`: a label key, `[prefix/]name`. The prefix is checked first.
pub fn check_qualified_name(key: &str) -> Result<(), NameError> {
    let mut parts = key.split('/');
    let (prefix, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(name), None, _) => (None, name),
        (Some(prefix), Some(name), None) => (Some(prefix), name),
        _ => return Err(NameError::TooManySlashes(key.to_owned())),
    };
    match prefix {
        Some("") => return Err(NameError::EmptyPrefix(key.to_owned())),
        Some(p) if !is_dns1123_subdomain(p) => return Err(NameError::Prefix(key.to_owned())),
        _ => {}
    }
    if name.len() > 63 || !is_qualified_name_part(name) {
        return Err(NameError::Name(key.to_owned()));
    }
    Ok(())
}

/// `validation.IsValidLabelValue`: empty, or a name part of at most 63 characters.
pub fn check_label_value(value: &str) -> Result<(), NameError> {
    if value.is_empty() || (value.len() <= 63 && is_qualified_name_part(value)) {
        Ok(())
    } else {
        Err(NameError::Value(value.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names() {
        for ok in [
            "app",
            "app.kubernetes.io/name",
            "a",
            "A_b-c.D",
            "io.cilium.k8s.namespace.labels.team",
        ] {
            assert_eq!(check_qualified_name(ok), Ok(()), "{ok}");
        }
        let long_label = format!("{}.io/name", "a".repeat(64));
        assert_eq!(check_qualified_name(&long_label), Ok(()));
        for (bad, want) in [
            ("a/b/c", NameError::TooManySlashes("a/b/c".into())),
            ("/x", NameError::EmptyPrefix("/x".into())),
            ("Example.com/x", NameError::Prefix("Example.com/x".into())),
            ("x/", NameError::Name("x/".into())),
            ("", NameError::Name("".into())),
            ("-x", NameError::Name("-x".into())),
            ("bad key", NameError::Name("bad key".into())),
        ] {
            assert_eq!(check_qualified_name(bad), Err(want), "{bad}");
        }
        assert!(check_qualified_name(&"a".repeat(64)).is_err());
        assert!(check_qualified_name(&format!("{}/x", "a".repeat(254))).is_err());
    }

    #[test]
    fn label_values() {
        assert_eq!(check_label_value(""), Ok(()));
        assert_eq!(check_label_value("v1.2_x-y"), Ok(()));
        assert_eq!(check_label_value("-x"), Err(NameError::Value("-x".into())));
        assert!(check_label_value(&"a".repeat(64)).is_err());
        assert_eq!(
            NameError::Value("%".into()).to_string(),
            "\"%\": a valid label value must be an empty string or at most 63 alphanumeric \
             characters, '-', '_' or '.', starting and ending with an alphanumeric character"
        );
    }
}

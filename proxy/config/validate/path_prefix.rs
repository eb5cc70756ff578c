//! A route's `match.path_prefix`: a plain byte prefix of the request's canonical path.

use crate::config::canonical_path::canonical;

/// Checks a route's `match.path_prefix`.
pub(crate) fn check_path_prefix(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!("path_prefix `{text}` must start with `/`"));
    }
    if text
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '?' || c == '#')
    {
        return Err(format!(
            "path_prefix `{text}` may not contain whitespace, control characters, `?` or `#`"
        ));
    }
    // Requests are routed on their canonical path, so a prefix in any other form never matches.
    match canonical(text) {
        Ok(form) if form == text => Ok(()),
        Ok(form) => Err(format!(
            "path_prefix `{text}` is not in canonical form and would never match: requests are \
             matched on their canonical path (docs/config.md, Paths); write `{form}`"
        )),
        Err(error) => Err(format!(
            "path_prefix `{text}` has no canonical form: {}",
            error.reason()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_prefixes() {
        assert!(check_path_prefix("/vault/").is_ok());
        assert!(check_path_prefix("vault").is_err());
        assert!(check_path_prefix("/a b").is_err());
        assert!(check_path_prefix("/a?b").is_err());
        assert!(check_path_prefix("/a%2Fb/").is_ok());
        for (prefix, hint) in [
            ("/a/../admin/", "write `/admin/`"),
            ("//admin", "write `/admin`"),
            ("/%61dmin", "write `/admin`"),
            ("/a%2fb", "write `/a%2Fb`"),
            ("/../x", "climbs above the root"),
            ("/a%zz", "two hex digits"),
        ] {
            let err = check_path_prefix(prefix).unwrap_err();
            assert!(
                err.starts_with(&format!("path_prefix `{prefix}` ")),
                "{err}"
            );
            assert!(err.contains(hint), "{prefix}: {err}");
        }
    }
}

//! A route's `match.path_prefix`: a plain byte prefix of the request path.

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
    Ok(())
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
    }
}

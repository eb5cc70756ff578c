//! Small value checks shared by the validators.

/// Whether `s` is a GUID in the 8-4-4-4-12 hex form.
pub(crate) fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `s` is a usable route name: it appears in logs and metric labels.
pub(crate) fn is_route_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids() {
        assert!(is_guid("6325cd32-9911-41f3-819c-416cdf9104e7"));
        assert!(is_guid("6325CD32-9911-41F3-819C-416CDF9104E7"));
        assert!(!is_guid("6325cd32-9911-41f3-819c-416cdf9104e"));
        assert!(!is_guid("6325cd32991141f3819c416cdf9104e7"));
        assert!(!is_guid("g325cd32-9911-41f3-819c-416cdf9104e7"));
    }

    #[test]
    fn route_names() {
        assert!(is_route_name("graph.v1_x-2"));
        assert!(!is_route_name(""));
        assert!(!is_route_name("my route"));
        assert!(!is_route_name("a/b"));
    }
}

//! The one canonical form of a request path (RFC 3986 §6.2.2), shared by validation (a route's
//! `path_prefix` must already be canonical, or it could never match) and the data plane (a
//! request's path is made canonical before routing, and that canonical path is what is forwarded).
//!
//! Per case (docs/config.md, "Paths"):
//! - `%XX` of an unreserved character (ALPHA DIGIT `-` `.` `_` `~`) is decoded (§6.2.2.2);
//! - any other `%XX` stays encoded, its hex digits upper-cased (§6.2.2.1): `%2F`, `%20`, `%25`
//!   pass byte for byte, `%2f` becomes `%2F` (the same octet);
//! - dot segments are removed (§5.2.4), after decoding, so `%2e%2E` is `..`; a `..` with nothing
//!   left to remove (it would climb above the root) is refused;
//! - repeated slashes are merged (`//admin` is `/admin`): many servers merge them, so matching
//!   must too;
//! - refused: a path not starting with `/` (asterisk-form `*`), a `%` not followed by two hex
//!   digits, a raw `\` (not a URI character; IIS and ASP.NET read it as `/`), and a dot segment
//!   with parameters (`..;x`, which Tomcat and Jetty read as `..`).
//!
//! An already-canonical path (the common case) is returned borrowed: one scan, no allocation.

use std::borrow::Cow;
use std::fmt;

/// Why a path has no canonical form popgate would forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not `/`-rooted (asterisk-form `*`, or empty with a query only in odd clients).
    NotRooted,
    /// `%` not followed by two hex digits.
    BadPercent,
    /// A raw `\`.
    Backslash,
    /// A `..` segment with no segment left to remove.
    ClimbsAboveRoot,
    /// `.` or `..` followed by `;parameters`.
    DotSegmentParameters,
}

impl PathError {
    /// The cause, for a 400 body or a configuration error (names what is wrong, never echoes the
    /// path: it may carry identifiers the caller would not want in logs).
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotRooted => "the path must start with `/`",
            PathError::BadPercent => {
                "the path has a `%` not followed by two hex digits (write a literal `%` as `%25`)"
            }
            PathError::Backslash => {
                "the path contains a raw `\\`, which some servers read as `/` (write it as `%5C`)"
            }
            PathError::ClimbsAboveRoot => "the path has a `..` segment that climbs above the root",
            PathError::DotSegmentParameters => {
                "the path has a `.` or `..` segment with `;` parameters, which some servers read as a dot segment"
            }
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for PathError {}

/// The canonical form of `path` (no query), borrowed when `path` already is canonical.
pub fn canonical(path: &str) -> Result<Cow<'_, str>, PathError> {
    if path.is_empty() {
        // An empty path means `/` (RFC 9110 §4.2.3); only odd absolute-form targets get here.
        return Ok(Cow::Borrowed("/"));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotRooted);
    }
    let mut out = Out::new();
    let mut start = 1;
    // A last segment that is a dot segment leaves a directory: the result ends with `/`
    // (`/a/.` and `/a/b/..` are `/a/`).
    let trailing_slash = loop {
        let end = path[start..].find('/').map_or(path.len(), |i| start + i);
        let last = end == path.len();
        let mut trailing_slash = false;
        if start == end {
            if last {
                // `/a/` keeps its final slash; a separator copied from the source costs nothing.
                out.copy(path, start - 1, end);
            }
            // Otherwise an empty segment inside the path: `//` merged by not copying it.
        } else {
            let segment_at = out.len();
            out.copy(path, start - 1, start);
            segment(&mut out, path, start, end)?;
            match dot_segment(&out.as_str(path)[segment_at + 1..])? {
                None => {}
                Some(Dot::Current) => {
                    out.truncate(segment_at);
                    trailing_slash = last;
                }
                Some(Dot::Parent) => {
                    out.truncate(segment_at);
                    let parent = out
                        .as_str(path)
                        .rfind('/')
                        .ok_or(PathError::ClimbsAboveRoot)?;
                    out.truncate(parent);
                    trailing_slash = last;
                }
            }
        }
        if last {
            break trailing_slash;
        }
        start = end + 1;
    };
    if trailing_slash || out.len() == 0 {
        out.push(path, "/");
    }
    Ok(out.finish(path))
}

/// `canonical` applied to the path of `path_and_query`; the query (from the first `?`) is kept
/// byte for byte. Borrowed when the path already is canonical.
pub fn canonical_target(path_and_query: &str) -> Result<Cow<'_, str>, PathError> {
    let split = path_and_query.find('?').unwrap_or(path_and_query.len());
    let (path, query) = path_and_query.split_at(split);
    match canonical(path)? {
        Cow::Borrowed(same) if same.len() == path.len() => Ok(Cow::Borrowed(path_and_query)),
        changed => Ok(Cow::Owned([&*changed, query].concat())),
    }
}

/// True when `path` is its own canonical form (checked without allocating).
pub fn is_canonical(path: &str) -> bool {
    matches!(canonical(path), Ok(Cow::Borrowed(same)) if same.len() == path.len())
}

/// Appends the segment `path[start..end]` to `out`, percent-encodings made canonical.
fn segment(out: &mut Out, path: &str, start: usize, end: usize) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    let mut run = start;
    let mut i = start;
    while i < end {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                // Past the segment's end is `/` or nothing: not a hex digit either way.
                let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                    return Err(PathError::BadPercent);
                };
                let (Some(h), Some(l)) = (hex(hi), hex(lo)) else {
                    return Err(PathError::BadPercent);
                };
                let octet = h << 4 | l;
                if is_unreserved(octet) {
                    // `run..i` ends at an ASCII `%`, a character boundary.
                    out.copy(path, run, i);
                    out.push_byte(path, octet);
                    run = i + 3;
                } else if hi.is_ascii_lowercase() || lo.is_ascii_lowercase() {
                    out.copy(path, run, i);
                    out.push(path, "%");
                    out.push_byte(path, hi.to_ascii_uppercase());
                    out.push_byte(path, lo.to_ascii_uppercase());
                    run = i + 3;
                }
                i += 3;
            }
            _ => i += 1,
        }
    }
    out.copy(path, run, end);
    Ok(())
}

/// A dot segment, by what it removes.
enum Dot {
    Current,
    Parent,
}

/// Whether `segment` (already decoded) is a dot segment; refused when it carries parameters.
fn dot_segment(segment: &str) -> Result<Option<Dot>, PathError> {
    let (name, params) = match segment.split_once(';') {
        Some((name, _)) => (name, true),
        None => (segment, false),
    };
    let dot = match name {
        "." => Dot::Current,
        ".." => Dot::Parent,
        _ => return Ok(None),
    };
    if params {
        return Err(PathError::DotSegmentParameters);
    }
    Ok(Some(dot))
}

/// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The output so far. While nothing differs from the source, it is `source[..same]` and nothing is
/// copied; the first difference turns it into an owned string (then `same` is unused).
struct Out {
    same: usize,
    owned: Option<String>,
}

impl Out {
    fn new() -> Self {
        Self {
            same: 0,
            owned: None,
        }
    }

    fn len(&self) -> usize {
        self.owned.as_ref().map_or(self.same, String::len)
    }

    fn as_str<'a>(&'a self, source: &'a str) -> &'a str {
        // `same` only ever ends where a copied range ended: on a character boundary.
        self.owned.as_deref().unwrap_or(&source[..self.same])
    }

    /// Appends `source[from..to]` (both on character boundaries).
    fn copy(&mut self, source: &str, from: usize, to: usize) {
        if self.owned.is_none() && self.same == from {
            self.same = to;
        } else {
            self.owned(source).push_str(&source[from..to]);
        }
    }

    fn push(&mut self, source: &str, text: &str) {
        self.owned(source).push_str(text);
    }

    /// Appends an ASCII byte (decoded unreserved characters and hex digits are all ASCII).
    fn push_byte(&mut self, source: &str, byte: u8) {
        self.owned(source).push(char::from(byte));
    }

    fn truncate(&mut self, len: usize) {
        match &mut self.owned {
            Some(s) => s.truncate(len),
            // A shorter prefix of the source is still a prefix of it.
            None => self.same = len,
        }
    }

    fn owned(&mut self, source: &str) -> &mut String {
        let same = self.same;
        self.owned.get_or_insert_with(|| {
            let mut s = String::with_capacity(source.len());
            s.push_str(&source[..same]);
            s
        })
    }

    fn finish(self, source: &str) -> Cow<'_, str> {
        match self.owned {
            Some(s) => Cow::Owned(s),
            None if self.same == source.len() => Cow::Borrowed(source),
            None => Cow::Owned(source[..self.same].to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_are_borrowed_unchanged() {
        for path in [
            "/",
            "/a",
            "/a/",
            "/admin/me",
            "/v1.0/me/messages",
            "/a/..b/c..",
            "/.well-known/x",
            "/a%2Fb",
            "/a%20b",
            "/100%25",
            "/%E2%82%AC",
            "/é/ü",
            "/a;b=c/d",
            "/...",
        ] {
            match canonical(path) {
                Ok(Cow::Borrowed(same)) => assert_eq!(same, path),
                other => panic!("{path:?}: {other:?}"),
            }
            assert!(is_canonical(path), "{path:?}");
        }
    }

    #[test]
    fn non_canonical_paths_are_normalised() {
        for (path, want) in [
            // Dot segments (RFC 3986 §5.2.4's own examples, rooted).
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/x/../admin/me", "/admin/me"),
            ("/./admin", "/admin"),
            ("/.", "/"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/./", "/a/"),
            ("/fic/graph/../../beta/me", "/beta/me"),
            // Percent-encoded dots, any case.
            ("/x/%2e%2e/admin", "/admin"),
            ("/x/%2E%2e/admin", "/admin"),
            ("/x/.%2E/admin", "/admin"),
            ("/%2e/admin", "/admin"),
            ("/a%2eb", "/a.b"),
            // Unreserved characters decoded.
            ("/%61dmin/me", "/admin/me"),
            ("/%41%5a%30%2D%5F%7E", "/AZ0-_~"),
            // Other encodings kept, hex upper-cased.
            ("/a%2fb", "/a%2Fb"),
            ("/%61%2f%2e", "/a%2F."),
            ("/%e2%82%ac", "/%E2%82%AC"),
            // Repeated slashes merged.
            ("//admin/me", "/admin/me"),
            ("/admin//me", "/admin/me"),
            ("/admin///", "/admin/"),
            ("//", "/"),
            ("/a//../b", "/b"),
            // Empty means `/`.
            ("", "/"),
        ] {
            assert_eq!(canonical(path).as_deref(), Ok(want), "{path:?}");
            assert!(is_canonical(want), "{want:?} should be canonical");
            assert!(!is_canonical(path), "{path:?}");
            // Canonical is a fixed point.
            assert_eq!(canonical(want).as_deref(), Ok(want), "{want:?}");
        }
    }

    #[test]
    fn paths_with_no_safe_canonical_form_are_refused() {
        for (path, why) in [
            ("/..", PathError::ClimbsAboveRoot),
            ("/../admin", PathError::ClimbsAboveRoot),
            ("/a/../..", PathError::ClimbsAboveRoot),
            ("/a/../../b", PathError::ClimbsAboveRoot),
            ("/%2e%2e/admin", PathError::ClimbsAboveRoot),
            ("//../admin", PathError::ClimbsAboveRoot),
            ("*", PathError::NotRooted),
            ("admin", PathError::NotRooted),
            ("/a%", PathError::BadPercent),
            ("/a%4", PathError::BadPercent),
            ("/a%4/b", PathError::BadPercent),
            ("/a%zz", PathError::BadPercent),
            ("/a%%41", PathError::BadPercent),
            ("/a\\..\\admin", PathError::Backslash),
            ("/x/..;/admin", PathError::DotSegmentParameters),
            ("/x/.;a=b/admin", PathError::DotSegmentParameters),
            ("/x/%2e%2e;/admin", PathError::DotSegmentParameters),
        ] {
            assert_eq!(canonical(path), Err(why), "{path:?}");
            assert!(!is_canonical(path), "{path:?}");
        }
    }

    #[test]
    fn the_query_is_kept_byte_for_byte() {
        let t = |pq| canonical_target(pq).map(Cow::into_owned);
        assert_eq!(t("/a?x=/../%2e"), Ok("/a?x=/../%2e".into()));
        assert_eq!(t("/x/../a?q=%2f"), Ok("/a?q=%2f".into()));
        assert_eq!(t("//a?"), Ok("/a?".into()));
        assert_eq!(t("?q"), Ok("/?q".into()));
        assert_eq!(t("/../a?q"), Err(PathError::ClimbsAboveRoot));
        assert!(matches!(canonical_target("/a/b?c"), Ok(Cow::Borrowed(_))));
    }
}
